"""Baselines: accept known, benign findings without loosening thresholds for everything.

``normaudit compare A B --write-baseline normaudit-baseline.json`` records the current findings, each with a
``reason`` to fill in; ``--baseline normaudit-baseline.json`` then suppresses exactly those: a finding is
suppressed when an entry has its check, its layer ids (``a``, ``b``) and its ``values`` within the file's
tolerance (numbers: ``|x - y| <= atol + rtol * max(|x|, |y|)``; strings, lists of layers and channels: equal).
A suppressed finding keeps its severity, is marked ``suppressed`` (with the reason) and never fails the run;
entries that match no finding any more are reported as stale.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NormauditError
from .jsonout import clean, dumps
from .provenance import now, version

BASELINE_SCHEMA = "normaudit.baseline/1"
DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 0.0


@dataclass
class Baseline:
    entries: list[dict[str, Any]]
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    path: str = ""

    @classmethod
    def load(cls, path: str | Path) -> "Baseline":
        try:
            doc = json.loads(Path(path).read_text())
        except OSError as exc:
            raise NormauditError(f"{path}: cannot read baseline ({exc.strerror or exc})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NormauditError(f"{path}: baseline is not valid JSON ({exc})") from None
        return cls.from_dict(doc, str(path))

    @classmethod
    def from_dict(cls, doc: Any, path: str = "") -> "Baseline":
        where = path or "baseline"
        if not isinstance(doc, dict) or doc.get("schema") != BASELINE_SCHEMA or not isinstance(doc.get("findings"), list):
            raise NormauditError(f"{where}: not a normaudit baseline (schema {BASELINE_SCHEMA} with a findings list)",
                                 hint="write one with normaudit compare A B --write-baseline FILE")
        tol = doc.get("tolerance") or {}
        entries = []
        for i, e in enumerate(doc["findings"]):
            if not isinstance(e, dict) or not isinstance(e.get("check"), str):
                raise NormauditError(f"{where}: findings[{i}] has no check name")
            entries.append(e)
        try:
            return cls(entries, float(tol.get("rtol", DEFAULT_RTOL)), float(tol.get("atol", DEFAULT_ATOL)), path)
        except (TypeError, ValueError):
            raise NormauditError(f"{where}: tolerance rtol/atol must be numbers") from None


@dataclass
class BaselineResult:
    """What a baseline did to one report."""

    path: str
    entries: int
    suppressed: int = 0
    stale: list[dict[str, Any]] = field(default_factory=list)  # entries that matched no finding

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "entries": self.entries, "suppressed": self.suppressed,
                "stale": [_entry_view(e) for e in self.stale]}


def _entry_view(e: dict[str, Any]) -> dict[str, Any]:
    return {k: e.get(k) for k in ("check", "a", "b", "message", "reason") if k in e}


def close(want: Any, got: Any, rtol: float, atol: float) -> bool:
    """``want`` (from the baseline) matches ``got`` (the current finding) within tolerance."""
    if isinstance(want, bool) or isinstance(got, bool) or want is None or got is None:
        return want == got
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        if math.isnan(want) or math.isnan(got):
            return math.isnan(want) and math.isnan(got)
        return abs(want - got) <= atol + rtol * max(abs(want), abs(got))
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(close(w, g, rtol, atol) for w, g in zip(want, got))
    if isinstance(want, dict) and isinstance(got, dict):
        return all(k in got and close(v, got[k], rtol, atol) for k, v in want.items())
    return bool(want == got)


def matches(entry: dict[str, Any], finding: dict[str, Any], rtol: float, atol: float) -> bool:
    """Same check, same layer ids, and every value the entry records within tolerance."""
    return (entry.get("check") == finding.get("check") and entry.get("a") == finding.get("a")
            and entry.get("b") == finding.get("b")
            and close(entry.get("values") or {}, finding.get("values") or {}, rtol, atol))


def apply(findings: list[Any], baseline: Baseline) -> BaselineResult:
    """Mark the findings (checks.Finding) the baseline accepts as suppressed, in place."""
    result = BaselineResult(baseline.path, len(baseline.entries))
    free = list(range(len(baseline.entries)))
    for f in findings:
        f.suppressed, f.reason = False, ""
        view = clean(f.to_dict())
        for k in free:
            entry = baseline.entries[k]
            if matches(entry, view, baseline.rtol, baseline.atol):
                f.suppressed, f.reason = True, str(entry.get("reason") or "")
                free.remove(k)
                result.suppressed += 1
                break
    result.stale = [baseline.entries[k] for k in free]
    return result


def document(doc: dict[str, Any], rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> dict[str, Any]:
    """The baseline that accepts every finding of a compare document; a finding already accepted by a baseline
    keeps its reason."""
    return {
        "schema": BASELINE_SCHEMA,
        "normaudit_version": version(),
        "created": now(),
        "a": doc.get("a", {}).get("path"),
        "b": doc.get("b", {}).get("path"),
        "tolerance": {"rtol": rtol, "atol": atol},
        "findings": [{"check": f["check"], "severity": f["severity"], "a": f.get("a"), "b": f.get("b"),
                      **({"values": f["values"]} if f.get("values") else {}), "message": f.get("message", ""),
                      "reason": f.get("reason", "")} for f in doc.get("findings", [])],
    }


def render(doc: dict[str, Any]) -> str:
    return dumps(document(doc)) + "\n"
