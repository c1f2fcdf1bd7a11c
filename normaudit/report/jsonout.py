"""JSON documents (JSON Schemas in normaudit/report/schema/, documented in the README)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def clean(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every parser accepts the document."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (bytes, bytearray)):  # a protobuf string field that is not valid UTF-8
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return clean(obj.item())
    return obj


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(clean(doc), indent=2, allow_nan=False)


def write_json(doc: dict[str, Any], target: str) -> None:
    """Write ``doc`` to a file path, or to stdout for ``-``."""
    text = dumps(doc) + "\n"
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(target).write_text(text)

