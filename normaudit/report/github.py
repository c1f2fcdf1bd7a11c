"""GitHub Actions workflow commands (``::error file=...::message``): findings show up as annotations on the
run and, when the model file is part of the pull request, on the file. Printed by the CLI when
``GITHUB_ACTIONS=true``."""

from __future__ import annotations

from typing import Any

from .document import is_failing

_COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def annotations(doc: dict[str, Any]) -> list[str]:
    """One workflow command per finding (a failing one as ``error``, one below --fail-on as ``warning`` or
    ``notice``, a suppressed one as ``notice``), and a ``warning`` per stale baseline entry."""
    fail_on = doc.get("fail_on", "error")
    path = str(doc.get("b", {}).get("path", ""))
    out = []
    for f in doc.get("findings", []):
        if f.get("suppressed"):
            cmd = "notice"
        elif is_failing(f, fail_on):
            cmd = "error"
        else:
            cmd = "warning" if f["severity"] != "info" else "notice"
        where = f" {f['a']} -> {f['b']}" if f.get("a") is not None or f.get("b") is not None else ""
        title = f"normaudit {f['check']}" + (" (suppressed by baseline)" if f.get("suppressed") else "")
        text = f"{f['check']}{where}: {f.get('message', '')}" + (f" (hint: {f['hint']})" if f.get("hint") else "")
        if f.get("suppressed"):
            text += f" [suppressed by baseline: {f.get('reason') or 'no reason given'}]"
        out.append(f"::{cmd} file={_prop(path)},line=1,title={_prop(title)}::{_data(text)}")
    for e in (doc.get("baseline") or {}).get("stale", []):
        out.append(f"::warning title={_prop('normaudit baseline')}::"
                   + _data(f"baseline entry no longer occurs: {e.get('check')} {e.get('a') or '(model)'} -> "
                         f"{e.get('b') or '(model)'}"))
    return out
