"""Hugging Face model folders, plain or in the hub cache, and the root their files may resolve into.

The hub cache (``huggingface_hub``) keeps a model as::

    models--org--name/
      refs/main                      -> a commit hash
      snapshots/<commit>/config.json -> ../../blobs/<sha256>   (symlinks)
      blobs/<sha256>

A plain folder's files must resolve inside the folder; a snapshot's may also resolve into its repo folder
(``blobs/``), never beyond it.  A ``models--org--name`` folder is opened at ``--revision`` (a ref name, a
commit hash or a unique prefix of one), else at ``refs/main``, else at its newest snapshot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import CorruptFile, NormauditError

REPO_PREFIX = "models--"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")  # a commit hash or ref name, never a path


def is_cache_repo(path: Path) -> bool:
    """``models--org--name`` with a ``snapshots`` folder."""
    return path.name.startswith(REPO_PREFIX) and (path / "snapshots").is_dir()


def repo_of_snapshot(folder: Path) -> Path | None:
    """The ``models--org--name`` folder a ``snapshots/<commit>`` folder belongs to, else None."""
    folder = folder.absolute()
    parent = folder.parent
    if parent.name == "snapshots" and parent.parent.name.startswith(REPO_PREFIX):
        return parent.parent
    return None


def _within(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _read_ref(repo: Path, name: str) -> str | None:
    """The commit a ref (``main``, ``refs/pr/1``...) points at; None if there is no such ref."""
    if not all(_SAFE_NAME.match(part) for part in name.split("/")):
        return None
    ref = repo / "refs" / name
    if not ref.is_file() or ref.stat().st_size > 256:
        return None
    commit = ref.read_text(errors="replace").strip()
    return commit if _SAFE_NAME.match(commit) else None


def resolve_snapshot(repo: Path, revision: str | None = None) -> tuple[Path, str]:
    """(snapshot folder, how it was chosen) of a ``models--org--name`` folder."""
    snapshots = repo / "snapshots"
    root = repo.resolve()
    available = sorted((p for p in snapshots.iterdir() if p.is_dir() and _SAFE_NAME.match(p.name)),
                       key=lambda p: p.name) if snapshots.is_dir() else []
    if not available:
        raise NormauditError(f"{repo}: Hugging Face cache folder has no snapshots",
                             hint="download the model first (huggingface-cli download ...)")

    def checked(snap: Path, how: str) -> tuple[Path, str]:
        if not _within(root, snap.resolve()):
            raise CorruptFile(f"{repo}: snapshot {snap.name} resolves outside the cache folder")
        return snap, how

    if revision is not None:
        commit = _read_ref(repo, revision)
        if commit is not None and (snapshots / commit).is_dir():
            return checked(snapshots / commit, f"revision {revision} -> {commit}")
        matches = [p for p in available if p.name.startswith(revision)] if _SAFE_NAME.match(revision) else []
        if len(matches) == 1:
            return checked(matches[0], f"revision {matches[0].name}")
        raise NormauditError(
            f"{repo}: revision {revision!r} " + ("is ambiguous" if matches else "is not in the cache"),
            hint="snapshots here: " + ", ".join(p.name[:12] for p in available[:8]))
    commit = _read_ref(repo, "main")
    if commit is not None and (snapshots / commit).is_dir():
        return checked(snapshots / commit, f"refs/main -> {commit}")
    newest = max(available, key=lambda p: (p.stat().st_mtime, p.name))
    return checked(newest, f"newest snapshot {newest.name} (no refs/main)")


@dataclass(frozen=True)
class ModelFolder:
    """Where an HF model's files are (``dir``) and the folder they may resolve into (``root``)."""

    dir: Path
    root: Path  # resolved
    how: str = ""  # how a cache snapshot was chosen ("" for a plain folder)

    def file(self, name: str, what: str) -> Path:
        """``dir / name`` resolved: a regular file inside ``root``, else a one-line error naming ``what``."""
        candidate = self.dir / name
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, NUL bytes, over-long names
            raise CorruptFile(f"{candidate}: {what} cannot be resolved ({type(exc).__name__})") from None
        if not _within(self.root, resolved):
            raise CorruptFile(f"{candidate}: {what} resolves outside the model folder ({self.root})")
        if not resolved.is_file():
            raise CorruptFile(f"{candidate}: {what} is missing or not a regular file")
        return resolved

    def has(self, name: str) -> bool:
        return (self.dir / name).is_file() or (self.dir / name).is_symlink()

    def glob(self, pattern: str) -> list[str]:
        return sorted(p.name for p in self.dir.glob(pattern))


def model_folder(path: Path, revision: str | None = None) -> ModelFolder:
    """The folder to read for ``path``: itself, or a snapshot of a hub-cache repo folder."""
    if is_cache_repo(path):
        snap, how = resolve_snapshot(path, revision)
        return ModelFolder(snap, path.resolve(), how)
    if revision is not None:
        raise NormauditError(f"{path}: --revision applies to a Hugging Face cache folder (models--org--name)")
    repo = repo_of_snapshot(path)
    if repo is not None:  # a snapshot folder named directly: its symlinks point into the repo's blobs/
        return ModelFolder(path, repo.resolve(), f"snapshot {path.name}")
    return ModelFolder(path, path.resolve())


def snapshot_dir(path: Path, revision: str | None = None) -> Path:
    """The folder transformers should load for ``path`` (a snapshot for a cache repo folder)."""
    return model_folder(path, revision).dir if path.is_dir() else path
