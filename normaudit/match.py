"""Align the norm layers of two models, any pair of formats.

Methods, tried in order (each pair records which one aligned it):

``name``         same id, or the same id once a wrapper prefix (``m.``) is removed;
``gguf_table``   HF / PyTorch / ONNX module names mapped to GGUF names through gguf-py's TensorNameMap
                 for the architecture (the same HF name maps differently per architecture);
``weight_name``  the initializer / tensor the layer reads (``m.model.norm.weight``) names the module;
``index_leaf``   the same block indices and leaf name (``layer.0.layernorm_before`` ~ ``layers.0.layernorm_before``);
``order``        what is left, of the same kind and shape, paired in graph order;
``values``       left-overs paired by the closest effective scale (cosine) among same-shape layers.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .model import NormLayer, NormModel
from .facts.hf import TO_GGUF_ARCH
from .formats.gguf.names import gguf_name_for


@dataclass
class Pair:
    a: NormLayer
    b: NormLayer
    method: str


@dataclass
class Alignment:
    pairs: list[Pair] = field(default_factory=list)
    missing: list[NormLayer] = field(default_factory=list)  # in A, not in B
    extra: list[NormLayer] = field(default_factory=list)  # in B, not in A
    gguf_arch: str | None = None
    # norms of one side that a conversion writes to another file (a VLM's language model vs its mmproj GGUF, its
    # vision tower vs the text GGUF): side "A"/"B" -> (layers, why); not compared, not missing
    elsewhere: dict[str, tuple[list[NormLayer], str]] = field(default_factory=dict)


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def gguf_arch_for(model: NormModel) -> str | None:
    """The GGUF architecture name a model maps to (its own for GGUF; from HF model_type or class otherwise)."""
    if model.format == "gguf":
        return model.architecture
    meta = model.metadata if isinstance(model.metadata, dict) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    # the text model's type first (a VLM's text_config), then the checkpoint's own (qwen2_vl_text -> qwen2_vl)
    for mt in (meta.get("model_type"), config.get("model_type")):
        if isinstance(mt, str) and mt in TO_GGUF_ARCH:
            return TO_GGUF_ARCH[mt]
    cls = model.architecture or ""
    stem = re.sub(r"(For\w+|Model|PreTrainedModel)$", "", cls).lower()
    for key in sorted(TO_GGUF_ARCH, key=len, reverse=True):
        if stem and stem.replace("_", "") == key.replace("_", ""):
            return TO_GGUF_ARCH[key]
    return None


def module_name(layer: NormLayer) -> str:
    return layer.module or layer.id.split("#", 1)[0]


def _suffixes(name: str) -> list[str]:
    """name, then name without its leading components: m.model.layers.0.x -> model.layers.0.x -> ..."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def gguf_names(arch: str, n_blocks: int):
    """module name -> GGUF tensor base name, through gguf-py's TensorNameMap for ``arch`` (built once)."""
    return lambda module: gguf_name_for(arch, n_blocks, module)


MAX_BLOCKS = 4096  # far above any real model; bounds gguf-py's name tables for hostile names


def n_blocks(*models: NormModel) -> int:
    """Blocks to build GGUF name tables for: the block indices the norms actually have (never a header's claim)."""
    best = 0
    for m in models:
        for n in m.norms:
            for num in re.findall(r"(?:^|\.)(\d+)(?:\.|$)", module_name(n) or n.id):
                if int(num) < MAX_BLOCKS:
                    best = max(best, int(num) + 1)
    return best


def _prefix_map(a_names: dict[str, NormLayer], b_names: dict[str, NormLayer]) -> dict[str, str]:
    """b name -> a name, after removing the wrapper prefix that makes most names agree (either side)."""
    votes: Counter[tuple[str, str]] = Counter()
    for bn in b_names:
        for i, suf in enumerate(_suffixes(bn)):
            if suf in a_names:
                votes[("b", ".".join(bn.split(".")[:i]))] += 1
                break
    for an in a_names:
        for i, suf in enumerate(_suffixes(an)):
            if suf in b_names:
                votes[("a", ".".join(an.split(".")[:i]))] += 1
                break
    out: dict[str, str] = {}
    for (side, prefix), _ in votes.most_common():
        cut = len(prefix) + 1 if prefix else 0
        if side == "b":
            for bn in b_names:
                if bn not in out and (not prefix or bn.startswith(prefix + ".")) and bn[cut:] in a_names:
                    out[bn] = bn[cut:]
        else:
            for an in a_names:
                if (not prefix or an.startswith(prefix + ".")) and an[cut:] in b_names and an[cut:] not in out:
                    out[an[cut:]] = an
    return out


def checkpoint_name(layer: NormLayer) -> str | None:
    """The checkpoint key (without ``.weight``) of a layer's weight: what llama.cpp's converter maps."""
    if layer.weight is None or "." not in layer.weight.name:
        return None
    return layer.weight.name.rsplit(".", 1)[0]


def is_mmproj(model: NormModel) -> bool:
    """A multimodal projector GGUF (its loader marks it)."""
    return model.format == "gguf" and isinstance(model.metadata, dict) and bool(model.metadata.get("mmproj"))


def _gguf_key(names, layer: NormLayer) -> str | None:
    """A layer's GGUF name: its module path, else its checkpoint key (hub layouts the module path no longer has,
    e.g. ``vision_tower.vision_model.*`` of a transformers 5 Gemma3, which the converter maps)."""
    for candidate in (module_name(layer), checkpoint_name(layer)):
        if candidate:
            hit = names(candidate)
            if hit is not None:
                return hit
    return None


def split_elsewhere(a: NormModel, b: NormModel) -> dict[str, tuple[list[NormLayer], str]]:
    """Norms of a multimodal source that this conversion writes to another file: compared with an mmproj GGUF,
    the language model's (llama.cpp's converter drops ``language_model.*`` and whatever gguf-py's text tables map
    but its MMPROJ tables do not); compared with a text GGUF, the vision/audio tower's (the MMPROJ tables map it,
    the text tables do not)."""
    from .facts.gguf import MMPROJ_DROPS
    from .formats.gguf import clip_arch

    out: dict[str, tuple[list[NormLayer], str]] = {}
    for src, dst, side in ((a, b, "A"), (b, a, "B")):
        if src.format == "gguf" or dst.format != "gguf":
            continue
        text_arch = gguf_arch_for(src)
        blocks = n_blocks(src, dst)
        mm = gguf_names(clip_arch(), blocks)
        text = gguf_names(text_arch, blocks) if text_arch else (lambda _m: None)
        if is_mmproj(dst):
            away = [n for n in src.norms if _gguf_key(mm, n) is None and (
                MMPROJ_DROPS in (checkpoint_name(n) or "") + "|" + module_name(n) + "." or _gguf_key(text, n))]
            why = "the language model: llama.cpp's converter writes it to the text GGUF, not to the mmproj"
        else:
            # the text table first: a text model's norms all map there, and gguf-py's clip table is never built
            away = [n for n in src.norms if _gguf_key(text, n) is None and _gguf_key(mm, n) is not None]
            why = "the vision/audio tower and projector: llama.cpp's converter writes them to the mmproj GGUF"
        if away and len(away) < len(src.norms):
            out[side] = (away, why)
    return out


def align(a: NormModel, b: NormModel) -> Alignment:
    result = Alignment()
    result.elsewhere = split_elsewhere(a, b)
    skip = {id(n) for layers, _ in result.elsewhere.values() for n in layers}
    left_a = [n for n in a.norms if id(n) not in skip]
    left_b = [n for n in b.norms if id(n) not in skip]

    def take(pairs: list[tuple[NormLayer, NormLayer]], method: str) -> None:
        for la, lb in pairs:
            if la in left_a and lb in left_b:
                result.pairs.append(Pair(la, lb, method))
                left_a.remove(la)
                left_b.remove(lb)

    # 1. names (exact, or after a wrapper prefix)
    a_by = {module_name(n): n for n in left_a}
    b_by = {module_name(n): n for n in left_b}
    exact = [(a_by[k], b_by[k]) for k in a_by if k in b_by]
    take(exact, "name")
    a_by = {module_name(n): n for n in left_a}
    b_by = {module_name(n): n for n in left_b}
    take([(a_by[an], b_by[bn]) for bn, an in _prefix_map(a_by, b_by).items()], "name")

    # 2. GGUF tensor tables when one side is GGUF (or both map to one architecture)
    arch = gguf_arch_for(b) if b.format == "gguf" else gguf_arch_for(a)
    if arch and (a.format == "gguf" or b.format == "gguf"):
        result.gguf_arch = arch
        names = gguf_names(arch, n_blocks(a, b))

        def key(m: NormModel, n: NormLayer) -> str | None:
            return n.id if m.format == "gguf" else _gguf_key(names, n)

        b_keys = {key(b, n): n for n in left_b}
        take([(n, b_keys[k]) for n in list(left_a) if (k := key(a, n)) is not None and k in b_keys], "gguf_table")

    # 3. the weight tensor's own name
    def wname(n: NormLayer) -> str | None:
        if n.weight is None or "." not in n.weight.name:
            return None
        return n.weight.name.rsplit(".", 1)[0]

    a_w = {w: n for n in left_a if (w := wname(n))}
    b_w = {w: n for n in left_b if (w := wname(n))}
    take([(a_w[an], b_w[bn]) for bn, an in _prefix_map(a_w, b_w).items()], "weight_name")

    # 4. the same block indices and the same leaf name, unique on both sides: module paths a rename changed
    #    (transformers 5's ViT: checkpoint ``encoder.layer.0.layernorm_before``, modules ``layers.0....``)
    def index_leaf(n: NormLayer) -> tuple | None:
        name = module_name(n)
        leaf = name.rsplit(".", 1)[-1]
        return (tuple(int(t) for t in re.findall(r"(?:^|\.)(\d+)(?=\.|$)", name)), leaf) if leaf else None

    def unique(side: list[NormLayer]) -> dict[tuple, NormLayer]:
        seen = Counter(index_leaf(n) for n in side)
        return {k: n for n in side if (k := index_leaf(n)) is not None and seen[k] == 1}

    ua, ub = unique(left_a), unique(left_b)
    take([(ua[k], ub[k]) for k in ua if k in ub and ua[k].computes() == ub[k].computes()], "index_leaf")

    # 5. graph order among same kind + shape, when the left-overs line up one to one
    def sig(n: NormLayer) -> tuple:
        return (n.computes(), int(np.prod(n.shape)) if n.shape else 0)

    sa = sorted(left_a, key=lambda n: _natural_key(module_name(n)) if a.format != "onnx" else 0)
    sb = sorted(left_b, key=lambda n: _natural_key(module_name(n)) if b.format != "onnx" else 0)
    if sa and len(sa) == len(sb) and [sig(n) for n in sa] == [sig(n) for n in sb]:
        take(list(zip(sa, sb)), "order")

    # 6. closest values among same-size layers
    for la in list(left_a):
        cands = [lb for lb in left_b if sig(lb)[1] == sig(la)[1] and la.weight is not None and lb.weight is not None]
        if not cands:
            continue
        sa_ = la.scale().reshape(-1)
        best = max(cands, key=lambda lb: _cosine(sa_, lb.scale().reshape(-1)))
        if _cosine(sa_, best.scale().reshape(-1)) > 0.999:
            take([(la, best)], "values")

    result.missing = left_a
    result.extra = left_b
    order = {id(n): i for i, n in enumerate(a.norms)}
    result.pairs.sort(key=lambda p: order[id(p.a)])
    return result


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    return kernels.diff_metrics(x, y)["cosine"] if x.shape == y.shape else -1.0
