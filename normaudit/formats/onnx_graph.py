"""ONNX loader: fused norm ops (ONNX and ONNX Runtime contrib) and the decomposed patterns the
PyTorch exporters write, with eps read from the attribute or from the Add(eps) constant."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import CorruptFile
from ..model import EpsSource, LinearOp, NormKind, NormLayer, NormModel, TensorRef, dtype_name, unique_ids
from ..tables import ONNX_FUSED_OPS, qk_role

# ops that pass a value through unchanged for our purposes (on weight and activation paths)
_PASS_THROUGH = ("Identity", "Cast", "CastLike")
_MAX_HOPS = 32  # pass-through ops followed in a row before giving up


def _onnx_dtype_name(elem_type: int) -> str:
    from onnx import helper

    return dtype_name(helper.tensor_dtype_to_np_dtype(elem_type))


@dataclass
class _Const:
    name: str
    shape: tuple[int, ...]
    dtype: str
    load: Callable[[], np.ndarray]
    via: str = ""  # e.g. "DequantizeLinear"

    def ref(self, name: str | None = None) -> TensorRef:
        return TensorRef(name or self.name, self.shape, self.dtype, self.load)


class OnnxGraph:
    """Index over an ONNX graph: producers, consumers, constants (lazy), node scopes."""

    def __init__(self, model: Any, base_dir: Path) -> None:
        self.model = model
        self.graph = model.graph
        self.base_dir = base_dir
        self.nodes = list(self.graph.node)
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self._const_cache: dict[str, _Const | None] = {}

    # -- constants ------------------------------------------------------------------------------
    def _tensor_loader(self, tensor: Any) -> Callable[[], np.ndarray]:
        from onnx import numpy_helper

        base = self.base_dir

        def load() -> np.ndarray:
            if tensor.data_location == 1:  # EXTERNAL
                info = {e.key: e.value for e in tensor.external_data}
                location = (base / info.get("location", "")).resolve()
                if base.resolve() not in location.parents:
                    raise CorruptFile(f"external data {info.get('location')!r} points outside the model folder")
                if not location.is_file():
                    raise CorruptFile(f"external data file {location.name} is missing next to the model")
                return np.asarray(numpy_helper.to_array(tensor, base_dir=str(base)), dtype=np.float32)
            return np.asarray(numpy_helper.to_array(tensor), dtype=np.float32)

        return load

    def const(self, name: str) -> _Const | None:
        """The constant behind a tensor name (initializer, Constant node, through Identity/Cast or
        DequantizeLinear), or None if the value is computed at run time."""
        if name in self._const_cache:
            return self._const_cache[name]
        self._const_cache[name] = None  # guards against cycles in hostile graphs
        result: _Const | None = None
        if name in self.initializers:
            t = self.initializers[name]
            result = _Const(name, tuple(int(d) for d in t.dims), _onnx_dtype_name(t.data_type), self._tensor_loader(t))
        elif name in self.producer:
            node = self.producer[name]
            if node.op_type == "Constant":
                result = self._constant_node(node, name)
            elif node.op_type in _PASS_THROUGH and node.input:
                inner = self.const(node.input[0])
                if inner is not None:
                    result = _Const(inner.name, inner.shape, inner.dtype, inner.load, inner.via)
            elif node.op_type == "DequantizeLinear":
                result = self._dequantize(node)
        self._const_cache[name] = result
        return result

    def _constant_node(self, node: Any, name: str) -> _Const | None:
        from onnx import helper, numpy_helper

        for attr in node.attribute:
            if attr.name == "value":
                t = attr.t
                arr = numpy_helper.to_array(t)
                return _Const(name, tuple(arr.shape), _onnx_dtype_name(t.data_type),
                              lambda a=arr: np.asarray(a, dtype=np.float32))
            if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
                arr = np.asarray(helper.get_attribute_value(attr))
                return _Const(name, tuple(arr.shape), dtype_name(arr.dtype),
                              lambda a=arr: np.asarray(a, dtype=np.float32))
        return None

    def _dequantize(self, node: Any) -> _Const | None:
        x = self.const(node.input[0])
        scale = self.const(node.input[1]) if len(node.input) > 1 else None
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if x is None or scale is None:
            return None
        axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 1)

        def load() -> np.ndarray:
            q = x.load().astype(np.float64)
            s = scale.load().astype(np.float64)
            z = zp.load().astype(np.float64) if zp is not None else np.zeros_like(s)
            if s.ndim == 1 and q.ndim > 1 and s.size > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                s, z = s.reshape(shape), z.reshape(shape)
            return ((q - z) * s).astype(np.float32)

        return _Const(x.name, x.shape, x.dtype, load, via="DequantizeLinear")

    def scalar(self, name: str) -> tuple[float, str] | None:
        c = self.const(name)
        if c is None or int(np.prod(c.shape or (1,))) != 1:
            return None
        raw = _raw_const(self, name)
        value = float(np.asarray(raw).reshape(-1)[0]) if raw is not None else float(c.load().reshape(-1)[0])
        return value, c.dtype

    # -- navigation -----------------------------------------------------------------------------
    def src(self, name: str, skip: tuple[str, ...] = _PASS_THROUGH) -> Any | None:
        node = self.producer.get(name)
        for _ in range(_MAX_HOPS):  # bounded: a hostile graph may loop Identity -> Identity
            if node is None or node.op_type not in skip or not node.input:
                return node
            node = self.producer.get(node.input[0])
        return None

    def only_consumer(self, name: str, skip: tuple[str, ...] = _PASS_THROUGH) -> Any | None:
        users = self.consumers.get(name, [])
        if len(users) != 1:
            return None
        node = users[0]
        for _ in range(_MAX_HOPS):
            if node.op_type not in skip:
                return node
            users = self.consumers.get(node.output[0], []) if node.output else []
            if len(users) != 1:
                return None
            node = users[0]
        return None

    def other_input(self, node: Any, name: str) -> str | None:
        others = [i for i in node.input if i != name]
        return others[0] if len(others) == 1 else None


def _raw_const(g: OnnxGraph, name: str) -> np.ndarray | None:
    """Scalar constants in their stored dtype (so an fp16 eps shows its fp16 value)."""
    from onnx import numpy_helper

    seen = 0
    while seen < 16:
        seen += 1
        if name in g.initializers:
            t = g.initializers[name]
            if t.data_location == 1:
                return None
            return numpy_helper.to_array(t)
        node = g.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
                if attr.name in ("value_float", "value_floats"):
                    return np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float32)
            return None
        if node.op_type in ("Identity",) and node.input:
            name = node.input[0]
            continue
        return None
    return None


# -- naming -------------------------------------------------------------------------------------

def _metadata(node: Any) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def module_of(node: Any) -> str:
    """The PyTorch module a node came from: dynamo name scopes, else the legacy exporter's node name."""
    scopes = _metadata(node).get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            parts = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            parts = None
        if isinstance(parts, list) and len(parts) >= 2:
            return str(parts[-2])
    name = node.name or ""
    if name.startswith("/") and name.count("/") >= 2:
        return ".".join(p for p in name.split("/")[1:-1] if p)
    return ""


def _module_from_tensor(name: str) -> str:
    for suffix in (".weight", ".bias", ".scale", ".gamma", ".beta"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return ""


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# -- pattern matchers ---------------------------------------------------------------------------

@dataclass
class _Found:
    kind: NormKind
    eps: float | None
    eps_source: EpsSource
    eps_detail: str
    eps_dtype: str
    weight: _Const | None
    bias: _Const | None
    nodes: list[Any]
    anchor: Any  # node whose scope names the layer
    num_groups: int | None = None
    mean: _Const | None = None
    var: _Const | None = None
    notes: tuple[str, ...] = ()
    axis: tuple[int, ...] = (-1,)
    input_name: str = ""  # tensor the norm normalises
    output_name: str = ""  # tensor after the affine (what the next op reads)


def _fused(g: OnnxGraph, node: Any) -> _Found | None:
    spec = ONNX_FUSED_OPS.get((node.domain, node.op_type))
    if spec is None:
        return None
    kind, w_idx, b_idx, default_eps = spec
    inputs = list(node.input)
    weight = g.const(inputs[w_idx]) if len(inputs) > w_idx and inputs[w_idx] else None
    bias = g.const(inputs[b_idx]) if b_idx is not None and len(inputs) > b_idx and inputs[b_idx] else None
    eps = _attr(node, "epsilon")
    notes: list[str] = []
    if eps is None:
        eps, source, detail = float(np.float32(default_eps)), EpsSource.ONNX_DEFAULT, f"{node.op_type} default epsilon"
    else:
        eps, source, detail = float(np.float32(eps)), EpsSource.ONNX_ATTRIBUTE, f"{node.name or node.op_type}.epsilon"
    found = _Found(kind, eps, source, detail, "F32", weight, bias, [node], node,
                   input_name=inputs[0] if inputs else "", output_name=node.output[0] if node.output else "")
    if kind is NormKind.BATCH_NORM and len(inputs) >= 5:
        found.mean, found.var = g.const(inputs[3]), g.const(inputs[4])
    if kind is NormKind.GROUP_NORM:
        found.num_groups = _attr(node, "num_groups", _attr(node, "groups"))
        if weight is not None and found.num_groups and weight.shape and weight.shape[0] == found.num_groups:
            notes.append("GroupNormalization-18 scale/bias are per group")
    if node.op_type in ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"):
        found.axis = (int(_attr(node, "axis", -1)),)
    if node.domain == "com.microsoft" or node.op_type.startswith(("Skip", "Embed", "Simplified")):
        notes.append(f"ONNX Runtime fused op {node.domain or 'ai.onnx'}.{node.op_type}")
    found.notes = tuple(notes)
    return found


def _follow_affine(g: OnnxGraph, out: str, nodes: list[Any]) -> tuple[_Const | None, _Const | None, str]:
    """After the normalised value: Mul(const weight) then Add(const bias), each optional."""
    weight = bias = None
    nxt = g.only_consumer(out)
    if nxt is not None and nxt.op_type == "Mul":
        other = g.other_input(nxt, out) if out in nxt.input else None
        other = other if other is not None else _other_after_cast(g, nxt, out)
        c = g.const(other) if other else None
        if c is not None:
            weight = c
            nodes.append(nxt)
            out = nxt.output[0]
            nxt = g.only_consumer(out)
    if nxt is not None and nxt.op_type == "Add":
        other = g.other_input(nxt, out) if out in nxt.input else _other_after_cast(g, nxt, out)
        c = g.const(other) if other else None
        if c is not None and int(np.prod(c.shape or (1,))) > 1:
            bias = c
            nodes.append(nxt)
            out = nxt.output[0]
    return weight, bias, out


def _other_after_cast(g: OnnxGraph, node: Any, value: str) -> str | None:
    """The input of ``node`` that is not ``value`` (reached through Cast/Identity)."""
    for inp in node.input:
        src = g.producer.get(inp)
        if inp == value or (src is not None and src.op_type in _PASS_THROUGH and src.input and src.input[0] == value):
            continue
        return inp
    return None


def _is_square(g: OnnxGraph, node: Any | None) -> str | None:
    """If node computes x**2 (Pow(x, 2) or Mul(x, x)), return x."""
    if node is None:
        return None
    if node.op_type == "Pow" and len(node.input) == 2:
        s = g.scalar(node.input[1])
        if s is not None and s[0] == 2.0:
            return node.input[0]
    if node.op_type == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1]:
        return node.input[0]
    return None


def _decomposed(g: OnnxGraph, add: Any) -> _Found | None:
    """Anchor: Add(ReduceMean(square(.)), eps) -> Sqrt -> (Reciprocal -> Mul | Div)."""
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    eps_info = None
    var_in = None
    for i, j in ((0, 1), (1, 0)):
        src = g.src(add.input[i])
        if src is not None and src.op_type == "ReduceMean":
            s = g.scalar(add.input[j])
            if s is not None:
                eps_info, var_in, mean_node, eps_name = s, add.input[i], src, add.input[j]
                break
    if eps_info is None or var_in is None:
        return None
    squared = _is_square(g, g.src(mean_node.input[0]))
    if squared is None:
        return None
    sqrt = g.only_consumer(add.output[0])
    if sqrt is None or sqrt.op_type != "Sqrt":
        return None
    nxt = g.only_consumer(sqrt.output[0])
    nodes = [mean_node, add, sqrt]
    if nxt is not None and nxt.op_type == "Reciprocal":
        nodes.append(nxt)
        recip_out = nxt.output[0]
        mul = g.only_consumer(recip_out)
        if mul is None or mul.op_type != "Mul":
            return None
        normed_from = _other_after_cast(g, mul, recip_out)
        normed = mul
    elif nxt is not None and nxt.op_type == "Div" and nxt.input[1] == sqrt.output[0]:
        normed_from = nxt.input[0]
        normed = nxt
    else:
        return None
    nodes.append(normed)
    # mean-centred input -> LayerNorm, raw input -> RMSNorm
    sub = g.src(squared)
    kind = NormKind.RMS_NORM
    if sub is not None and sub.op_type == "Sub":
        centre = g.src(sub.input[1])
        if centre is not None and centre.op_type == "ReduceMean":
            kind = NormKind.LAYER_NORM
            nodes[:0] = [centre, sub]
    if normed_from is None:
        return None
    weight, bias, out = _follow_affine(g, normed.output[0], nodes)
    eps, eps_dtype = eps_info
    anchor = add
    source_x = nodes[0].input[0] if kind is NormKind.LAYER_NORM else squared
    return _Found(kind, eps, EpsSource.ONNX_CONSTANT, f"Add {add.name or add.output[0]} <- {eps_name}", eps_dtype,
                  weight, bias, nodes, anchor,
                  notes=(f"decomposed {'LayerNorm' if kind is NormKind.LAYER_NORM else 'RMSNorm'} pattern",),
                  input_name=source_x, output_name=out)


def _group_norm_from_instance(g: OnnxGraph, found: _Found, node: Any) -> _Found:
    """Reshape -> InstanceNormalization -> Reshape -> Mul -> Add is a GroupNorm (torch exporters < opset 21)."""
    before = g.src(node.input[0], skip=())
    after = g.only_consumer(node.output[0], skip=())
    if before is None or after is None or before.op_type != "Reshape" or after.op_type != "Reshape":
        return found
    groups = found.weight.shape[0] if found.weight is not None and found.weight.shape else None
    nodes = [before, node, after]
    weight, bias, out = _follow_affine(g, after.output[0], nodes)
    return _Found(NormKind.GROUP_NORM, found.eps, found.eps_source, found.eps_detail, found.eps_dtype,
                  weight, bias, nodes, node, num_groups=groups,
                  notes=("GroupNorm as Reshape -> InstanceNormalization -> Reshape -> Mul -> Add",),
                  input_name=before.input[0], output_name=out)


def _layer_id(g: OnnxGraph, found: _Found) -> tuple[str, str]:
    """(id, module) for a found layer."""
    module = ""
    for node in [found.anchor] + found.nodes:
        module = module_of(node)
        if module:
            break
    if not module and found.weight is not None:
        module = _module_from_tensor(found.weight.name)
    ident = module or found.anchor.name or found.anchor.output[0]
    return ident, module


def load_onnx(path: Path) -> NormModel:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, RuntimeWarning-as-error, ...
        raise CorruptFile(f"{path}: corrupt or truncated ONNX file ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise CorruptFile(f"{path}: ONNX file has an empty graph (corrupt, truncated or not an ONNX model)")
    g = OnnxGraph(model, path.parent)
    used: set[int] = set()
    found_list: list[_Found] = []
    for node in g.nodes:
        if id(node) in used:
            continue
        found = _fused(g, node)
        if found is not None and found.kind is NormKind.INSTANCE_NORM:
            found = _group_norm_from_instance(g, found, node)
        if found is None:
            found = _decomposed(g, node)
        if found is None:
            continue
        used.update(id(n) for n in found.nodes)
        found_list.append(found)

    norms: list[NormLayer] = []
    for found in found_list:
        ident, module = _layer_id(g, found)
        layer = NormLayer(
            id=ident,
            kind=found.kind,
            eps=found.eps,
            eps_source=found.eps_source,
            eps_detail=found.eps_detail,
            eps_dtype=found.eps_dtype,
            weight=found.weight.ref() if found.weight else None,
            bias=found.bias.ref() if found.bias else None,
            running_mean=found.mean.ref() if found.mean else None,
            running_var=found.var.ref() if found.var else None,
            num_groups=int(found.num_groups) if found.num_groups else None,
            axis=found.axis,
            module=module,
            nodes=[n.name or n.output[0] for n in found.nodes],
            notes=list(found.notes),
            input_name=found.input_name,
            output_name=found.output_name,
        )
        layer.role = qk_role(module)
        for c in (found.weight, found.bias):
            if c is not None and c.via:
                layer.notes.append(f"{c.name} reaches the norm through {c.via}")
        norms.append(layer)
    unique_ids(norms)  # the same module applied twice (or shared scopes) keeps distinct ids

    linear_ops = []
    for node in g.nodes:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
            continue
        w = g.const(node.input[1])
        if w is None:
            continue
        b = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "Gemm" and not _attr(node, "transB", 0):
            continue  # weight is (in, out): not the layout a folded BN scales per row
        linear_ops.append(LinearOp(node.name or node.output[0], "conv" if node.op_type == "Conv" else "linear",
                                   w.ref(), b.ref() if b else None, module_of(node), [node.name]))
    opsets = {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}
    arch = _architecture(g)
    out = NormModel(path=str(path), format="onnx", architecture=arch, norms=norms, container="onnx",
                    linear_ops=linear_ops)
    out.metadata = {"opsets": opsets, "producer": f"{model.producer_name} {model.producer_version}".strip()}
    return out


def _architecture(g: OnnxGraph) -> str | None:
    """The exported PyTorch class (from dynamo's class hierarchy metadata), if recorded."""
    for node in g.nodes[:50]:
        hier = _metadata(node).get("pkg.torch.onnx.class_hierarchy")
        if not hier:
            continue
        try:
            classes = ast.literal_eval(hier)
        except (ValueError, SyntaxError):
            continue
        for cls in classes:
            if isinstance(cls, str) and cls.startswith("transformers.models."):
                return cls.rsplit(".", 1)[-1]
        if classes:
            return str(classes[0]).rsplit(".", 1)[-1]
    return None
