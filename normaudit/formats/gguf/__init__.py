"""GGUF (llama.cpp): norms found through gguf-py's tensor tables, eps from the metadata keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...contracts import Embedding, Preprocess, Where
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


def clip_arch() -> str:
    """``general.architecture`` of llama.cpp's multimodal projector files (gguf-py: MODEL_ARCH.MMPROJ)."""
    from gguf.constants import MODEL_ARCH, MODEL_ARCH_NAMES

    return MODEL_ARCH_NAMES[MODEL_ARCH.MMPROJ]


def is_mmproj(gf: GgufFile) -> bool:
    from gguf.constants import GGUFType, Keys

    return gf.architecture == clip_arch() or gf.value(Keys.General.TYPE) == GGUFType.MMPROJ


def _grouped_norms(gf: GgufFile, arch: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Norm tensors by base name (``blk.3.attn_norm`` -> weight/bias tensor names) and their gguf-py kind."""
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
    return grouped, kinds


def load_gguf(path: Path) -> NormModel:
    from gguf.constants import Keys

    gf = GgufFile(path)
    arch = gf.architecture
    if is_mmproj(gf):
        return load_mmproj(path, gf)
    templates_known = norm_templates(arch)[1]
    keys = eps_keys(arch)
    eps_values = {kind: gf.float32(key) for kind, key in keys.items()}
    groups = gf.int_value(Keys.Attention.GROUPNORM_GROUPS.format(arch=arch))
    grouped, kinds = _grouped_norms(gf, arch)

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
    model.embedding = embedding_contract(gf, arch)
    if not templates_known:
        model.notes.append(f"architecture {arch!r} is not in gguf-py's tables; matched every known norm name")
    return model


def _clip_modality(base: str) -> str:
    return next((m for prefix, m in facts.CLIP_MODALITY_PREFIXES if base.startswith(prefix)), "vision")


def load_mmproj(path: Path, gf: GgufFile) -> NormModel:
    """A multimodal projector (``convert_hf_to_gguf.py --mmproj``): the vision (and audio) encoder and the
    projector.  llama.cpp (tools/mtmd/clip.cpp) runs every norm of one modality with that modality's
    ``clip.<modality>.attention.layer_norm_epsilon`` (gguf-py Keys.ClipVision / Keys.ClipAudio), 1e-6 when the
    key is absent; a few projector norms are special-cased (facts.gguf.CLIP_NORMS)."""
    from gguf.constants import Keys

    arch = gf.architecture
    eps_key = {"vision": Keys.ClipVision.Attention.LAYERNORM_EPS, "audio": Keys.ClipAudio.Attention.LAYERNORM_EPS}
    eps_values = {m: gf.float32(k) for m, k in eps_key.items()}
    projector = gf.value(Keys.Clip.PROJECTOR_TYPE) or gf.value(Keys.ClipVision.PROJECTOR_TYPE)
    projector = projector if isinstance(projector, str) else ""
    grouped, kinds = _grouped_norms(gf, clip_arch())
    norms: list[NormLayer] = []
    for base, parts in grouped.items():
        modality = _clip_modality(base)
        special = facts.CLIP_NORMS.get((projector, base))
        notes: list[str] = []
        if special is not None:
            kind = NormKind(special.kind)
            notes.append(f"projector {projector}: {special.source}")
        elif "bias" in parts:
            kind = NormKind.LAYER_NORM
        else:
            kind = NormKind.RMS_NORM
            notes.append("no bias: RMSNorm (llama.cpp chooses the norm per projector; kind read from the tensors)")
        key = eps_key[modality]
        if special is not None and special.eps is not None:
            eps, source, detail, ekey = float(np.float32(special.eps)), EpsSource.RUNTIME_DEFAULT, special.source, ""
        elif eps_values[modality] is not None:
            eps, source, detail, ekey = eps_values[modality], EpsSource.GGUF_METADATA, key, key
        else:
            eps, source = float(np.float32(facts.CLIP_DEFAULT_EPS)), EpsSource.RUNTIME_DEFAULT
            detail, ekey = f"no {key} key: llama.cpp's default (tools/mtmd/clip-model.h eps = 1e-6)", ""
        tensor_kind = kinds[base]
        stored_one_plus = bool(special and special.stored_one_plus)
        layer = NormLayer(
            id=base, kind=kind, eps=eps, eps_source=source, eps_detail=detail, eps_key=ekey,
            weight=tensor_ref(gf, parts["weight"]) if "weight" in parts else None,
            bias=tensor_ref(gf, parts["bias"]) if "bias" in parts else None,
            convention=Convention.SCALE,
            role=Role.QK_NORM if tensor_kind in facts.QK_NORM_TENSORS else Role.NONE,
            tensor_kind=tensor_kind.lower(), stored_one_plus=stored_one_plus, notes=notes,
        )
        if stored_one_plus:
            layer.notes.append("llama.cpp's converter stores 1 + w (weights hold the full scale)")
        norms.append(layer)
    model = NormModel(path=str(path), format="gguf", architecture=arch, norms=norms, container="gguf")
    model.handle = gf
    model.metadata = {
        "block_count": gf.int_value(Keys.ClipVision.BLOCK_COUNT) or gf.int_value(Keys.ClipAudio.BLOCK_COUNT) or 0,
        "blocks_present": gf.n_blocks,
        "file_type": gf.int_value("general.file_type"),
        "eps_keys": {eps_key[m]: v for m, v in eps_values.items() if v is not None},
        "stores_one_plus": any(n.stored_one_plus for n in norms),
        "mmproj": True, "projector_type": projector,
    }
    model.notes.append(f"multimodal projector (mmproj, projector type {projector or 'unknown'}): the vision/audio "
                       "encoder and projector of a multimodal model; its language model is a separate GGUF")
    model.preprocess = preprocess_contract(gf, path)
    return model


def preprocess_contract(gf: GgufFile, path: Path) -> Preprocess | None:
    """``clip.vision.image_mean`` / ``image_std`` (gguf-py Keys.ClipVision), applied by llama.cpp's mtmd as
    ``(p / 255 - mean[c]) / std[c]`` for the first 3 values."""
    from gguf.constants import Keys

    from ...facts import preprocess as pfacts

    mean, std = gf.value(Keys.ClipVision.IMAGE_MEAN), gf.value(Keys.ClipVision.IMAGE_STD)
    if mean is None and std is None:
        return None
    out = Preprocess(where=Where.OUTSIDE, rescale=pfacts.LLAMA_CPP_RESCALE, do_rescale=True, do_normalize=True,
                     sources={"rescale": pfacts.LLAMA_CPP_RESCALE_SOURCE})
    for name, key, value in (("mean", Keys.ClipVision.IMAGE_MEAN, mean), ("std", Keys.ClipVision.IMAGE_STD, std)):
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
            out.notes.append(f"{key} is missing or not a list of numbers: llama.cpp refuses the file")
            continue
        values = tuple(float(np.float32(v)) for v in value)
        if len(values) < 3:
            out.notes.append(f"{key} holds {len(values)} values: llama.cpp needs 3 and refuses the file")
        elif len(values) > 3:
            out.notes.append(f"{key} holds {len(values)} values: llama.cpp reads the first 3")
        setattr(out, name, values[:3] if len(values) >= 3 else values)
        out.sources[name] = f"GGUF {key}"
    if out.mean is None or out.std is None:
        out.where = Where.UNKNOWN
    return out


def embedding_contract(gf: GgufFile, arch: str) -> Embedding | None:
    """``{arch}.pooling_type`` (gguf-py Keys.LLM.POOLING_TYPE / PoolingType) and what llama.cpp does with it; None
    for files that are not embedding models (no pooling key)."""
    import gguf
    from gguf.constants import Keys

    from ...facts import embedding as efacts

    key = Keys.LLM.POOLING_TYPE.format(arch=arch)
    raw = gf.int_value(key)
    if raw is None:
        return None
    try:
        pooling = efacts.GGUF_POOLING.get(gguf.PoolingType(raw).name)
    except ValueError:
        pooling = None
    out = Embedding(where="gguf", pooling=pooling, normalize=None, sources={"pooling": f"GGUF {key} = {raw}",
                    "normalize": "not stored in GGUF: the runtime decides"},
                    dim=gf.int_value(Keys.LLM.EMBEDDING_LENGTH.format(arch=arch)),
                    runtime=list(efacts.LLAMA_CPP_RUNTIME))
    if pooling is None:
        out.notes.append(f"{key} = {raw} is not a pooling type gguf-py knows")
    return out


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
        from ...errors import NormauditError

        if model.metadata.get("mmproj"):
            raise NormauditError(f"{path}: --activations does not run multimodal projector (mmproj) files: GGUF replay "
                                 "covers text models", hint="compare it without --activations (static checks)")

        return replay_runner(path, model, ctx)
