"""GGUF replay: run the source architecture (transformers) with every weight taken from the GGUF file.

Each GGUF tensor is dequantized with gguf-py and mapped back to its HF name through gguf-py's
TensorNameMap; the converter's transforms are undone (llama-family Q/K row permutation, the ``1 + w``
that Gemma/Nemotron/Qwen3-Next norms are stored as), and the GGUF metadata eps is applied.  A correct
F32 GGUF then reproduces the source model's activations to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NormauditError
from ..tables import GGUF_PERMUTED_QK_ARCHS, GGUF_STORES_ONE_PLUS


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of the converter's Q/K row permutation (interleaved RoPE rows -> HF rotate-half rows)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class GgufTensors:
    """One opened GGUF: its architecture, eps, and HF name -> (GGUF name, float32 getter, quant type)."""

    arch: str
    eps: float | None
    reader: Any = field(repr=False, default=None)
    mapping: dict[str, tuple[str, Any, str]] = field(default_factory=dict)
    unmapped_gguf: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def open_gguf(gguf_path: Path) -> GgufTensors:
    """Read a GGUF's header once (gguf-py memmap): architecture and the metadata eps."""
    import gguf
    from gguf.constants import Keys

    from ..formats.gguf_file import float32_field

    reader = gguf.GGUFReader(str(gguf_path), "r")
    arch = reader.fields["general.architecture"].contents()
    eps = None
    for key in (Keys.Attention.LAYERNORM_RMS_EPS, Keys.Attention.LAYERNORM_EPS):
        eps = float32_field(reader, key.format(arch=arch))
        if eps is not None:
            break
    return GgufTensors(arch=arch, eps=eps, reader=reader)


def map_tensors(gt: GgufTensors, gguf_path: Path, hf_names: list[str]) -> None:
    """Fill ``gt.mapping`` for the source model's tensor names through gguf-py's TensorNameMap, with getters
    that dequantize and undo the converter's transforms."""
    import gguf
    from gguf.constants import MODEL_ARCH_NAMES, Keys
    from gguf.quants import dequantize

    reader, arch = gt.reader, gt.arch
    arch_enum = next((a for a, n in MODEL_ARCH_NAMES.items() if n == arch), None)
    if arch_enum is None:
        raise NormauditError(f"{gguf_path}: architecture {arch!r} is not in gguf-py's tables: cannot replay it")

    def field_value(key: str) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    n_blocks = int(field_value(f"{arch}.block_count") or 0)
    n_head = field_value(Keys.Attention.HEAD_COUNT.format(arch=arch))
    n_head_kv = field_value(Keys.Attention.HEAD_COUNT_KV.format(arch=arch)) or n_head
    tmap = gguf.get_tensor_name_map(arch_enum, n_blocks)
    tensors = {t.name: t for t in reader.tensors}
    used: set[str] = set()
    one_plus = arch in GGUF_STORES_ONE_PLUS
    permute = arch in GGUF_PERMUTED_QK_ARCHS
    if permute:
        gt.notes.append("undid llama.cpp's Q/K row permutation")
    if one_plus:
        gt.notes.append("undid the stored 1 + w of the norm weights")
    for hf in hf_names:
        gname = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if gname is None or gname not in tensors:
            continue
        t = tensors[gname]
        used.add(gname)

        def load(t: Any = t, hf: str = hf, gname: str = gname) -> np.ndarray:
            shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
            arr = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(shape)
            if permute and hf.endswith("q_proj.weight") and n_head:
                arr = unpermute_qk(arr, int(n_head))
            elif permute and hf.endswith("k_proj.weight") and n_head_kv:
                arr = unpermute_qk(arr, int(n_head_kv))
            if one_plus and hf.endswith("norm.weight") and not hf.endswith("linear_attn.norm.weight"):
                arr = arr - 1.0
            return arr

        gt.mapping[hf] = (gname, load, t.tensor_type.name)
    gt.unmapped_gguf = [n for n in tensors if n not in used]


def replay_model(hf_dir: Path, gguf_path: Path) -> tuple[Any, GgufTensors]:
    """The HF architecture of ``hf_dir`` with the GGUF's weights and eps."""
    import torch

    from .runners import load_hf_module

    gt = open_gguf(gguf_path)
    model = load_hf_module(hf_dir, eps_override=gt.eps)
    state = model.state_dict()
    map_tensors(gt, gguf_path, list(state))
    missing = []
    with torch.no_grad():
        for name, tensor in state.items():
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
