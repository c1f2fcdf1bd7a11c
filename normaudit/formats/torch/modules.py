"""Norms of live module objects — TorchScript archives and (only when trusted) pickled nn.Modules — read
from each module's own class and eps attribute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CorruptFile, brief
from ...facts import hf as hf_facts
from ...facts.torch import EPS_ATTRS, ONE_PLUS_CLASS_PREFIXES, module_kind, qk_role
from ...model import Convention, EpsSource, NormKind, NormLayer, NormModel, TensorRef
from .hf_config import config_value
from .names import model_from_tensors
from .pickle_guard import flatten_state
from .tensors import torch_ref


def norms_from_module(root: Any) -> list[NormLayer]:
    """Norm layers of an nn.Module or TorchScript module, eps from the module attributes."""
    norms: list[NormLayer] = []
    for name, mod in root.named_modules():
        cls = str(getattr(mod, "original_name", None) or type(mod).__name__)
        kind = module_kind(cls)
        if kind is None or not name:
            continue
        tensors = {**dict(mod.named_parameters(recurse=False)), **dict(mod.named_buffers(recurse=False))}

        def ref(key: str, tensors: dict = tensors, name: str = name) -> TensorRef | None:
            t = tensors.get(key)
            return torch_ref(f"{name}.{key}", t) if t is not None else None

        eps, attr_name = None, ""
        for a in EPS_ATTRS:
            v = getattr(mod, a, None)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                eps, attr_name = float(np.float32(v)), a
                break
        one_plus = cls.startswith(ONE_PLUS_CLASS_PREFIXES) and kind in (NormKind.RMS_NORM, NormKind.LAYER_NORM)
        norms.append(NormLayer(
            id=name, kind=kind, eps=eps,
            eps_source=EpsSource.MODULE_ATTRIBUTE if eps is not None else EpsSource.UNKNOWN,
            eps_detail=f"{cls}.{attr_name}" if eps is not None else f"{cls} has no eps attribute",
            weight=ref("weight"), bias=ref("bias"), running_mean=ref("running_mean"),
            running_var=ref("running_var"),
            num_groups=getattr(mod, "num_groups", None) if kind is NormKind.GROUP_NORM else None,
            convention=Convention.ONE_PLUS if one_plus else Convention.SCALE,
            module=name, notes=[f"module class {cls}"], role=qk_role(name),
        ))
    return norms


def load_torchscript(path: Path) -> NormModel:
    """TorchScript archives are read by torch.jit.load, which crashes on some crafted files: in a child process."""
    from ...sandbox import load_isolated

    return load_isolated("normaudit.formats.torch.modules:load_torchscript_in_process", path,
                         what="the TorchScript loader (torch.jit.load)")


def load_pickled_module(path: Path) -> NormModel:
    """Only reached with --trust-pickle: full unpickling, in a child process with memory and time limits."""
    from ...sandbox import load_isolated

    return load_isolated("normaudit.formats.torch.modules:load_pickled_in_process", path,
                         what="unpickling (--trust-pickle)")


def load_torchscript_in_process(path: Path) -> NormModel:
    import torch

    try:
        mod = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise CorruptFile(f"{path}: cannot load TorchScript archive ({brief(exc)})") from None
    return NormModel(path=str(path), format="pytorch", architecture=getattr(mod, "original_name", None),
                     norms=norms_from_module(mod), container="torchscript")


def load_pickled_in_process(path: Path) -> NormModel:
    """Full unpickling of an nn.Module or a checkpoint (sandbox child only)."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CorruptFile(f"{path}: cannot unpickle ({brief(exc)})") from None
    if isinstance(obj, torch.nn.Module):
        config = getattr(obj, "config", None)
        norms = norms_from_module(obj)
        if config is not None and hasattr(config, "to_dict"):
            cfg = config.to_dict()
            for n in norms:
                if n.eps is None:
                    hit = config_value(cfg, hf_facts.EPS_KEYS.get(n.kind, ()))
                    if hit:
                        n.eps, n.eps_source, n.eps_detail = float(np.float32(hit[0])), EpsSource.HF_CONFIG, hit[1]
        model = NormModel(path=str(path), format="pytorch", architecture=type(obj).__name__, norms=norms,
                          container="module")
        return model
    return model_from_tensors(path, "state_dict", flatten_state(obj, path), None)
