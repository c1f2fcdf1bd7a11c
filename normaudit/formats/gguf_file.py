"""GGUF loader on top of gguf-py: GGUFReader (memmap), its tensor-name tables and gguf.quants."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptFile
from ..model import Convention, EpsSource, NormKind, NormLayer, NormModel, TensorRef
from ..tables import GGUF_LAYER_NORM_ARCHS, GGUF_QK_NORM_TENSORS, GGUF_STORES_ONE_PLUS

GGUF_MAGIC = b"GGUF"
# smallest encodings: a KV is key length (8) + 1-char key + type (4) + a 1-byte value; a tensor info is
# name length (8) + 1-char name + n_dims (4) + one dim (8) + type (4) + offset (8)
_MIN_KV_BYTES = 14
_MIN_TENSOR_INFO_BYTES = 33


def _check_header(path: Path) -> None:
    """Reject files whose header counts cannot fit in the file before gguf-py walks them."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise CorruptFile(f"{path}: not a GGUF file or truncated header ({size} bytes)")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise CorruptFile(f"{path}: unsupported GGUF version {version}", hint="normaudit reads GGUF v2 and v3")
    budget = size - 24
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > budget:
        raise CorruptFile(
            f"{path}: corrupt or truncated GGUF: header claims {n_kv} metadata keys and {n_tensors} tensors, "
            f"which cannot fit in {size} bytes")


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


def float32_field(reader: Any, key: str) -> float | None:
    """A float metadata value exactly as stored (float32), widened to a Python float."""
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    return float(np.float32(field.parts[field.data[0]][0]))


def _norm_tensor_names(arch: str, n_blocks: int) -> tuple[dict[str, str], bool]:
    """Map every norm tensor base name this architecture can have -> gguf-py MODEL_TENSOR name.

    Uses gguf-py's own tables (MODEL_TENSORS / TENSOR_NAMES).  Returns (map, arch_known).
    """
    from gguf.constants import MODEL_ARCH_NAMES, MODEL_TENSORS, TENSOR_NAMES

    arch_enum = next((a for a, name in MODEL_ARCH_NAMES.items() if name == arch), None)
    kinds = MODEL_TENSORS.get(arch_enum) if arch_enum is not None else None
    known = kinds is not None
    if kinds is None:  # architecture gguf-py does not know: every norm tensor kind it has a name for
        kinds = list(TENSOR_NAMES)
    out: dict[str, str] = {}
    for kind in kinds:
        if "NORM" not in kind.name:
            continue
        template = TENSOR_NAMES[kind]
        if "{bid}" in template:
            for bid in range(max(n_blocks, 0)):
                out[template.format(bid=bid)] = kind.name
        else:
            out[template] = kind.name
    return out, known


def _tensor_ref(t: Any) -> TensorRef:
    from gguf.quants import dequantize

    shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))  # numpy (row-major) order
    qtype = t.tensor_type

    def load() -> np.ndarray:
        return dequantize(np.asarray(t.data), qtype).astype(np.float32).reshape(shape)

    return TensorRef(str(t.name), shape, qtype.name, load)


def load_gguf(path: Path) -> NormModel:
    from gguf import GGUFReader

    _check_header(path)
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # gguf-py raises ValueError/IndexError/struct errors on bad files
        raise CorruptFile(f"{path}: corrupt or truncated GGUF ({type(exc).__name__}: {exc})") from None

    arch = _field_value(reader, "general.architecture")
    if not isinstance(arch, str):
        raise CorruptFile(f"{path}: GGUF has no general.architecture key")
    n_blocks = int(_field_value(reader, f"{arch}.block_count") or 0)
    names, arch_known = _norm_tensor_names(arch, n_blocks)

    from gguf.constants import Keys

    eps_keys = {
        NormKind.RMS_NORM: Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch),
        NormKind.LAYER_NORM: Keys.Attention.LAYERNORM_EPS.format(arch=arch),
        NormKind.GROUP_NORM: Keys.Attention.GROUPNORM_EPS.format(arch=arch),
    }
    eps_values = {kind: float32_field(reader, key) for kind, key in eps_keys.items()}
    groups = _field_value(reader, Keys.Attention.GROUPNORM_GROUPS.format(arch=arch))

    grouped: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for t in reader.tensors:
        base, _, suffix = str(t.name).rpartition(".")
        if base in names and suffix in ("weight", "bias"):
            if base not in grouped:
                grouped[base] = {}
                order.append(base)
            grouped[base][suffix] = t

    one_plus = arch in GGUF_STORES_ONE_PLUS
    norms: list[NormLayer] = []
    for base in order:
        parts = grouped[base]
        tensor_kind = names[base]
        if "GROUPNORM" in tensor_kind or (tensor_kind.startswith("POSNET") and groups):
            kind = NormKind.GROUP_NORM
        elif "bias" in parts or arch in GGUF_LAYER_NORM_ARCHS or eps_values[NormKind.RMS_NORM] is None:
            kind = NormKind.LAYER_NORM
        else:
            kind = NormKind.RMS_NORM
        if kind is NormKind.LAYER_NORM and eps_values[NormKind.LAYER_NORM] is None \
                and eps_values[NormKind.RMS_NORM] is not None and "bias" not in parts:
            kind = NormKind.RMS_NORM
        eps = eps_values.get(kind)
        layer = NormLayer(
            id=base,
            kind=kind,
            eps=eps,
            eps_source=EpsSource.GGUF_METADATA if eps is not None else EpsSource.UNKNOWN,
            eps_detail=eps_keys.get(kind, "") if eps is not None else "no eps key in the GGUF metadata",
            weight=_tensor_ref(parts["weight"]) if "weight" in parts else None,
            bias=_tensor_ref(parts["bias"]) if "bias" in parts else None,
            num_groups=int(groups) if kind is NormKind.GROUP_NORM and groups else None,
            convention=Convention.SCALE,
            role=tensor_kind.lower(),
        )
        if tensor_kind in GGUF_QK_NORM_TENSORS:
            layer.notes.append("qk-norm")
        if one_plus:
            layer.notes.append(f"{arch}: llama.cpp's converter stores 1 + w (weights hold the full scale)")
        norms.append(layer)

    model = NormModel(path=str(path), format="gguf", architecture=arch, norms=norms, container="gguf")
    model.metadata = {
        "block_count": n_blocks,
        "file_type": _field_value(reader, "general.file_type"),
        "eps_keys": {k.value: v for k, v in eps_values.items() if v is not None},
        "stores_one_plus": one_plus,
    }
    if not arch_known:
        model.notes.append(f"architecture {arch!r} is not in gguf-py's tables; matched every known norm name")
    return model
