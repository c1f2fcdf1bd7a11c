"""GGUF (llama.cpp): norms found through gguf-py's tensor tables, eps from the metadata keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...facts import gguf as facts
from ...model import Convention, EpsSource, NormKind, NormLayer, NormModel, Role, TensorRef
from ..base import LoadOptions, Probe
from .names import norm_templates, norm_kind
from .reader import GgufFile


def tensor_ref(gf: GgufFile, name: str) -> TensorRef:
    t = gf.tensors[name]
    return TensorRef(name, t.shape, t.type_name, lambda: gf.read(name), source=str(gf.path))


def eps_keys(arch: str) -> dict[NormKind, str]:
    """The metadata key holding each norm kind's eps (gguf-py's Keys.Attention spellings)."""
    from gguf.constants import Keys

    return {
        NormKind.RMS_NORM: Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch),
        NormKind.LAYER_NORM: Keys.Attention.LAYERNORM_EPS.format(arch=arch),
        NormKind.GROUP_NORM: Keys.Attention.GROUPNORM_EPS.format(arch=arch),
    }


def load_gguf(path: Path) -> NormModel:
    from gguf.constants import Keys

    gf = GgufFile(path)
    arch = gf.architecture
    templates_known = norm_templates(arch)[1]
    keys = eps_keys(arch)
    eps_values = {kind: gf.float32(key) for kind, key in keys.items()}
    groups = gf.int_value(Keys.Attention.GROUPNORM_GROUPS.format(arch=arch))

    grouped: dict[str, dict[str, str]] = {}
    kinds: dict[str, str] = {}
    for name in gf.tensors:
        base, _, suffix = name.rpartition(".")
        if suffix not in ("weight", "bias") or not base:
            continue
        kind_name = kinds.get(base) or norm_kind(arch, base)
        if kind_name is None:
            continue
        kinds[base] = kind_name
        grouped.setdefault(base, {})[suffix] = name

    one_plus = arch in facts.STORES_ONE_PLUS
    norms: list[NormLayer] = []
    for base, parts in grouped.items():
        tensor_kind = kinds[base]
        if "GROUPNORM" in tensor_kind or (tensor_kind.startswith("POSNET") and groups):
            kind = NormKind.GROUP_NORM
        elif "bias" in parts or arch in facts.LAYER_NORM_ARCHS or eps_values[NormKind.RMS_NORM] is None:
            kind = NormKind.LAYER_NORM
        else:
            kind = NormKind.RMS_NORM
        if kind is NormKind.LAYER_NORM and eps_values[NormKind.LAYER_NORM] is None \
                and eps_values[NormKind.RMS_NORM] is not None and "bias" not in parts:
            kind = NormKind.RMS_NORM
        eps = eps_values.get(kind)
        layer = NormLayer(
            id=base, kind=kind, eps=eps,
            eps_source=EpsSource.GGUF_METADATA if eps is not None else EpsSource.UNKNOWN,
            eps_detail=keys.get(kind, "") if eps is not None else "no eps key in the GGUF metadata",
            eps_key=keys.get(kind, "") if eps is not None else "",
            weight=tensor_ref(gf, parts["weight"]) if "weight" in parts else None,
            bias=tensor_ref(gf, parts["bias"]) if "bias" in parts else None,
            num_groups=int(groups) if kind is NormKind.GROUP_NORM and groups else None,
            convention=Convention.SCALE,
            role=Role.QK_NORM if tensor_kind in facts.QK_NORM_TENSORS else Role.NONE,
            tensor_kind=tensor_kind.lower(),
            stored_one_plus=one_plus,
        )
        if layer.role is Role.QK_NORM:
            layer.notes.append("qk-norm")
        if one_plus:
            layer.notes.append(f"{arch}: llama.cpp's converter stores 1 + w (weights hold the full scale)")
        norms.append(layer)

    model = NormModel(path=str(path), format="gguf", architecture=arch, norms=norms, container="gguf")
    model.handle = gf
    model.metadata = {
        "block_count": gf.int_value(f"{arch}.block_count") or 0,
        "blocks_present": gf.n_blocks,
        "file_type": gf.int_value("general.file_type"),
        "eps_keys": {k.value: v for k, v in eps_values.items() if v is not None},
        "stores_one_plus": one_plus,
    }
    if not templates_known:
        model.notes.append(f"architecture {arch!r} is not in gguf-py's tables; matched every known norm name")
    return model


class GgufFormat:
    name = "gguf"
    family = "gguf"
    description = "GGUF (llama.cpp)"

    def sniff(self, probe: Probe) -> bool:
        return probe.head[:4] == b"GGUF"

    def load(self, path: Path, options: LoadOptions) -> NormModel:
        return load_gguf(path)

    def runner(self, path: Path, model: NormModel, ctx: Any) -> Any:
        from ...activations.runners.replay import replay_runner

        return replay_runner(path, model, ctx)
