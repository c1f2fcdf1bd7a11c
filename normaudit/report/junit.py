"""JUnit XML for CI test reporters (GitHub, GitLab, Jenkins): one test suite per check, one test case per check
and layer pair (pair checks: every aligned pair; fold checks: every fold; model checks: the model; missing /
extra norms: each one found), a ``<failure>`` for each failing finding, ``<skipped>`` for one a baseline
suppressed, and non-failing findings (warnings below --fail-on, info) in ``<system-out>``. With activations, the
``activation_drift`` suite has one case per compared point; the first divergence fails."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from .document import ACTIVATION_DRIFT, TOKENIZER_CHECKS, is_failing
from .jsonout import clean
from .renderers import Renderer

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _s(value: Any) -> str:
    """Text XML 1.0 can hold (layer names from hostile files may carry control characters)."""
    return _NOT_XML.sub("?", str(value))


def _cases(doc: dict[str, Any]) -> dict[str, dict[tuple[Any, Any], list[dict[str, Any]]]]:
    """check -> (a, b) -> the findings on that case, in order."""
    from ..checks import REGISTRY

    pairs = doc.get("pairs", [])
    suites: dict[str, dict[tuple[Any, Any], list[dict[str, Any]]]] = {}
    act = doc.get("activations")
    # the tokenizer checks ran only if the llama.cpp backend compared tokenizations (activations.tokenization)
    tokenized = act is not None and act.get("tokenization") is not None
    for name, spec in REGISTRY.items():
        if name in TOKENIZER_CHECKS and not tokenized:
            continue
        folds = [(p["a"], p["b"]) for p in pairs if p["aligned_by"].startswith("fold")]
        plain = [(p["a"], p["b"]) for p in pairs if not p["aligned_by"].startswith("fold")]
        keys = {"pair": plain, "fold": folds, "model": [(None, None)]}.get(spec.scope, [])
        if name in TOKENIZER_CHECKS:
            keys = [(None, None)]  # one case: the model's tokenization
        suites[name] = {k: [] for k in keys}
    if act is not None:
        suites[ACTIVATION_DRIFT] = {(p["a"], p["b"]): [] for p in act.get("points", [])}
    for f in doc.get("findings", []):
        suite = suites.setdefault(f["check"], {})
        if f.get("a") is None and f.get("b") is None:
            layers = (f.get("values") or {}).get("layers")
            keys = [tuple(x) for x in layers if isinstance(x, list) and len(x) == 2] if isinstance(layers, list) else []
            keys = keys or [(None, None)]
        else:
            keys = [(f.get("a"), f.get("b"))]
        for k in keys:
            suite.setdefault(k, []).append(f)
    return suites


def _case_name(key: tuple[Any, Any]) -> str:
    a, b = key
    if a is None and b is None:
        return "model"
    return f"{a if a is not None else '(none)'} -> {b if b is not None else '(none)'}"


def _text(f: dict[str, Any]) -> str:
    lines = [f"{f['severity']}: {f.get('message', '')}"]
    if f.get("hint"):
        lines.append(f"hint: {f['hint']}")
    return "\n".join(lines)


def render(doc: dict[str, Any]) -> str:
    doc = clean(doc)
    fail_on = doc.get("fail_on", "error")
    b_path = str(doc.get("b", {}).get("path", ""))
    stamp = str(doc.get("created", "")).rstrip("Z")
    root = ET.Element("testsuites", name=_s(f"normaudit compare {doc['a']['path']} {doc['b']['path']}"))
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for check, cases in _cases(doc).items():
        if not cases:
            cases = {None: []}  # type: ignore[dict-item]  # e.g. missing_norm when every norm matched
        suite = ET.SubElement(root, "testsuite", name=f"normaudit.{check}")
        props = ET.SubElement(suite, "properties")
        for key, value in (("a", doc["a"]["path"]), ("b", b_path), ("normaudit_version", doc.get("normaudit_version")),
                           ("fail_on", fail_on)):
            ET.SubElement(props, "property", name=key, value=_s(value))
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for key, findings in cases.items():
            name = "no findings" if key is None else _case_name(key)
            case = ET.SubElement(suite, "testcase", name=_s(name), classname=f"normaudit.{check}", file=_s(b_path),
                                 time="0")
            counts["tests"] += 1
            failing = [f for f in findings if is_failing(f, fail_on)]
            suppressed = [f for f in findings if f.get("suppressed")]
            other = [f for f in findings if f not in failing and f not in suppressed]
            if failing:
                first = failing[0]
                el = ET.SubElement(case, "failure", message=_s(first.get("message", ""))[:500], type=first["severity"])
                el.text = _s("\n\n".join(_text(f) for f in failing))
                counts["failures"] += 1
            elif suppressed:
                reason = suppressed[0].get("reason") or "no reason given"
                ET.SubElement(case, "skipped", message=_s(f"suppressed by baseline: {reason}"))
                counts["skipped"] += 1
            notes = other + (suppressed if failing else [])
            if notes:
                out = ET.SubElement(case, "system-out")
                out.text = _s("\n\n".join(_text(f) + ("\n(suppressed by baseline)" if f.get("suppressed") else "")
                                          for f in notes))
        suite.set("tests", str(counts["tests"]))
        suite.set("failures", str(counts["failures"]))
        suite.set("errors", "0")
        suite.set("skipped", str(counts["skipped"]))
        suite.set("time", "0")
        if stamp:
            suite.set("timestamp", stamp)
        for k in totals:
            totals[k] += counts[k]
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", "0")
    root.set("skipped", str(totals["skipped"]))
    root.set("time", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


RENDERER = Renderer("junit", "Write a JUnit XML report to FILE (one test case per check and layer pair; failures for "
                             "failing findings) for CI test reporters.", ("compare",), render)
