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


_DIGITS = re.compile(r"\d+")


def _lookup(tmap: Any, module: str) -> str | None:
    name = tmap.get_name(module + ".weight", try_suffixes=(".weight",))
    if name is None:
        return None
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _in_block(arch: str, n_blocks: int, small: Any, candidate: str, start: int, end: int, block: int) -> str | None:
    """``candidate`` with its component [start:end] being block ``block``: looked up as blocks 0 and 1 in the
    small table, the one component that differs becomes ``block`` (else the full table answers)."""
    n0 = _lookup(small, candidate[:start] + "0" + candidate[end:])
    if n0 is None:
        return None  # no pattern for this module in block 0: none in any block (the tables format every block)
    n1 = _lookup(small, candidate[:start] + "1" + candidate[end:])
    p0, p1 = n0.split("."), (n1 or "").split(".")
    diff = [i for i, (x, y) in enumerate(zip(p0, p1)) if x != y]
    if n1 is None or len(p0) != len(p1) or len(diff) != 1 or (p0[diff[0]], p1[diff[0]]) != ("0", "1"):
        return _lookup(name_map(arch, n_blocks), candidate[:start] + str(block) + candidate[end:])
    p0[diff[0]] = str(block)
    return ".".join(p0)


def gguf_name_for(arch: str, n_blocks: int, module: str) -> str | None:
    """The GGUF tensor base name a PyTorch-style module path maps to (tolerant of wrapper prefixes).

    gguf-py's table is built for blocks 0 and 1 only (building it for every block costs ~1-2 ms per block,
    0.1 s for an 80-layer model): a module of block N is looked up as blocks 0 and 1, and the GGUF name gets
    block N where those two differ."""
    small = name_map(arch, min(max(n_blocks, 0), 2))
    if small is None or not module:
        return None
    for candidate in _suffixes(module)[:4]:
        name = _lookup(small, candidate)
        if name is not None:
            return name
        for m in _INDEX_RE.finditer(candidate):  # each numeric component may be the block index
            block = int(m.group(0))
            if 2 <= block < n_blocks:
                name = _in_block(arch, n_blocks, small, candidate, m.start(), m.end(), block)
                if name is not None:
                    return name
        # a block index inside a component (``layer2``): only the full table knows
        if any(2 <= int(d) < n_blocks for d in _DIGITS.findall(candidate)):
            name = _lookup(name_map(arch, n_blocks), candidate)
            if name is not None:
                return name
    return None
