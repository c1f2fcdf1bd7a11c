"""Static checks across a conversion: aligned norm pairs -> findings.

``compare(a, b)`` aligns the norms of two loaded models and runs every registered check (see :mod:`.base`
for the registry).  No forward pass: only the norm tensors (and, for BatchNorm folds, the conv weights
involved) are read, lazily.  Adding a check is one decorated function in one of the scope modules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..config import Thresholds
from ..match import Alignment, align
from ..model import NormKind, NormModel
from . import fold as _fold, model as _model, pair as _pair, unmatched as _unmatched  # noqa: F401 (registers)
from . import contracts as _contracts  # noqa: F401,E402 (registers the checks around the model)
from .base import (REGISTRY, SEVERITY_RANK, CheckSpec, Context, Finding, PairResult, Severity, check, failing,
                   group_findings, run_scope)
from .fold import fold_target
from .pair import pair_convention, same_kind, scale_metrics, weight_metrics

#: check name -> one-line description (``normaudit checks``)
CHECKS: dict[str, str] = {name: spec.description for name, spec in REGISTRY.items()}


@dataclass
class CompareReport:
    """The static part of an audit: aligned pairs and findings."""

    a: NormModel
    b: NormModel
    pairs: list[PairResult]
    findings: list[Finding]
    fail_on: Severity = Severity.ERROR

    def failing(self) -> list[Finding]:
        return failing(self.findings, self.fail_on)

    @property
    def passed(self) -> bool:
        return not self.failing()

    def to_dict(self) -> dict[str, Any]:
        def side(m: NormModel) -> dict[str, Any]:
            return {"path": m.path, "format": m.format, "container": m.container, "architecture": m.architecture,
                    "counts": m.counts(), "norms": [n.to_dict(stats=False) for n in m.norms], **m.contracts(),
                    **({"notes": list(m.notes)} if m.notes else {})}

        return {"schema": "normaudit.compare/1", "a": side(self.a), "b": side(self.b),
                "pairs": [p.to_dict() for p in self.pairs], "findings": [f.to_dict() for f in self.findings],
                "fail_on": self.fail_on.value, "passed": self.passed}


def compare(a: NormModel, b: NormModel, thresholds: Thresholds | None = None) -> CompareReport:
    """Align the norms of ``a`` (source) and ``b`` (converted) and run every static check."""
    th = thresholds or Thresholds()
    ctx = Context(a, b, th)
    al: Alignment = align(a, b)
    ctx.cache["gguf_arch"] = al.gguf_arch
    ctx.cache["alignment"] = al
    for p in al.pairs:
        # a bare state_dict cannot tell x*w from x*(1+w): take the convention the other side knows
        if not p.a.convention_known and p.b.convention_known:
            p.a = replace(p.a, convention=p.b.convention, notes=p.a.notes + ["convention taken from B"])
        elif not p.b.convention_known and p.a.convention_known:
            p.b = replace(p.b, convention=p.a.convention, notes=p.b.notes + ["convention taken from A"])
        for _ in run_scope("pair", ctx, p):
            pass
        metrics = scale_metrics(ctx, p) if same_kind(p.a, p.b) else None
        ctx.pairs.append(PairResult(p.a.id, p.b.id, p.a.kind.value, p.a.eps, p.b.eps, p.method,
                                    pair_convention(p.a, p.b, b.format), metrics))
    ctx.cache["aligned"] = al.pairs

    # BatchNorms of one side folded into convs of the other; what is left is missing / extra
    used_a: set[str] = set()
    used_b: set[str] = set()
    for side, layers, src, dst, used in (("A", al.missing, a, b, used_b), ("B", al.extra, b, a, used_a)):
        for layer in layers:
            if layer.kind is NormKind.BATCH_NORM and any(run_scope("fold", ctx, layer, src, dst, used, side)):
                continue
            for _ in run_scope("unmatched", ctx, side, layer):
                pass
    for _ in run_scope("model", ctx):
        pass
    findings = group_findings(ctx.findings)
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    findings.sort(key=lambda f: order[f.severity])
    return CompareReport(a, b, ctx.pairs, findings, fail_on=Severity(th.fail_on))


__all__ = ["compare", "CompareReport", "Finding", "PairResult", "Severity", "SEVERITY_RANK", "CHECKS", "REGISTRY",
           "CheckSpec", "Context", "check", "fold_target", "weight_metrics"]
