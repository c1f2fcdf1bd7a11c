"""The audit document: what ``normaudit compare`` reports, built by :func:`normaudit.audit` and rendered by
every output (table, JSON, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..checks import CompareReport, Finding, PairResult, Severity
from ..config import Thresholds
from ..model import NormModel

if TYPE_CHECKING:  # a static compare never imports the activation machinery
    from ..activations.driver import ActivationReport

COMPARE_SCHEMA = "normaudit.compare/1"
INSPECT_SCHEMA = "normaudit.inspect/1"


@dataclass
class AuditReport:
    """Static findings (aligned pairs, checks) plus, when asked, the activation diff; one verdict."""

    static: CompareReport
    thresholds: Thresholds
    activations: ActivationReport | None = None

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
        return self.static.findings

    @property
    def fail_on(self) -> Severity:
        return self.static.fail_on

    @property
    def passed(self) -> bool:
        return self.static.passed and (self.activations is None or self.activations.passed)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(f.severity is s for f in self.findings) for s in Severity}

    def to_dict(self) -> dict[str, Any]:
        doc = self.static.to_dict()
        doc["thresholds"] = self.thresholds.to_dict()
        if self.activations is not None:
            doc["activations"] = self.activations.to_dict()
        doc["passed"] = self.passed
        return doc
