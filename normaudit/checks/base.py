"""The check registry: findings, severities, scopes, and the one grouping pass for model-wide findings.

A check is one decorated function::

    @check("eps_mismatch", Severity.ERROR, scope="pair", description="...", group_min=2, merge=...)
    def eps(ctx: Context, pair: Pair) -> Iterable[Finding]: ...

Scopes: ``pair`` (each aligned pair of norms), ``fold`` (a BatchNorm of one side against the conv/Gemm of the
other it was folded into; returns whether it handled the BN), ``unmatched`` (norms left without a
counterpart), ``model`` (once per comparison).  One function may declare several checks (stack the
decorator): it is run once and may emit any of them.  Findings that carry a ``group`` key are merged by
:func:`group_findings` when ``group_min`` or more of one check share the key: one converter cause, one
finding, every layer listed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Literal

from ..config import Thresholds
from ..model import NormModel

Scope = Literal["pair", "fold", "unmatched", "model", "activations"]


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


@dataclass
class Finding:
    check: str
    severity: Severity
    a: str | None
    b: str | None
    message: str
    hint: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    group: Hashable | None = field(default=None, repr=False, compare=False)  # one cause for many layers
    suppressed: bool = field(default=False, compare=False)  # accepted by a baseline entry: reported, never failing
    reason: str = field(default="", compare=False)  # the baseline entry's reason

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity.value, "a": self.a, "b": self.b,
                "message": self.message, "hint": self.hint, **({"values": self.values} if self.values else {}),
                **({"suppressed": True, "reason": self.reason} if self.suppressed else {})}


@dataclass
class PairResult:
    a: str
    b: str
    kind: str
    eps_a: float | None
    eps_b: float | None
    aligned_by: str
    convention: str
    weight: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "kind": self.kind, "eps_a": self.eps_a, "eps_b": self.eps_b,
                "aligned_by": self.aligned_by, "convention": self.convention, "weight": self.weight}


Merge = Callable[[list[Finding]], Finding]


def failing(findings: list[Finding], fail_on: Severity) -> list[Finding]:
    """The findings that fail a run: at or above ``fail_on`` and not suppressed by a baseline."""
    return [f for f in findings if not f.suppressed and SEVERITY_RANK[f.severity] >= SEVERITY_RANK[fail_on]]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    severity: Severity
    scope: Scope
    description: str
    fn: Callable[..., Any]
    group_min: int = 0  # 0: never grouped
    merge: Merge | None = None


#: check name -> spec, in registration order (the order checks run and are listed)
REGISTRY: dict[str, CheckSpec] = {}


def check(name: str, severity: Severity, *, scope: Scope, description: str, group_min: int = 0,
          merge: Merge | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the implementation of check ``name`` (stackable: one function, several checks)."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY:
            raise ValueError(f"check {name!r} registered twice")
        REGISTRY[name] = CheckSpec(name, severity, scope, description, fn, group_min, merge)
        return fn
    return deco


def functions(scope: Scope) -> list[Callable[..., Any]]:
    """The check functions of one scope, each once, in registration order."""
    out: list[Callable[..., Any]] = []
    for spec in REGISTRY.values():
        if spec.scope == scope and spec.fn not in out:
            out.append(spec.fn)
    return out


@dataclass
class Context:
    """What every check sees: both models, the thresholds, and where results go."""

    a: NormModel
    b: NormModel
    th: Thresholds
    pairs: list[PairResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    cache: dict[Any, Any] = field(default_factory=dict)

    def finding(self, check_name: str, a: str | None, b: str | None, message: str, hint: str = "", *,
                group: Hashable | None = None, severity: Severity | None = None, **values: Any) -> Finding:
        """Record a finding of a registered check (its registered severity unless ``severity`` lowers it)."""
        spec = REGISTRY[check_name]
        f = Finding(check_name, severity or spec.severity, a, b, message, hint, values, group)
        self.findings.append(f)
        return f

    def tolerance(self, *dtypes: str) -> float:
        """Relative L2 a weight stored in these dtypes may differ by (the loosest of them)."""
        return max(self.th.rel_l2_for(d) for d in dtypes if d) if any(dtypes) else self.th.rel_l2_for("F32")


def model_wide(members: list[Finding]) -> Finding:
    """Default merge: ``model-wide (N layers, first a -> b): <first message>``, every layer listed."""
    first = members[0]
    common = {k: v for k, v in first.values.items()
              if all(k in m.values and _same(m.values[k], v) for m in members[1:])}
    return Finding(first.check, first.severity, None, None,
                   f"model-wide ({len(members)} layers, first {first.a} -> {first.b}): {first.message}",
                   first.hint, {**common, "layers": [[m.a, m.b] for m in members]})


def _same(x: Any, y: Any) -> bool:
    try:
        return bool(x == y)
    except (ValueError, TypeError):
        return False


def group_findings(findings: list[Finding]) -> list[Finding]:
    """Merge findings of one check that share a group key (``group_min`` or more) into one, in place of the
    first member; everything else keeps its order."""
    buckets: dict[tuple[str, Hashable], list[Finding]] = {}
    for f in findings:
        spec = REGISTRY.get(f.check)
        if f.group is not None and spec is not None and spec.group_min:
            buckets.setdefault((f.check, f.group), []).append(f)
    replace: dict[int, Finding | None] = {}
    for (name, _), members in buckets.items():
        spec = REGISTRY[name]
        if len(members) < spec.group_min:
            continue
        merged = (spec.merge or model_wide)(members)
        replace[id(members[0])] = merged
        for m in members[1:]:
            replace[id(m)] = None
    out = []
    for f in findings:
        if id(f) in replace:
            if replace[id(f)] is not None:
                out.append(replace[id(f)])
        else:
            out.append(f)
    return out


def run_scope(scope: Scope, ctx: Context, *args: Any) -> Iterable[Any]:
    """Call every check function of ``scope`` with ``ctx`` and ``args``; yields their return values."""
    for fn in functions(scope):
        yield fn(ctx, *args)
