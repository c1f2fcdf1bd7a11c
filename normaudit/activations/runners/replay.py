"""GGUF replay: run the source architecture (transformers) with every weight taken from the GGUF file.

Each GGUF tensor is dequantized with gguf-py and mapped back to its HF name through gguf-py's
TensorNameMap; the converter's transforms are undone (llama-family Q/K row permutation, the ``1 + w``
that Gemma/Nemotron/Qwen3-Next norms are stored as), and the GGUF metadata eps is applied.  A correct
F32 GGUF then reproduces the source model's activations to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ... import kernels
from ...errors import NormauditError
from ...extras import require
from ...facts import gguf as gguf_facts
from ...facts.hf import ONE_PLUS_EXCEPTIONS
from ...formats.gguf import eps_keys
from ...formats.gguf.names import name_map
from ...formats.gguf.reader import GgufFile
from ...model import NormKind, NormModel
from ...progress import Progress, step
from ..base import RunContext
from ..base import InputHints
from ..lazy import LazyWeights
from .hf import ModuleRunner, checkpoint_source, config_vocab, hf_forward, load_hf_module, meta_module


@dataclass
class GgufTensors:
    """One opened GGUF: its architecture, eps, and HF name -> (GGUF name, float32 getter, quant type)."""

    arch: str
    eps: float | None
    file: GgufFile = field(repr=False)
    mapping: dict[str, tuple[str, Callable[[], np.ndarray], str]] = field(default_factory=dict)
    unmapped_gguf: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def open_gguf(gf: GgufFile) -> GgufTensors:
    """Architecture and the metadata eps of an opened GGUF."""
    keys = eps_keys(gf.architecture)
    eps = gf.float32(keys[NormKind.RMS_NORM])
    if eps is None:
        eps = gf.float32(keys[NormKind.LAYER_NORM])
    return GgufTensors(arch=gf.architecture, eps=eps, file=gf)


def map_tensors(gt: GgufTensors, hf_names: list[str]) -> None:
    """Fill ``gt.mapping`` for the source model's tensor names through gguf-py's TensorNameMap, with getters
    that dequantize and undo the converter's transforms."""
    from gguf.constants import Keys

    gf, arch = gt.file, gt.arch
    tmap = name_map(arch, gf.n_blocks)
    if tmap is None:
        raise NormauditError(f"{gf.path}: architecture {arch!r} is not in gguf-py's tables: cannot replay it")
    n_head = gf.int_value(Keys.Attention.HEAD_COUNT.format(arch=arch))
    n_head_kv = gf.int_value(Keys.Attention.HEAD_COUNT_KV.format(arch=arch)) or n_head
    used: set[str] = set()
    one_plus = arch in gguf_facts.STORES_ONE_PLUS
    permute = arch in gguf_facts.PERMUTED_QK_ARCHS
    if permute:
        gt.notes.append("undid llama.cpp's Q/K row permutation")
    if one_plus:
        gt.notes.append("undid the stored 1 + w of the norm weights")
    row_orders: dict[tuple[int, int], np.ndarray] = {}
    for hf in hf_names:
        gname = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if gname is None or gname not in gf.tensors:
            continue
        used.add(gname)

        heads = 0
        if permute and hf.endswith("q_proj.weight"):
            heads = int(n_head or 0)
        elif permute and hf.endswith("k_proj.weight"):
            heads = int(n_head_kv or 0)
        shape = gf.tensors[gname].shape
        rows = None  # un-permuted as they are read: every block's q (k) rows move the same way, computed once
        if heads and shape and shape[0] % (2 * heads) == 0:
            if (shape[0], heads) not in row_orders:
                row_orders[shape[0], heads] = kernels.unpermute_qk_rows(shape[0], heads)
            rows = row_orders[shape[0], heads]

        def load(out: np.ndarray | None = None, gname: str = gname, heads: int = heads, rows: Any = rows,
                 hf: str = hf) -> np.ndarray:
            """float32 in the source's layout (into ``out`` when it fits: see GgufFile.read)."""
            arr = gf.read(gname, out, rows=rows)
            if heads and rows is None:
                arr = kernels.unpermute_qk(arr, heads)  # not whole head pairs: unpermute_qk says so
            if one_plus and hf.endswith("norm.weight") and not hf[: -len(".weight")].endswith(ONE_PLUS_EXCEPTIONS):
                arr = kernels.unstore_one_plus(arr)
            return arr

        gt.mapping[hf] = (gname, load, gf.tensors[gname].type_name)
    gt.unmapped_gguf = [n for n in gf.tensors if n not in used]


def replay_model(hf_dir: Path, gguf: Path | NormModel, progress: Progress | None = None) -> tuple[Any, GgufTensors]:
    """The HF architecture of ``hf_dir`` with all of the GGUF's weights and its eps, in memory (small models,
    benchmarks); activation diffs stream it instead (:func:`replay_runner`)."""
    label = gguf.path if isinstance(gguf, NormModel) else gguf
    torch = require("torch", f"{label}: replaying a GGUF", extra="activations")

    gf = gguf.handle if isinstance(gguf, NormModel) else GgufFile(Path(gguf))
    gt = open_gguf(gf)
    model = load_hf_module(hf_dir, eps_override=gt.eps)
    state = model.state_dict()
    map_tensors(gt, list(state))
    missing = []
    with torch.no_grad(), step(progress, f"loading {Path(gf.path).name} weights", len(state), "tensors") as advance:
        for name, tensor in state.items():
            advance(1)
            if name in gt.mapping:
                value = torch.from_numpy(gt.mapping[name][1]())
                if tuple(value.shape) != tuple(tensor.shape):
                    raise NormauditError(f"GGUF tensor {gt.mapping[name][0]} has shape {tuple(value.shape)}, "
                                         f"{name} needs {tuple(tensor.shape)}",
                                         hint="--model must be the HF model this GGUF was converted from")
                tensor.copy_(value.to(tensor.dtype))
            elif tensor.is_floating_point() and not name.endswith(("inv_freq", "embed_scale", "position_ids")):
                missing.append(name)
    tied = getattr(model.config, "tie_word_embeddings", False)
    missing = [m for m in missing if not (tied and m.endswith("lm_head.weight"))]
    if missing:
        gt.notes.append(f"{len(missing)} source tensors have no GGUF counterpart and keep the source values: "
                        + ", ".join(missing[:5]))
    return model, gt


def replay_runner(path: Path, model: NormModel, ctx: RunContext) -> ModuleRunner:
    """A GGUF replayed through its source architecture (the HF side of the pair, or --model), one block of
    dequantized weights in memory at a time; each tensor's own quantization error against the source is
    measured as it is materialized."""
    from ...formats.registry import load
    from ...match import align

    if ctx.source_dir is None:
        raise NormauditError(f"{path}: a GGUF is replayed through its source architecture",
                             hint="compare it against its HF directory, or pass --model HF_DIR")
    source = ctx.source_model if ctx.source_model is not None else load(ctx.source_dir)
    gt = open_gguf(model.handle)
    module = meta_module(ctx.source_dir, eps_override=gt.eps)
    names = [n for n, _ in module.named_parameters(remove_duplicate=False)] + [n for n, _ in module.named_buffers()]
    map_tensors(gt, names)
    reference = checkpoint_source(source)
    weights_from = {name: getter for name, (_, getter, _) in gt.mapping.items()}
    kept = [n for n, _ in module.named_parameters() if n not in weights_from and n in reference]
    for name in kept:  # no GGUF counterpart: the source's own values
        weights_from[name] = reference[name]
    if kept:
        gt.notes.append(f"{len(kept)} source tensors have no GGUF counterpart and keep the source values: "
                        + ", ".join(kept[:5]))
    weights = LazyWeights(module, weights_from, {name: q for name, (_, _, q) in gt.mapping.items()}, reference)
    weights.load_buffers()
    # norm records for local replays: the GGUF's own (eps, stored weights) under the HF module ids
    by_hf = {p.a.id: p.b for p in align(source, model).pairs}
    norms = [replace(n, eps=g.eps, eps_source=g.eps_source, weight=g.weight, bias=g.bias, convention=g.convention,
                     stored_one_plus=g.stored_one_plus) if (g := by_hf.get(n.id)) is not None else n
             for n in source.norms]
    records = replace(source, norms=norms)
    runner = ModuleRunner(module, records, hf_forward,
                          f"GGUF replay through transformers {type(module).__name__} ({gt.arch}, "
                          + "; ".join(gt.notes[:2] or ["no transforms to undo"]) + ", layer-streamed)",
                          InputHints(vocab=config_vocab(source), tokenizer_dirs=[ctx.source_dir]), weights)
    runner.replay = gt
    runner.notes.extend(gt.notes[2:])
    if weights.missing:
        runner.notes.append(f"{len(weights.missing)} parameters are in neither the GGUF nor the source checkpoint "
                            f"and run as zeros: {weights.missing[:3]}")
    return runner
