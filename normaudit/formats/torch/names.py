"""Norm layers of a flat name -> tensor mapping (a state_dict or safetensors checkpoint), found by module
names and tensor shapes, with eps from an HF config.json.  The fallback when no module tells more."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ...facts import hf as hf_facts
from ...facts.torch import GROUP_NORM_RE, INSTANCE_NORM_RE, NORM_MODULE_RE, NORM_TENSOR_SUFFIXES, qk_role
from ...model import Convention, EpsSource, NormKind, NormLayer, NormModel, TensorRef
from .hf_config import architecture_of, config_value, model_type_of, tower_config


def natural(name: str) -> list:
    """Sort key putting model.layers.2 before model.layers.10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _group_modules(refs: dict[str, TensorRef]) -> dict[str, dict[str, TensorRef]]:
    modules: dict[str, dict[str, TensorRef]] = {}
    for name, ref in refs.items():
        prefix, _, suffix = name.rpartition(".")
        if not prefix or suffix not in NORM_TENSOR_SUFFIXES:
            continue
        if not NORM_MODULE_RE.search(prefix.rsplit(".", 1)[-1]):
            continue
        modules.setdefault(prefix, {})[suffix] = ref
    out = {}
    for prefix, parts in modules.items():
        w = parts.get("weight")
        if w is None and "running_var" not in parts:
            continue
        if w is not None and len(w.shape) != 1:
            continue  # not a norm's per-channel scale
        out[prefix] = parts
    return out


def norms_from_tensors(refs: dict[str, TensorRef], config: dict[str, Any] | None = None) -> list[NormLayer]:
    """Find norm layers in a flat name -> tensor mapping (a state_dict), with eps from an HF config."""
    config = config or {}
    model_type = model_type_of(config) if config else None
    top_type = config.get("model_type") if config else None
    top_type = top_type if isinstance(top_type, str) else None  # a hostile config may hold anything there
    text_kind = hf_facts.NORM_KIND.get(model_type or "") or hf_facts.NORM_KIND.get(top_type or "")
    text_one_plus = (model_type in hf_facts.ONE_PLUS_MODEL_TYPES) or (top_type in hf_facts.ONE_PLUS_MODEL_TYPES)
    norms: list[NormLayer] = []
    for prefix, parts in sorted(_group_modules(refs).items(), key=lambda kv: natural(kv[0])):
        last = prefix.rsplit(".", 1)[-1]
        notes: list[str] = []
        arch_kind, one_plus = text_kind, text_one_plus
        tower = tower_config(config, prefix) if config else None
        if tower and not set(prefix.split(".")) & set(hf_facts.PROJECTOR_MODULES):
            # a vision / audio tower is its own model type (a Gemma 3 VLM's SigLIP tower: plain LayerNorms)
            tower_type = config[tower].get("model_type")
            tower_type = tower_type if isinstance(tower_type, str) else ""
            arch_kind = hf_facts.NORM_KIND.get(tower_type)
            one_plus = tower_type in hf_facts.ONE_PLUS_MODEL_TYPES
        if "running_var" in parts or "running_mean" in parts:
            kind = NormKind.BATCH_NORM
        elif GROUP_NORM_RE.search(last):
            kind = NormKind.GROUP_NORM
        elif INSTANCE_NORM_RE.search(last):
            kind = NormKind.INSTANCE_NORM
        elif arch_kind is not None:
            kind = NormKind.LAYER_NORM if "bias" in parts else arch_kind
        else:
            kind = NormKind.LAYER_NORM if "bias" in parts else NormKind.RMS_NORM
            notes.append("kind guessed from the tensors (bias -> LayerNorm, none -> RMSNorm): "
                         + ("a model type normaudit's tables do not list" if config else "no config"))
        # outside the families the tables list, kind and eps are guesses (a ConvNeXt LayerNorm hard-codes its eps,
        # a wav2vec2 'layer_norm' may be a GroupNorm): only the module itself would tell
        guessed = () if arch_kind is not None or kind is NormKind.BATCH_NORM else ("kind", "eps")
        eps, source, detail, key = None, EpsSource.UNKNOWN, "", ""
        hit = config_value(config, hf_facts.EPS_KEYS.get(kind, ()), tower) if config else None
        if hit is not None:
            eps, source, detail, key = float(np.float32(hit[0])), EpsSource.HF_CONFIG, f"config.json {hit[1]}", hit[1]
        elif not config:
            detail = "a state_dict stores no eps: pass a config or a .pt2 / module to know it"
        convention = Convention.SCALE
        if one_plus and kind in (NormKind.RMS_NORM, NormKind.LAYER_NORM) \
                and not prefix.endswith(hf_facts.ONE_PLUS_EXCEPTIONS):
            convention = Convention.ONE_PLUS
        norms.append(NormLayer(
            id=prefix, kind=kind, eps=eps, eps_source=source, eps_detail=detail, eps_key=key,
            weight=parts.get("weight"), bias=parts.get("bias"),
            running_mean=parts.get("running_mean"), running_var=parts.get("running_var"),
            convention=convention, convention_known=bool(config), module=prefix, notes=notes, role=qk_role(prefix),
            guessed=guessed,
        ))
    return norms


def model_from_tensors(path: Path, container: str, refs: dict[str, TensorRef],
                       config: dict[str, Any] | None, config_dir: Path | None = None,
                       trust_remote_code: bool = False) -> NormModel:
    """A NormModel of a checkpoint (flat tensors).  With a config.json, the architecture it describes is built
    (meta device, cached) and its norm modules are read from what they are; else, or without transformers, the
    norms are found by tensor names and shapes, eps from the config — and the model's notes say which."""
    norms, how, linear_ops = None, "", []
    if config and config_dir is not None:
        from .hf_arch import layers_from_facts, linear_ops_from_facts, module_facts

        facts, how, convs = module_facts(config_dir, config, list(refs), trust_remote_code)
        if facts is not None:
            norms = sorted(layers_from_facts(facts, refs, config, how), key=lambda n: natural(n.id))
            linear_ops = linear_ops_from_facts(convs, refs)
    model = NormModel(path=str(path), format="pytorch", architecture=architecture_of(config) if config else None,
                      norms=norms if norms is not None else norms_from_tensors(refs, config), container=container,
                      tensors=refs, linear_ops=linear_ops)
    if config:
        model.metadata = {"model_type": model_type_of(config), "config": config,
                          "norms_from": "modules" if norms is not None else "names"}
        if norms is None:
            model.notes.append(f"norms found by tensor names and shapes: {how}" if how else
                               "norms found by tensor names and shapes")
    else:
        model.notes.append("no config.json: eps unknown, kinds guessed from tensor names")
    return model
