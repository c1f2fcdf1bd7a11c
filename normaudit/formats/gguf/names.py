"""GGUF tensor names through gguf-py's own tables: which tensor kind a name is, and HF/PyTorch module names
mapped to GGUF names (``TensorNameMap``), built once per architecture and block count."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_BLOCK_RE = re.compile(r"(?:^|\.)blk\.(\d+)\.")
_INDEX_RE = re.compile(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)")


def block_index(name: str) -> int | None:
    m = _BLOCK_RE.search(name)
    return int(m.group(1)) if m else None


@lru_cache(maxsize=None)
def arch_enum(arch: str) -> Any | None:
    """gguf-py's MODEL_ARCH member for a ``general.architecture`` string, or None if gguf-py does not know it."""
    from gguf.constants import MODEL_ARCH_NAMES

    return next((a for a, name in MODEL_ARCH_NAMES.items() if name == arch), None)


@lru_cache(maxsize=None)
def norm_templates(arch: str) -> tuple[dict[str, str], bool]:
    """Template (``blk.{bid}.attn_norm``) -> gguf-py MODEL_TENSOR name, for every norm tensor kind of ``arch``.

    Returns (templates, arch_known); an architecture gguf-py does not know gets every norm kind it names."""
    from gguf.constants import MODEL_TENSORS, TENSOR_NAMES

    a = arch_enum(arch)
    kinds = MODEL_TENSORS.get(a) if a is not None else None
    known = kinds is not None
    out: dict[str, str] = {}
    for kind in (kinds if kinds is not None else list(TENSOR_NAMES)):
        if "NORM" in kind.name and kind in TENSOR_NAMES:
            out[TENSOR_NAMES[kind]] = kind.name
    return out, known


def norm_kind(arch: str, base: str) -> str | None:
    """The gguf-py tensor kind (``ATTN_NORM``...) of a tensor base name (``blk.3.attn_norm``) if it is a norm."""
    templates, _ = norm_templates(arch)
    if base in templates:
        return templates[base]
    return templates.get(_INDEX_RE.sub("{bid}", base, count=1))


@lru_cache(maxsize=32)
def name_map(arch: str, n_blocks: int) -> Any | None:
    """gguf-py's TensorNameMap for an architecture (None if gguf-py does not know it), built once."""
    import gguf

    a = arch_enum(arch)
    return gguf.get_tensor_name_map(a, max(n_blocks, 0)) if a is not None else None


def _suffixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def gguf_name_for(arch: str, n_blocks: int, module: str) -> str | None:
    """The GGUF tensor base name a PyTorch-style module path maps to (tolerant of wrapper prefixes)."""
    tmap = name_map(arch, n_blocks)
    if tmap is None or not module:
        return None
    for candidate in _suffixes(module)[:4]:
        name = tmap.get_name(candidate + ".weight", try_suffixes=(".weight",))
        if name is not None:
            return name[: -len(".weight")] if name.endswith(".weight") else name
    return None
