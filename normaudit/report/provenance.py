"""What a report records about itself and its inputs: tool version, creation time, and for every input file
its size and sha256 (or, above :data:`HASH_LIMIT` bytes, its size and modification time instead: hashing a
multi-GB checkpoint would cost more than the audit)."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..progress import Progress, step

#: files larger than this are recorded by size + mtime instead of sha256 (2 GiB: ~3 s of hashing)
HASH_LIMIT = 2 * 1024**3
#: at most this many files of a directory are listed
MAX_FILES = 200
_CHUNK = 1 << 22


def version() -> str:
    from .. import __version__

    return __version__


def now() -> str:
    """UTC creation time, ISO 8601 with seconds (``2026-05-01T12:00:00Z``)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _mtime(st: os.stat_result) -> str:
    return datetime.fromtimestamp(st.st_mtime, timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _entries(path: Path) -> list[tuple[str, Path]]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
        return [(p.name, p) for p in files[:MAX_FILES]]
    return [(path.name, path)] if path.is_file() else []


def describe_files(path: str | Path, progress: Progress | None = None, label: str = "") -> list[dict[str, Any]]:
    """One record per input file (a directory: each regular file directly inside it, sorted):
    ``{"name", "size", "sha256"}``, or ``{"name", "size", "mtime", "sha256": null, "note"}`` above the limit."""
    out: list[dict[str, Any]] = []
    entries = _entries(Path(path))
    sizes = {}
    for name, p in entries:
        try:
            sizes[name] = p.stat()
        except OSError:
            continue
    to_hash = sum(st.st_size for st in sizes.values() if st.st_size <= HASH_LIMIT)
    with step(progress, f"hashing {label or Path(path).name}", to_hash or None, "B") as advance:
        for name, p in entries:
            st = sizes.get(name)
            if st is None:
                continue
            rec: dict[str, Any] = {"name": name, "size": st.st_size}
            if st.st_size > HASH_LIMIT:
                rec.update(sha256=None, mtime=_mtime(st),
                           note=f"larger than {HASH_LIMIT // 1024**3} GiB: size and mtime instead of sha256")
            else:
                try:
                    rec["sha256"] = _sha256(p, advance)
                except OSError as exc:
                    rec.update(sha256=None, note=f"not hashed: {exc.strerror or exc}")
            out.append(rec)
    return out


def _sha256(path: Path, advance: Any) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            advance(len(chunk))
    return h.hexdigest()
