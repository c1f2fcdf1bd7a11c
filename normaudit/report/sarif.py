"""SARIF 2.1.0 (code scanning): one result per finding, located in the converted model file (B) as the
artifact; the layer ids are logical locations. A model file has no lines: results point at line 1, which is
what GitHub code scanning needs to show them. Findings a baseline accepted carry an external suppression with
the baseline's reason."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .document import ACTIVATION_DRIFT
from .jsonout import clean
from .renderers import Renderer

SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def _uri(path: str) -> str:
    p = Path(path)
    return p.resolve().as_uri() if p.is_absolute() else p.as_posix()


def _rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    from ..checks import REGISTRY

    used = {f["check"] for f in doc.get("findings", [])}
    rules = []
    for name, spec in REGISTRY.items():
        rules.append({"id": name, "name": name, "shortDescription": {"text": spec.description},
                      "defaultConfiguration": {"level": _LEVEL[spec.severity.value]},
                      "properties": {"scope": spec.scope}})
    if doc.get("activations") is not None or ACTIVATION_DRIFT in used:
        rules.append({"id": ACTIVATION_DRIFT, "name": ACTIVATION_DRIFT,
                      "shortDescription": {"text": "activations of B diverge from A's (the first divergence in "
                                                   "execution order)"},
                      "defaultConfiguration": {"level": "error"}, "properties": {"scope": "activations"}})
    known = {r["id"] for r in rules}
    for name in sorted(used - known):  # a check this process does not know (a document from elsewhere)
        rules.append({"id": name, "name": name, "shortDescription": {"text": name}})
    return rules


def _artifact(side: dict[str, Any], role: str) -> dict[str, Any]:
    art: dict[str, Any] = {"location": {"uri": _uri(str(side["path"]))}, "roles": [role]}
    files = side.get("files") or []
    if len(files) == 1 and not Path(str(side["path"])).is_dir():
        art["length"] = files[0]["size"]
        if files[0].get("sha256"):
            art["hashes"] = {"sha-256": files[0]["sha256"]}
    return art


def render(doc: dict[str, Any]) -> str:
    doc = clean(doc)
    rules = _rules(doc)
    index = {r["id"]: i for i, r in enumerate(rules)}
    b_uri = _uri(str(doc["b"]["path"]))
    results = []
    for f in doc.get("findings", []):
        text = f.get("message", "") + (f"\nhint: {f['hint']}" if f.get("hint") else "")
        logical = []
        for side in ("a", "b"):
            if f.get(side) is not None:
                logical.append({"name": str(f[side]), "fullyQualifiedName": f"{side.upper()}:{f[side]}",
                                "kind": "member"})
        fingerprint = hashlib.sha256(json.dumps([f["check"], f.get("a"), f.get("b")]).encode()).hexdigest()[:32]
        result: dict[str, Any] = {
            "ruleId": f["check"], "ruleIndex": index[f["check"]], "level": _LEVEL.get(f["severity"], "note"),
            "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": b_uri, "index": 0},
                                                "region": {"startLine": 1}},
                           **({"logicalLocations": logical} if logical else {})}],
            "partialFingerprints": {"normauditFinding/v1": fingerprint},
            "properties": {"a": f.get("a"), "b": f.get("b"), **({"values": f["values"]} if f.get("values") else {})},
        }
        if f.get("suppressed"):
            result["suppressions"] = [{"kind": "external", "status": "accepted",
                                       "justification": f.get("reason") or "accepted by a normaudit baseline"}]
        results.append(result)
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "normaudit", "version": str(doc.get("normaudit_version", "")),
                            "semanticVersion": str(doc.get("normaudit_version", "")), "rules": rules}},
        "invocations": [{"executionSuccessful": True, **({"startTimeUtc": doc["created"]} if doc.get("created") else {}),
                         "properties": {"passed": bool(doc.get("passed")), "fail_on": doc.get("fail_on")}}],
        "artifacts": [_artifact(doc["b"], "analysisTarget"), _artifact(doc["a"], "referencedOnCommandLine")],
        "results": results,
        "properties": {"a": doc["a"]["path"], "b": doc["b"]["path"]},
    }
    return json.dumps({"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}, indent=2,
                      allow_nan=False) + "\n"


RENDERER = Renderer("sarif", "Write a SARIF 2.1.0 report to FILE (one result per finding, the converted model as "
                             "the artifact) for code scanning.", ("compare",), render)
