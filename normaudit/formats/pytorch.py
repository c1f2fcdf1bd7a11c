"""PyTorch loaders: state_dict files, safetensors, Hugging Face directories, torch.export (.pt2),
TorchScript archives and (only when trusted) pickled nn.Modules."""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import CorruptFile, NormauditError, UntrustedPickle, brief
from ..model import (Convention, EpsSource, LinearOp, NormKind, NormLayer, NormModel, TensorRef, dtype_name,
                     unique_ids)
from ..tables import (GROUP_NORM_RE, HF_EPS_KEYS, HF_NORM_KIND, HF_ONE_PLUS_MODEL_TYPES, INSTANCE_NORM_RE,
                      NORM_MODULE_RE, NORM_TENSOR_SUFFIXES, qk_role)

PICKLE_HINT = ("pass --trust-pickle only if you trust where this file came from (unpickling can run arbitrary "
               "code); or re-save it as a state_dict / safetensors")


# -- tensors ----------------------------------------------------------------------------------------

def _torch_ref(name: str, tensor: Any) -> TensorRef:
    shape = tuple(int(d) for d in tensor.shape)

    def load(t: Any = tensor) -> np.ndarray:
        return t.detach().to(dtype=__import__("torch").float32).cpu().numpy()

    return TensorRef(name, shape, dtype_name(tensor.dtype), load)


def _safetensors_refs(files: Iterable[Path]) -> dict[str, TensorRef]:
    """Lazy refs over one or more safetensors files (header read now, tensors on demand)."""
    from safetensors import safe_open

    refs: dict[str, TensorRef] = {}
    for path in files:
        _check_safetensors_header(path)
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():
                    sl = fh.get_slice(key)
                    shape = tuple(int(d) for d in sl.get_shape())
                    dtype = str(sl.get_dtype())

                    def load(p: Path = path, k: str = key) -> np.ndarray:
                        import torch

                        with safe_open(str(p), framework="pt") as f2:
                            return f2.get_tensor(k).to(torch.float32).numpy()

                    refs[key] = TensorRef(key, shape, dtype, load)
        except NormauditError:
            raise
        except Exception as exc:
            raise CorruptFile(f"{path}: corrupt safetensors file ({type(exc).__name__}: {exc})") from None
    return refs


def _check_safetensors_header(path: Path) -> None:
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        raise CorruptFile(f"{path}: truncated safetensors file ({size} bytes)")
    n = int.from_bytes(head[:8], "little")
    if n > size - 8 or n > 100 * 2**20 or head[8:9] != b"{":
        raise CorruptFile(f"{path}: corrupt safetensors header (claims {n} header bytes in a {size}-byte file)")


# -- finding norms by name ------------------------------------------------------------------------

def _natural(name: str) -> list:
    """Sort key putting model.layers.2 before model.layers.10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _group_modules(refs: dict[str, TensorRef]) -> dict[str, dict[str, TensorRef]]:
    modules: dict[str, dict[str, TensorRef]] = {}
    for name, ref in refs.items():
        prefix, _, suffix = name.rpartition(".")
        if not prefix or suffix not in NORM_TENSOR_SUFFIXES:
            continue
        last = prefix.rsplit(".", 1)[-1]
        if not NORM_MODULE_RE.search(last):
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


def _config_value(config: dict[str, Any], keys: Iterable[str]) -> tuple[float, str] | None:
    scopes = [("", config)] + [(f"{k}.", config[k]) for k in ("text_config", "language_config", "llm_config")
                               if isinstance(config.get(k), dict)]
    for key in keys:
        for prefix, scope in scopes:
            value = scope.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value), prefix + key
    return None


def model_type_of(config: dict[str, Any]) -> str | None:
    """The language model's ``model_type`` (``text_config`` of multimodal configs first)."""
    text = config.get("text_config")
    if isinstance(text, dict) and isinstance(text.get("model_type"), str):
        return text["model_type"]
    mt = config.get("model_type")
    return mt if isinstance(mt, str) else None


def norms_from_tensors(refs: dict[str, TensorRef], config: dict[str, Any] | None = None) -> list[NormLayer]:
    """Find norm layers in a flat name -> tensor mapping (a state_dict), with eps from an HF config."""
    config = config or {}
    model_type = model_type_of(config) if config else None
    top_type = config.get("model_type") if config else None
    arch_kind = HF_NORM_KIND.get(model_type or "") or HF_NORM_KIND.get(top_type or "")
    one_plus = (model_type in HF_ONE_PLUS_MODEL_TYPES) or (top_type in HF_ONE_PLUS_MODEL_TYPES)
    norms: list[NormLayer] = []
    for prefix, parts in sorted(_group_modules(refs).items(), key=lambda kv: _natural(kv[0])):
        last = prefix.rsplit(".", 1)[-1]
        notes: list[str] = []
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
            notes.append("kind guessed from the tensors (bias -> LayerNorm, none -> RMSNorm): no config")
        eps, source, detail = None, EpsSource.UNKNOWN, ""
        hit = _config_value(config, HF_EPS_KEYS.get(kind, ())) if config else None
        if hit is not None:
            eps, source, detail = float(np.float32(hit[0])), EpsSource.HF_CONFIG, f"config.json {hit[1]}"
        elif not config:
            detail = "a state_dict stores no eps: pass a config or a .pt2 / module to know it"
        convention = Convention.SCALE
        if one_plus and kind in (NormKind.RMS_NORM, NormKind.LAYER_NORM) and not prefix.endswith("linear_attn.norm"):
            convention = Convention.ONE_PLUS
        layer = NormLayer(
            id=prefix, kind=kind, eps=eps, eps_source=source, eps_detail=detail,
            weight=parts.get("weight"), bias=parts.get("bias"),
            running_mean=parts.get("running_mean"), running_var=parts.get("running_var"),
            convention=convention, convention_known=bool(config), module=prefix, notes=notes,
        )
        layer.role = qk_role(prefix)
        norms.append(layer)
    return norms


# -- containers ------------------------------------------------------------------------------------

def load_safetensors(path: Path, config_path: Path | None = None) -> NormModel:
    config = _read_config(config_path) if config_path else None
    if config is None and (path.parent / "config.json").is_file():
        config = _read_config(path.parent / "config.json")
    refs = _safetensors_refs([path])
    return _model(path, "safetensors", refs, config)


def load_hf_dir(path: Path) -> NormModel:
    config_file = path / "config.json"
    config = _read_config(config_file) if config_file.is_file() else None
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = _read_json(index)["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptFile(f"{index}: unreadable safetensors index ({exc})") from None
        files = []
        for name in dict.fromkeys(weight_map.values()):
            f = (path / name).resolve()
            if path.resolve() not in f.parents or not f.is_file():
                raise CorruptFile(f"{index}: shard {name!r} is missing or outside the model folder")
            files.append(f)
        refs = _safetensors_refs(files)
    elif sorted(path.glob("*.safetensors")):
        refs = _safetensors_refs(sorted(path.glob("*.safetensors")))
    elif (path / "pytorch_model.bin").is_file():
        refs = _state_dict_refs(path / "pytorch_model.bin")
    else:
        raise NormauditError(f"{path}: directory has no model.safetensors, safetensors index or pytorch_model.bin",
                             hint="point normaudit at a Hugging Face model folder or a model file")
    model = _model(path, "hf_dir", refs, config)
    return model


_MAX_JSON_BYTES = 64 * 2**20  # config.json / index files are kilobytes; refuse absurd ones before parsing


def _read_json(path: Path) -> Any:
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise CorruptFile(f"{path}: {path.stat().st_size} bytes is too large for a config/index JSON file")
    return json.loads(path.read_text())


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = _read_json(path)
    except (OSError, ValueError) as exc:
        raise CorruptFile(f"{path}: unreadable config.json ({exc})") from None
    if not isinstance(config, dict):
        raise CorruptFile(f"{path}: config.json is not a JSON object")
    return config


def _model(path: Path, container: str, refs: dict[str, TensorRef], config: dict[str, Any] | None) -> NormModel:
    norms = norms_from_tensors(refs, config)
    arch = None
    if config:
        archs = config.get("architectures")
        arch = archs[0] if isinstance(archs, list) and archs else model_type_of(config)
    model = NormModel(path=str(path), format="pytorch", architecture=arch, norms=norms, container=container,
                      tensors=refs)
    if config:
        model.metadata = {"model_type": model_type_of(config), "config": config}
    else:
        model.notes.append("no config.json: eps unknown, kinds guessed from tensor names")
    return model


def _state_dict_refs(path: Path) -> dict[str, TensorRef]:
    import torch

    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UntrustedPickle(
            f"{path}: refused to unpickle: the file holds more than tensors "
            f"({brief(exc, 160)}) and loading it could run arbitrary code",
            hint=PICKLE_HINT) from None
    except Exception as exc:
        raise CorruptFile(f"{path}: corrupt or truncated PyTorch file ({brief(exc)})") from None
    return _flatten_state(obj, path)


def _flatten_state(obj: Any, path: Path) -> dict[str, TensorRef]:
    import torch

    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # training checkpoints
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict) and not any(
            isinstance(v, torch.Tensor) for v in obj.values()):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise NormauditError(f"{path}: not a state_dict (found {type(obj).__name__})")
    return {str(k): _torch_ref(str(k), v) for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_state_dict(path: Path, config_path: Path | None = None, trust_pickle: bool = False) -> NormModel:
    try:
        refs = _state_dict_refs(path)
    except UntrustedPickle:
        if not trust_pickle:
            raise
        return load_pickled_module(path)
    config = _read_config(config_path) if config_path else None
    if config is None and (path.parent / "config.json").is_file():
        config = _read_config(path.parent / "config.json")
    return _model(path, "state_dict", refs, config)


# -- torch.export ---------------------------------------------------------------------------------

# aten op -> (kind, index of weight, index of bias, index of eps, index of running mean, running var, groups)
_ATEN_NORMS: dict[str, tuple[NormKind, int | None, int | None, int, int | None, int | None, int | None]] = {
    "aten.layer_norm.default": (NormKind.LAYER_NORM, 2, 3, 4, None, None, None),
    "aten.native_layer_norm.default": (NormKind.LAYER_NORM, 2, 3, 4, None, None, None),
    "aten.rms_norm.default": (NormKind.RMS_NORM, 2, None, 3, None, None, None),
    "aten._fused_rms_norm.default": (NormKind.RMS_NORM, 2, None, 3, None, None, None),
    "aten.batch_norm.default": (NormKind.BATCH_NORM, 1, 2, 7, 3, 4, None),
    "aten._native_batch_norm_legit_no_training.default": (NormKind.BATCH_NORM, 1, 2, 6, 3, 4, None),
    "aten._native_batch_norm_legit.default": (NormKind.BATCH_NORM, 1, 2, 7, 3, 4, None),
    "aten.native_batch_norm.default": (NormKind.BATCH_NORM, 1, 2, 7, 3, 4, None),
    "aten.group_norm.default": (NormKind.GROUP_NORM, 2, 3, 4, None, None, 1),
    "aten.native_group_norm.default": (NormKind.GROUP_NORM, 1, 2, 7, None, None, 6),
    "aten.instance_norm.default": (NormKind.INSTANCE_NORM, 1, 2, 7, 3, 4, None),
}
_ATEN_DEFAULT_EPS = 1e-5
_ATEN_LINEAR = {"aten.conv2d.default": "conv", "aten.conv1d.default": "conv", "aten.conv3d.default": "conv",
                "aten.convolution.default": "conv", "aten.linear.default": "linear"}


def check_pt2_archive(path: Path) -> None:
    """Refuse .pt2 archives whose loading would unpickle arbitrary objects.

    torch.export.load unpickles (weights_only=False) any weight or constant marked ``use_pickle``, custom and
    opaque object constants, legacy ``.pt`` payloads, and falls back to a full unpickle of sample inputs that
    a weights_only load rejects.  Archives written by torch.export.save for plain tensors use none of these.
    """
    import torch

    reasons: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for name in names:
                if name.endswith(("data/weights/model_weights_config.json",
                                  "data/constants/model_constants_config.json")):
                    info = zf.getinfo(name)
                    if info.file_size > 64 * 2**20:
                        reasons.append(f"{name} is {info.file_size} bytes")
                        continue
                    config = json.loads(zf.read(name)).get("config", {})
                    for fqn, meta in (config.items() if isinstance(config, dict) else []):
                        path_name = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
                        if not isinstance(meta, dict) or meta.get("use_pickle"):
                            reasons.append(f"{fqn} is stored as a pickle")
                        elif path_name.startswith(("custom_obj", "opaque_obj")):
                            reasons.append(f"{fqn} is a pickled {path_name.split('_', 1)[0]} object")
                elif "/data/weights/" in name and name.endswith(".pt") or \
                        "/data/constants/" in name and name.endswith(".pt"):
                    reasons.append(f"{name} is a legacy pickled payload")
            for name in names:
                if "/data/sample_inputs/" in name and name.endswith(".pt"):
                    try:
                        torch.load(io.BytesIO(zf.read(name)), weights_only=True)
                    except Exception:
                        reasons.append(f"{name} needs a full unpickle")
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        raise CorruptFile(f"{path}: corrupt .pt2 archive ({brief(exc)})") from None
    if reasons:
        raise UntrustedPickle(f"{path}: refused to load: {reasons[0]}" +
                              (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "") +
                              "; torch.export.load would unpickle it, which can run arbitrary code",
                              hint=PICKLE_HINT)


def load_export(path: Path, trust_pickle: bool = False) -> NormModel:
    import torch

    if not trust_pickle:
        check_pt2_archive(path)
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        raise CorruptFile(f"{path}: cannot load torch.export program ({brief(exc)})") from None
    sig = ep.graph_signature
    placeholder_to_state = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    placeholder_to_state.update(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    state = dict(ep.state_dict)
    state.update(getattr(ep, "constants", {}) or {})

    def ref_for(arg: Any) -> TensorRef | None:
        if not isinstance(arg, torch.fx.Node):
            return None
        name = placeholder_to_state.get(arg.name)
        if name is None or name not in state:
            return None
        return _torch_ref(name, state[name])

    norms: list[NormLayer] = []
    linear_ops: dict[str, LinearOp] = {}  # fx node name -> op
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if target in _ATEN_LINEAR:
            w = ref_for(node.args[1]) if len(node.args) > 1 else None
            if w is not None:
                b = ref_for(node.args[2]) if len(node.args) > 2 else None
                module = _module_path(node) or w.name.rsplit(".", 1)[0]
                linear_ops[node.name] = LinearOp(module, _ATEN_LINEAR[target], w, b, module, [node.name])
            continue
        spec = _ATEN_NORMS.get(target)
        if spec is not None:
            layer = _export_norm(node, target, spec, ref_for)
            src = node.args[0] if node.args else None
            layer.input_name = getattr(src, "name", "")
            layer.output_name = node.name
            if "native" in target or "legit" in target:  # tuple results: the output is getitem 0
                for user in node.users:
                    if str(user.target) == "<built-in function getitem>" and user.args[1] == 0:
                        layer.output_name = user.name
            if getattr(src, "name", None) in linear_ops:
                layer.producer = linear_ops[src.name].id
            norms.append(layer)
            continue
        layer = _export_decomposed_rms(node, ref_for)
        if layer is not None:
            norms.append(layer)
    unique_ids(norms)
    return NormModel(path=str(path), format="pytorch", architecture=_export_arch(ep), norms=norms,
                     container="torch_export", linear_ops=list(linear_ops.values()))


def _arg(node: Any, idx: int | None, name: str) -> Any:
    if idx is None:
        return None
    if len(node.args) > idx:
        return node.args[idx]
    return node.kwargs.get(name)


def _module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path).replace("L['self'].", "").replace("L__self__.", "")


def _export_norm(node: Any, target: str, spec: tuple, ref_for: Any) -> NormLayer:
    kind, wi, bi, ei, mi, vi, gi = spec
    weight, bias = ref_for(_arg(node, wi, "weight")), ref_for(_arg(node, bi, "bias"))
    eps_arg = _arg(node, ei, "eps")
    notes: list[str] = []
    if eps_arg is None:
        if kind is NormKind.RMS_NORM:
            eps, detail = None, f"{target}: eps=None (torch uses finfo(input dtype).eps)"
            notes.append("rms_norm called with eps=None: torch substitutes the input dtype's machine epsilon")
        else:
            eps, detail = _ATEN_DEFAULT_EPS, f"{target} default eps"
    else:
        eps, detail = float(np.float32(eps_arg)), f"{target} eps argument of node {node.name}"
    module = _module_path(node)
    if not module:
        for r in (weight, bias):
            if r is not None and "." in r.name:
                module = r.name.rsplit(".", 1)[0]
                break
    layer = NormLayer(
        id=module or node.name, kind=kind, eps=eps,
        eps_source=EpsSource.EXPORT_GRAPH if eps is not None else EpsSource.UNKNOWN, eps_detail=detail,
        weight=weight, bias=bias,
        running_mean=ref_for(_arg(node, mi, "running_mean")), running_var=ref_for(_arg(node, vi, "running_var")),
        num_groups=int(_arg(node, gi, "group")) if gi is not None and isinstance(_arg(node, gi, "group"), int) else None,
        module=module, nodes=[node.name], notes=notes,
    )
    if kind is NormKind.GROUP_NORM and layer.num_groups is None:
        layer.num_groups = int(_arg(node, gi, "num_groups") or 0) or None
    layer.role = qk_role(module)
    return layer


def _export_decomposed_rms(node: Any, ref_for: Any) -> NormLayer | None:
    """aten.rsqrt(add(mean(pow(x, 2)), eps)) -> mul(x, .) -> mul(weight, .)  (HF RMSNorm in an export)."""
    if str(node.target) != "aten.rsqrt.default":
        return None
    add = node.args[0]
    if str(getattr(add, "target", "")) not in ("aten.add.Tensor", "aten.add.Scalar"):
        return None
    mean, eps = add.args[0], add.args[1]
    if not isinstance(eps, (int, float)) or str(getattr(mean, "target", "")) != "aten.mean.dim":
        return None
    pw = mean.args[0]
    if str(getattr(pw, "target", "")) != "aten.pow.Tensor_Scalar" or pw.args[1] != 2:
        return None
    weight, one_plus, out_node = _export_weight_after(node, ref_for)
    module = _module_path(node)
    layer = NormLayer(
        id=module or node.name, kind=NormKind.RMS_NORM, eps=float(np.float32(eps)),
        eps_source=EpsSource.EXPORT_GRAPH, eps_detail=f"aten.add eps constant of node {add.name}",
        weight=weight, module=module, nodes=[pw.name, mean.name, add.name, node.name],
        convention=Convention.ONE_PLUS if one_plus else Convention.SCALE,
        notes=["decomposed RMSNorm pattern"] + (["weight enters as (1 + w)"] if one_plus else []),
        input_name=getattr(pw.args[0], "name", ""), output_name=out_node,
    )
    layer.role = qk_role(module)
    return layer


_CASTS = ("aten.to.dtype", "aten._to_copy.default", "aten.type_as.default", "aten.clone.default",
          "aten.to.dtype_layout", "aten.alias.default")


def _single_user(node: Any) -> Any | None:
    users = [u for u in node.users if str(u.target) != "aten._assert_tensor_metadata.default"]
    return users[0] if len(users) == 1 else None


def _export_weight_after(rsqrt: Any, ref_for: Any) -> tuple[TensorRef | None, bool, str]:
    """Follow x * rsqrt(.) forward (through casts) to the Mul by the weight.

    Returns (weight, enters as 1 + w, name of the node holding the norm's output)."""
    node = _single_user(rsqrt)  # mul(x, rsqrt)
    if node is None or str(node.target) != "aten.mul.Tensor":
        return None, False, rsqrt.name
    nxt = _single_user(node)
    while nxt is not None and str(nxt.target) in _CASTS:
        node, nxt = nxt, _single_user(nxt)
    if nxt is None or str(nxt.target) != "aten.mul.Tensor":
        return None, False, node.name
    for arg in nxt.args:
        if arg is node:
            continue
        one_plus = False
        while hasattr(arg, "target"):
            target = str(arg.target)
            if target in _CASTS:
                arg = arg.args[0]
            elif target in ("aten.add.Tensor", "aten.add.Scalar") and len(arg.args) == 2 and arg.args[1] == 1.0:
                one_plus, arg = True, arg.args[0]
            else:
                break
        ref = ref_for(arg)
        if ref is not None:
            return ref, one_plus, nxt.name
    return None, False, node.name


def _export_arch(ep: Any) -> str | None:
    """The exported model's class: the transformers class if a wrapper holds one, else the root class."""
    first = None
    for node in ep.graph.nodes:
        for _, (_, cls) in (node.meta.get("nn_module_stack") or {}).items():
            first = first or str(cls)
            if str(cls).startswith("transformers.models."):
                return str(cls).rsplit(".", 1)[-1]
    return first.rsplit(".", 1)[-1] if first else None


# -- modules (TorchScript, trusted pickles) --------------------------------------------------------

_MODULE_KINDS: tuple[tuple[str, NormKind], ...] = (
    ("BatchNorm", NormKind.BATCH_NORM), ("SyncBatchNorm", NormKind.BATCH_NORM),
    ("GroupNorm", NormKind.GROUP_NORM), ("InstanceNorm", NormKind.INSTANCE_NORM),
    ("RMSNorm", NormKind.RMS_NORM), ("T5LayerNorm", NormKind.RMS_NORM),
    ("LayerNorm", NormKind.LAYER_NORM),
)
_EPS_ATTRS = ("eps", "variance_epsilon", "epsilon", "rms_norm_eps")


def _module_kind(class_name: str) -> NormKind | None:
    for marker, kind in _MODULE_KINDS:
        if marker in class_name:
            return kind
    return None


def norms_from_module(root: Any) -> list[NormLayer]:
    """Norm layers of an nn.Module or TorchScript module, eps from the module attributes."""
    norms: list[NormLayer] = []
    for name, mod in root.named_modules():
        cls = getattr(mod, "original_name", None) or type(mod).__name__
        kind = _module_kind(str(cls))
        if kind is None or not name:
            continue
        params = dict(mod.named_parameters(recurse=False))
        buffers = dict(mod.named_buffers(recurse=False))
        tensors = {**params, **buffers}

        def ref(key: str, tensors: dict = tensors, name: str = name) -> TensorRef | None:
            t = tensors.get(key)
            return _torch_ref(f"{name}.{key}", t) if t is not None else None

        eps = None
        attr_name = ""
        for a in _EPS_ATTRS:
            v = getattr(mod, a, None)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                eps, attr_name = float(np.float32(v)), a
                break
        one_plus = str(cls).startswith(("Gemma", "RecurrentGemma", "Nemotron", "Qwen3Next")) and \
            kind in (NormKind.RMS_NORM, NormKind.LAYER_NORM)
        layer = NormLayer(
            id=name, kind=kind, eps=eps,
            eps_source=EpsSource.MODULE_ATTRIBUTE if eps is not None else EpsSource.UNKNOWN,
            eps_detail=f"{cls}.{attr_name}" if eps is not None else f"{cls} has no eps attribute",
            weight=ref("weight"), bias=ref("bias"), running_mean=ref("running_mean"),
            running_var=ref("running_var"),
            num_groups=getattr(mod, "num_groups", None) if kind is NormKind.GROUP_NORM else None,
            convention=Convention.ONE_PLUS if one_plus else Convention.SCALE,
            module=name, notes=[f"module class {cls}"],
        )
        layer.role = qk_role(name)
        norms.append(layer)
    return norms


def load_torchscript(path: Path) -> NormModel:
    import torch

    try:
        mod = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise CorruptFile(f"{path}: cannot load TorchScript archive ({brief(exc)})") from None
    norms = norms_from_module(mod)
    return NormModel(path=str(path), format="pytorch", architecture=getattr(mod, "original_name", None),
                     norms=norms, container="torchscript")


def load_pickled_module(path: Path) -> NormModel:
    """Only reached with --trust-pickle: full unpickling of an nn.Module."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CorruptFile(f"{path}: cannot unpickle ({brief(exc)})") from None
    if isinstance(obj, torch.nn.Module):
        config = getattr(obj, "config", None)
        arch = type(obj).__name__
        norms = norms_from_module(obj)
        if config is not None and hasattr(config, "to_dict"):
            cfg = config.to_dict()
            for n in norms:
                if n.eps is None:
                    hit = _config_value(cfg, HF_EPS_KEYS.get(n.kind, ()))
                    if hit:
                        n.eps, n.eps_source, n.eps_detail = float(np.float32(hit[0])), EpsSource.HF_CONFIG, hit[1]
        return NormModel(path=str(path), format="pytorch", architecture=arch, norms=norms, container="module")
    refs = _flatten_state(obj, path)
    return _model(path, "state_dict", refs, None)


def zip_kind(path: Path) -> str | None:
    """torch_export / torchscript / torch_save for a PyTorch zip archive, else None."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()[:10000]
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if any(n.endswith(("models/model.json", "serialized_exported_program.json")) for n in names):
        return "torch_export"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "torch_save"
    return None


__all__ = ["load_safetensors", "load_hf_dir", "load_state_dict", "load_export", "load_torchscript",
           "load_pickled_module", "norms_from_tensors", "norms_from_module", "zip_kind", "check_pt2_archive"]
