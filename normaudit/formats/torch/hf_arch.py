"""Norm layers of a Hugging Face checkpoint read from what the model *is*: the architecture built from its
config.json on the meta device (no weights, no remote code unless trusted), every norm module found by its own
class and eps attribute, its kind and convention decided by probing what a small real copy of the module
computes, and its tensors mapped to checkpoint keys through transformers' own conversion mapping.

Building the architecture needs torch + transformers (and a couple of seconds), so the facts are cached per
config.json (and transformers version) in ``$NORMAUDIT_CACHE`` (default ``~/.cache/normaudit``): later runs
need neither.  Without transformers the name/shape tables of :mod:`.names` are used, and the model says so.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ... import kernels
from ...facts.hf import EPS_KEYS
from ...facts.torch import EPS_ATTRS, module_kind, qk_role
from ...model import Convention, EpsSource, LinearOp, NormKind, NormLayer, TensorRef
from .hf_config import config_value, tower_config

CACHE_VERSION = 2


@dataclass
class ModuleFact:
    """One norm module of the architecture, as probed."""

    module: str  # module path in the model (transformers naming)
    cls: str
    kind: str
    eps: float | None
    eps_attr: str
    convention: str  # w | 1+w
    axis: list[int]
    num_groups: int | None
    tensors: dict[str, str]  # weight / bias / running_mean / running_var -> checkpoint key
    how: str  # probed | class
    notes: list[str] = field(default_factory=list)
    producer: str = ""  # the conv / linear module whose output this (batch) norm normalizes, when traced


@dataclass
class LinearFact:
    """A conv / linear of the architecture (where a BatchNorm can be folded to)."""

    module: str
    op: str  # conv | conv_transpose | linear
    weight: str  # checkpoint key
    bias: str | None
    out_axis: int = 0
    groups: int = 1


def cache_dir() -> Path:
    root = os.environ.get("NORMAUDIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "normaudit")
    return Path(root)


def _version(pkg: str) -> str | None:
    try:
        if importlib.util.find_spec(pkg) is None:  # cheap: a core install answers without importlib.metadata
            return None
        from importlib import metadata

        return metadata.version(pkg)
    except (ImportError, ValueError):  # metadata.PackageNotFoundError is an ImportError
        return None


def module_facts(model_dir: Path, config: dict[str, Any], checkpoint_keys: list[str],
                 trust_remote_code: bool = False) -> tuple[list[ModuleFact] | None, str, list[LinearFact]]:
    """The norm modules of the architecture and, when it has BatchNorms, its convs (cached); or (None, why not)."""
    if os.environ.get("NORMAUDIT_ARCHITECTURE", "1") == "0":
        return None, "reading the architecture is switched off (NORMAUDIT_ARCHITECTURE=0)", []
    tf, torch_v = _version("transformers"), _version("torch")
    if tf is None or torch_v is None:
        return (None, "transformers/torch not installed (pip install 'normaudit[activations]' to read the model's own modules)",
                [])
    key_src = json.dumps({"v": CACHE_VERSION, "tf": tf, "config": config, "keys": sorted(checkpoint_keys),
                          "remote": trust_remote_code}, sort_keys=True, default=str)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:32]
    path = cache_dir() / "arch" / f"{key}.json"
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
            return ([ModuleFact(**d) for d in doc["facts"]], doc["how"],
                    [LinearFact(**d) for d in doc.get("convs", [])])
        except (ValueError, TypeError, KeyError, OSError):
            pass  # a broken cache entry is rebuilt
    from ...errors import NormauditError
    from ...sandbox import call_isolated

    try:  # in a child process: a static audit never imports torch / transformers itself
        doc = call_isolated("normaudit.formats.torch.hf_arch:build_facts",
                            {"model_dir": str(model_dir), "checkpoint_keys": list(checkpoint_keys),
                             "trust_remote_code": trust_remote_code},
                            label=model_dir, what="building the architecture from config.json")
    except NormauditError as exc:
        return None, f"the architecture could not be built ({exc})", []
    if not isinstance(doc, dict) or "error" in doc:
        return None, str((doc or {}).get("error", "the architecture could not be built")), []
    facts = [ModuleFact(**d) for d in doc["facts"]]
    convs = [LinearFact(**d) for d in doc["convs"]]
    how = doc["how"]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"facts": [f.__dict__ for f in facts], "how": how,
                                   "convs": [c.__dict__ for c in convs]}))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs time
    return facts, how, convs


class _Unbuildable(Exception):
    pass


def build_facts(model_dir: str, checkpoint_keys: list[str], trust_remote_code: bool) -> dict[str, Any]:
    """The architecture's norm modules and convs as JSON (runs in the sandbox child, which imports torch)."""
    try:
        facts, how, convs = _build(Path(model_dir), checkpoint_keys, trust_remote_code)
    except _Unbuildable as exc:
        return {"error": str(exc)}
    return {"facts": [f.__dict__ for f in facts], "how": how, "convs": [c.__dict__ for c in convs]}


def _build(model_dir: Path, checkpoint_keys: list[str], trust_remote_code: bool
           ) -> tuple[list[ModuleFact], str, list[LinearFact]]:
    import torch

    from ...activations.runners.hf import meta_module
    from ...errors import NormauditError

    try:
        module = meta_module(model_dir, trust_remote_code=trust_remote_code)
    except NormauditError as exc:
        raise _Unbuildable(f"transformers cannot build this architecture ({exc})") from None
    key_map = _checkpoint_names(module, checkpoint_keys)
    facts: list[ModuleFact] = []
    for name, mod in module.named_modules():
        fact = _fact(name, mod, key_map, torch)
        if fact is not None:
            facts.append(fact)
    how = f"modules of {type(module).__name__} built from config.json (transformers {_version('transformers')})"
    convs: list[LinearFact] = []
    if any(f.kind == NormKind.BATCH_NORM.value for f in facts):  # where each BatchNorm could be folded to
        convs = _linears(module, key_map, torch)
        producers = _trace_producers(module, torch)
        for f in facts:
            f.producer = producers.get(f.module, "")
        if not producers:
            how += "; the conv feeding each BatchNorm could not be traced"
    return facts, how, convs


def _linears(module: Any, key_map: dict[str, str], torch: Any) -> list[LinearFact]:
    nn = torch.nn
    out = []
    for name, mod in module.named_modules():
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):
            op, axis, groups = "conv_transpose", 1, int(mod.groups)
        elif isinstance(mod, nn.modules.conv._ConvNd):
            op, axis, groups = "conv", 0, 1
        elif isinstance(mod, nn.Linear):
            op, axis, groups = "linear", 0, 1
        else:
            continue
        w = key_map.get(f"{name}.weight")
        if w is None:
            continue
        b = key_map.get(f"{name}.bias") if getattr(mod, "bias", None) is not None else None
        out.append(LinearFact(name, op, w, b, axis, groups))
    return out


def _dummy_inputs(module: Any, torch: Any) -> dict[str, Any] | None:
    """A meta-device input the model's forward accepts, from its signature and config."""
    import inspect as _inspect

    params = _inspect.signature(module.forward).parameters
    cfg = module.config
    meta = torch.device("meta")
    if "pixel_values" in params:
        size = getattr(cfg, "image_size", 64)
        size = size if isinstance(size, int) else int(size[0])
        return {"pixel_values": torch.zeros((1, int(getattr(cfg, "num_channels", 3)), size, size), device=meta)}
    if "input_values" in params:
        return {"input_values": torch.zeros((1, 16000), device=meta)}
    if "input_features" in params:
        return {"input_features": torch.zeros((1, int(getattr(cfg, "num_mel_bins", 80)),
                                               2 * int(getattr(cfg, "max_source_positions", 1500))), device=meta)}
    if "input_ids" in params:
        return {"input_ids": torch.zeros((1, 8), dtype=torch.long, device=meta)}
    return None


def _trace_producers(module: Any, torch: Any) -> dict[str, str]:
    """BatchNorm module path -> the conv / linear module whose output it normalizes: a forward pass on the meta
    device (no data, no memory) follows which module's output tensor each BatchNorm receives."""
    nn = torch.nn
    inputs = _dummy_inputs(module, torch)
    if inputs is None:
        return {}
    module = module.to("meta")
    made: dict[int, str] = {}
    found: dict[str, str] = {}
    handles = []
    for name, mod in module.named_modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            handles.append(mod.register_forward_hook(lambda m, a, out, n=name: made.__setitem__(id(out), n)))
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            handles.append(mod.register_forward_pre_hook(
                lambda m, a, n=name: found.__setitem__(n, made.get(id(a[0]), "")) if a else None))
    try:
        with torch.no_grad():
            module(**inputs)
    except Exception:  # an architecture the meta device cannot run: no producers, folds matched by names
        return {}
    finally:
        for h in handles:
            h.remove()
    return {k: v for k, v in found.items() if v}


def _checkpoint_names(module: Any, checkpoint_keys: list[str]) -> dict[str, str]:
    """model parameter name -> checkpoint key, through the model's own conversion mapping (renames only)."""
    names = {n for n, _ in module.named_parameters(remove_duplicate=False)} | {n for n, _ in module.named_buffers()}
    out = {k: k for k in checkpoint_keys if k in names}
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        mapping = get_model_conversion_mapping(module)
        renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
        converters = [m for m in mapping if isinstance(m, WeightConverter)]
        meta = dict.fromkeys(names, True)
        prefix = getattr(module, "base_model_prefix", None)
        for key in checkpoint_keys:
            renamed, _ = rename_source_key(key, renamings, converters, prefix, meta)
            if renamed in names:
                out.setdefault(renamed, key)
    except Exception:  # an internal transformers API: without it, identical names still map
        pass
    return out


def _eps_of(mod: Any) -> tuple[float | None, str]:
    for a in EPS_ATTRS:
        v = getattr(mod, a, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v), a
    return None, ""


def _torch_kind(mod: Any, torch: Any) -> NormKind | None:
    """The kind of torch.nn's own norm classes (and their subclasses)."""
    nn = torch.nn
    for cls, kind in ((nn.LayerNorm, NormKind.LAYER_NORM), (getattr(nn, "RMSNorm", ()), NormKind.RMS_NORM),
                      (nn.GroupNorm, NormKind.GROUP_NORM), (nn.modules.batchnorm._BatchNorm, NormKind.BATCH_NORM),
                      (nn.modules.instancenorm._InstanceNorm, NormKind.INSTANCE_NORM)):
        if cls and isinstance(mod, cls):
            return kind
    return None


def _fact(name: str, mod: Any, key_map: dict[str, str], torch: Any) -> ModuleFact | None:
    params = dict(mod.named_parameters(recurse=False))
    buffers = dict(mod.named_buffers(recurse=False))
    cls = type(mod).__name__
    eps, eps_attr = _eps_of(mod)
    kind = _torch_kind(mod, torch)
    if kind is None:
        if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding, torch.nn.modules.conv._ConvNd)):
            return None
        if "weight" not in params and "bias" not in params:
            return None
        if not ("norm" in cls.lower() or eps is not None):
            return None
    tensors = {}
    for t in ("weight", "bias", "running_mean", "running_var"):
        if t in params or t in buffers:
            full = f"{name}.{t}"
            tensors[t] = key_map.get(full, full)
    notes: list[str] = []
    fact = ModuleFact(module=name, cls=cls, kind=(kind or module_kind(cls) or NormKind.LAYER_NORM).value, eps=eps,
                      eps_attr=eps_attr, convention="w", axis=[-1], num_groups=None, tensors=tensors, how="class",
                      notes=notes)
    if kind in (NormKind.BATCH_NORM, NormKind.GROUP_NORM, NormKind.INSTANCE_NORM):
        fact.axis = [1]
        fact.num_groups = int(getattr(mod, "num_groups", 0) or 0) or None
        return fact
    probed = _probe(mod, params, eps, torch)
    if probed is None:
        if kind is None and module_kind(cls) is None:
            return None  # neither a known norm class nor computing a norm
        notes.append(f"{cls} could not be probed on a plain input: kind taken from its class")
        return fact
    fact.kind, fact.convention, fact.axis, eps_note = probed
    fact.how = "probed"
    if eps_note:
        notes.append(eps_note)
    return fact


def _probe(mod: Any, params: dict[str, Any], eps: float | None, torch: Any
           ) -> tuple[str, str, list[int], str] | None:
    """What a real copy of the module computes on known inputs: (kind, convention, axis, eps note) or None."""
    w_meta = params.get("weight")
    if w_meta is None or w_meta.dim() not in (1, 2):
        return None
    try:
        probe = copy.deepcopy(mod).to_empty(device="cpu").float()
    except Exception:
        return None
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = probe.weight
        w.copy_(0.5 + torch.rand(w.shape, generator=gen))
        if getattr(probe, "bias", None) is not None and isinstance(probe.bias, torch.nn.Parameter):
            probe.bias.copy_(0.1 * torch.randn(probe.bias.shape, generator=gen))
    wn = w.detach().numpy().astype(np.float32)
    bn = probe.bias.detach().numpy().astype(np.float32) if isinstance(getattr(probe, "bias", None),
                                                                         torch.nn.Parameter) else None
    shape = (2, 3) + tuple(w.shape)
    x = torch.randn(shape, generator=gen)
    try:
        with torch.no_grad():
            y = probe(x)
    except Exception:
        return None
    y = y[0] if isinstance(y, (tuple, list)) else y
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != shape:
        return None
    yn, xn = y.detach().float().numpy(), x.numpy()
    e = eps if eps is not None else 1e-6
    axes_options = [(-1,)] + ([(-2,)] if w.dim() == 2 else [])
    for axis in axes_options:
        for kind, one_plus in (("rms_norm", False), ("rms_norm", True), ("layer_norm", False), ("layer_norm", True)):
            ref = (kernels.rms_norm(xn, wn, e, one_plus, axis=axis) if kind == "rms_norm"
                   else kernels.layer_norm(xn, wn, bn, e, one_plus, axis=axis))
            if np.allclose(yn, ref, rtol=1e-4, atol=1e-5):
                return kind, "1+w" if one_plus else "w", list(axis), _check_eps(probe, kind, one_plus, axis, wn, bn,
                                                                                   eps, torch)
    return None


def _check_eps(probe: Any, kind: str, one_plus: bool, axis: tuple[int, ...], wn: np.ndarray,
               bn: np.ndarray | None, eps: float | None, torch: Any) -> str:
    """On a tiny input eps dominates: does the module's own eps attribute reproduce its output?"""
    x = 1e-4 * torch.randn((2, 3) + tuple(wn.shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = probe(x)
    y = (y[0] if isinstance(y, (tuple, list)) else y).float().numpy()
    xn = x.numpy()

    def out(e: float) -> np.ndarray:
        return (kernels.rms_norm(xn, wn, e, one_plus, axis=axis) if kind == "rms_norm"
                else kernels.layer_norm(xn, wn, bn, e, one_plus, axis=axis))

    if eps is not None and np.allclose(y, out(eps), rtol=1e-3, atol=1e-6):
        return ""
    return (f"its eps attribute ({eps}) does not reproduce its output on a small input" if eps is not None else
            "no eps attribute found")


def linear_ops_from_facts(convs: list[LinearFact], refs: dict[str, TensorRef]) -> list[LinearOp]:
    return [LinearOp(c.module, c.op, refs[c.weight], refs.get(c.bias) if c.bias else None, c.module,
                     out_axis=c.out_axis, groups=c.groups) for c in convs if c.weight in refs]


def layers_from_facts(facts: list[ModuleFact], refs: dict[str, TensorRef], config: dict[str, Any],
                      how: str) -> list[NormLayer]:
    """NormLayer records from probed module facts, with the checkpoint's tensors."""
    norms = []
    for f in facts:
        kind = NormKind(f.kind)
        tensors = {t: refs.get(k) for t, k in f.tensors.items()}
        eps = None if f.eps is None else float(np.float32(f.eps))
        detail, eps_key = f"{f.cls}.{f.eps_attr}", ""
        hit = config_value(config, EPS_KEYS.get(kind, ()), tower_config(config, f.module))
        notes = list(f.notes) + [f"module class {f.cls} ({'probed' if f.how == 'probed' else 'by class'})"]
        if eps is not None and hit is not None and float(np.float32(hit[0])) == eps:
            detail, eps_key = f"{f.cls}.{f.eps_attr} = config.json {hit[1]}", hit[1]
        elif eps is not None and hit is not None:
            notes.append(f"the module hard-codes eps {eps:g}; config.json {hit[1]} says {hit[0]:g} (not used)")
        norms.append(NormLayer(
            id=f.module, kind=kind, eps=eps,
            eps_source=EpsSource.MODULE_ATTRIBUTE if eps is not None else EpsSource.UNKNOWN,
            eps_detail=detail if eps is not None else f"{f.cls} has no eps attribute", eps_key=eps_key,
            weight=tensors.get("weight"), bias=tensors.get("bias"), running_mean=tensors.get("running_mean"),
            running_var=tensors.get("running_var"), num_groups=f.num_groups, axis=tuple(f.axis),
            convention=Convention(f.convention), module=f.module, role=qk_role(f.module), notes=notes,
            producer=f.producer,
        ))
    return norms
