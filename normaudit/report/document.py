"""The audit document: what ``normaudit compare`` reports, built by :func:`normaudit.audit` and rendered by
every output (terminal, JSON, HTML, JUnit, SARIF, baseline, annotations).

Renderers read the document as a dict (``AuditReport.to_dict()``, or the inspect document of
:func:`inspect_document`): what ``--json`` writes is exactly what every other output shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checks import SEVERITY_RANK, CompareReport, Finding, PairResult, Severity, failing
from ..checks.model import tokenizer_findings
from ..config import Thresholds
from ..model import NormModel
from ..progress import Progress
from . import provenance
from .baseline import Baseline, BaselineResult, apply as apply_baseline

if TYPE_CHECKING:  # a static compare never imports the activation machinery
    from ..activations.driver import ActivationReport  # noqa: F401

COMPARE_SCHEMA = "normaudit.compare/1"
INSPECT_SCHEMA = "normaudit.inspect/1"
#: the check name of the findings an activation diff adds (an anomaly: error; expected drift: info)
ACTIVATION_DRIFT = "activation_drift"
#: the checks of the llama.cpp backend's tokenizer comparison (findings from ``activations.tokenization``)
TOKENIZER_CHECKS = ("tokenizer_mismatch", "tokenizer_special_tokens")
#: keys of a document that change from one run of the same audit to the next (compare documents without them)
VOLATILE_KEYS = ("created", "normaudit_version")


def divergence_verdict(local: float | None, total: float | None, act: dict | None = None) -> str:
    """Whether the first diverging layer adds the error itself or inherits it (``local``: the rel L2 of B's
    layer re-run on A's input; ``total``: the rel L2 at that point). With ``act`` (the document's activations
    section), an inherited drift that the three-way attribution puts on the runtime alone says so."""
    if local is None or total is None:
        return "no local replay for this point"
    if local >= 0.5 * total:
        return f"this layer adds the error (local rel L2 {local:.2e} of {total:.2e})"
    first = ((act or {}).get("attribution") or {}).get("first") or {}
    if first.get("runtime") and not first.get("conversion"):
        return (f"inherited: B's layer on A's input is within {local:.2e}; the drift comes from upstream, in what "
                f"only the runtime computes (the file's tensors match: see the three-way attribution)")
    return (f"inherited: B's layer on A's input is within {local:.2e}; the drift comes from upstream "
            f"(embeddings or non-norm weights)")


_ANOMALY_HINTS = {
    "norm": "the norm's own eps, weights or convention differ from the source: see its static findings",
    "weight": "this tensor was not produced by quantizing its source tensor: a wrong mapping, a corrupted or "
              "re-quantized tensor",
    "block": "the block's kernels or wiring differ (RoPE layout, attention, activation function), not its weights",
    "drift": "a float conversion must match: this layer adds the error if its local rel L2 is close to the total",
    "non_finite": "NaN/inf in B's activations",
    "length": "the model matches; only the output's L2 normalization differs: see embedding_normalization_missing",
    "runtime": "llama.cpp computes something the replay of the same file does not: its graph, a kernel, or metadata "
               "only the runtime reads (rope, attention settings); the file's tensors and eps are not the cause",
}


def drift_findings(act: ActivationReport, static_checks: set[str] = frozenset()) -> list[Finding]:
    """The activation diff as findings: one error per anomaly (what quantization cannot explain); without
    anomalies, one info finding with the expected drift (KLD, top-1 agreement) when B drifts at all. An output
    that differs only in length is info when the static ``embedding_normalization_missing`` already fails for it."""
    b_of = {p.a: p.b for p in act.points}
    out = []
    for an in act.anomalies:
        point = an["point"]
        told = an["kind"] == "length" and "embedding_normalization_missing" in static_checks
        out.append(Finding(ACTIVATION_DRIFT, Severity.INFO if told else Severity.ERROR, point,
                           b_of.get(point, (an.get("blame") or [None])[0]),
                           an["message"], _ANOMALY_HINTS.get(an["kind"], ""),
                           {k: v for k, v in an.items() if k not in ("message", "point")}))
    if not out and act.first_divergence is not None:
        fd = act.first_divergence
        out.append(Finding(ACTIVATION_DRIFT, Severity.INFO, fd.a, fd.b, act.verdict,
                           "within what the stored types explain; thresholds: activation_norm_local, "
                           "activation_block_factor / activation_block_floor",
                           {"output": act.output} if act.output else {}))
    return out


@dataclass
class AuditReport:
    """Static findings (aligned pairs, checks) plus, when asked, the activation diff; one verdict."""

    static: CompareReport
    thresholds: Thresholds
    activations: ActivationReport | None = None
    created: str = field(default_factory=provenance.now)
    files: dict[str, list[dict[str, Any]]] | None = None  # "a"/"b" -> input file records (computed once)
    baseline: BaselineResult | None = None
    _drift: tuple[int, list[Finding]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def a(self) -> NormModel:
        return self.static.a

    @property
    def b(self) -> NormModel:
        return self.static.b

    @property
    def pairs(self) -> list[PairResult]:
        return self.static.pairs

    @property
    def findings(self) -> list[Finding]:
        """Static findings, then the activation diff's (its anomalies; or its expected drift, as info; the llama.cpp
        backend's tokenizer comparison)."""
        out = list(self.static.findings)
        if self.activations is not None:
            if self._drift is None or self._drift[0] != id(self.activations):
                static_checks = {f.check for f in self.static.findings}
                self._drift = (id(self.activations), drift_findings(self.activations, static_checks)
                               + tokenizer_findings(getattr(self.activations, "tokenization", None)))
            out.extend(self._drift[1])
        return out

    @property
    def fail_on(self) -> Severity:
        return self.static.fail_on

    def failing(self) -> list[Finding]:
        """Findings that fail the run: at or above --fail-on and not suppressed by a baseline."""
        return failing(self.findings, self.fail_on)

    @property
    def passed(self) -> bool:
        return not self.failing()

    def counts(self) -> dict[str, int]:
        """Findings by severity (suppressed ones apart, under ``suppressed``)."""
        live = [f for f in self.findings if not f.suppressed]
        out = {s.value: sum(f.severity is s for f in live) for s in Severity}
        out["suppressed"] = len(self.findings) - len(live)
        return out

    def apply_baseline(self, baseline: Baseline | str | Path) -> BaselineResult:
        """Suppress the findings a baseline accepts (see :mod:`.baseline`); replaces an earlier baseline."""
        bl = baseline if isinstance(baseline, Baseline) else Baseline.load(baseline)
        self.baseline = apply_baseline(self.findings, bl)
        return self.baseline

    def describe_inputs(self, progress: Progress | None = None) -> dict[str, list[dict[str, Any]]]:
        """Size and sha256 of each input file (once; see :mod:`.provenance`)."""
        if self.files is None:
            self.files = {"a": provenance.describe_files(self.a.path, progress, "A"),
                          "b": provenance.describe_files(self.b.path, progress, "B")}
        return self.files

    def to_dict(self, files: bool = True) -> dict[str, Any]:
        """The compare document (``files=False`` leaves out the input files and skips hashing them)."""
        inputs = self.describe_inputs() if files else None
        doc = self.static.to_dict()
        out: dict[str, Any] = {"schema": COMPARE_SCHEMA, "normaudit_version": provenance.version(),
                               "created": self.created}
        out.update(doc)
        if inputs is not None:
            out["a"]["files"] = inputs["a"]
            out["b"]["files"] = inputs["b"]
        out["findings"] = [f.to_dict() for f in self.findings]
        out["passed"] = self.passed
        out["thresholds"] = self.thresholds.to_dict()
        if self.activations is not None:
            out["activations"] = self.activations.to_dict()
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_dict()
        return out


def inspect_document(model: NormModel, stats: bool = True, progress: Progress | None = None,
                     created: str | None = None, files: bool = True) -> dict[str, Any]:
    """What ``normaudit inspect --json`` writes: the model's norm records (with weight min/mean/max unless
    ``stats`` is false) plus version, time and input files (``files=False``: not hashed, left out)."""
    doc = model.to_dict(stats=stats)
    out: dict[str, Any] = {"schema": INSPECT_SCHEMA, "normaudit_version": provenance.version(),
                           "created": created or provenance.now()}
    out.update(doc)
    if files:
        out["files"] = provenance.describe_files(model.path, progress)
    return out


def strip_volatile(doc: Any) -> Any:
    """``doc`` without the keys that change from run to run (:data:`VOLATILE_KEYS`), for comparisons."""
    if isinstance(doc, dict):
        return {k: strip_volatile(v) for k, v in doc.items() if k not in VOLATILE_KEYS}
    if isinstance(doc, list):
        return [strip_volatile(v) for v in doc]
    return doc


def is_failing(finding: dict[str, Any], fail_on: str) -> bool:
    """A finding of a document fails the run (renderers use this on the dict form)."""
    if finding.get("suppressed"):
        return False
    rank = {s.value: SEVERITY_RANK[s] for s in Severity}
    return rank.get(finding.get("severity", "info"), 0) >= rank.get(fail_on, 2)
