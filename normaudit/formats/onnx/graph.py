"""An ONNX graph as normaudit reads it: producers, consumers, constants behind any value (initializers,
Constant nodes, Identity/Cast chains, DequantizeLinear), node scopes.  Bounded walks: hostile graphs may loop."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import CorruptFile
from ...model import TensorRef, dtype_name

# ops that pass a value through unchanged for our purposes (on weight and activation paths)
PASS_THROUGH = ("Identity", "Cast", "CastLike")
MAX_HOPS = 32  # pass-through ops followed in a row before giving up


def _onnx_dtype_name(elem_type: int) -> str:
    from onnx import helper

    return dtype_name(helper.tensor_dtype_to_np_dtype(elem_type))


@dataclass
class Const:
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
        self._const_cache: dict[str, Const | None] = {}

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

    def const(self, name: str) -> Const | None:
        """The constant behind a tensor name (initializer, Constant node, through Identity/Cast or
        DequantizeLinear), or None if the value is computed at run time."""
        if name in self._const_cache:
            return self._const_cache[name]
        self._const_cache[name] = None  # guards against cycles in hostile graphs
        result: Const | None = None
        if name in self.initializers:
            t = self.initializers[name]
            result = Const(name, tuple(int(d) for d in t.dims), _onnx_dtype_name(t.data_type), self._tensor_loader(t))
        elif name in self.producer:
            node = self.producer[name]
            if node.op_type == "Constant":
                result = self._constant_node(node, name)
            elif node.op_type in PASS_THROUGH and node.input:
                inner = self.const(node.input[0])
                if inner is not None:
                    result = Const(inner.name, inner.shape, inner.dtype, inner.load, inner.via)
            elif node.op_type == "DequantizeLinear":
                result = self._dequantize(node)
        self._const_cache[name] = result
        return result

    def _constant_node(self, node: Any, name: str) -> Const | None:
        from onnx import helper, numpy_helper

        for attr in node.attribute:
            if attr.name == "value":
                t = attr.t
                arr = numpy_helper.to_array(t)
                return Const(name, tuple(arr.shape), _onnx_dtype_name(t.data_type),
                              lambda a=arr: np.asarray(a, dtype=np.float32))
            if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
                arr = np.asarray(helper.get_attribute_value(attr))
                return Const(name, tuple(arr.shape), dtype_name(arr.dtype),
                              lambda a=arr: np.asarray(a, dtype=np.float32))
        return None

    def _dequantize(self, node: Any) -> Const | None:
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

        return Const(x.name, x.shape, x.dtype, load, via="DequantizeLinear")

    def scalar(self, name: str) -> tuple[float, str] | None:
        c = self.const(name)
        if c is None or int(np.prod(c.shape or (1,))) != 1:
            return None
        raw = raw_const(self, name)
        value = float(np.asarray(raw).reshape(-1)[0]) if raw is not None else float(c.load().reshape(-1)[0])
        return value, c.dtype

    # -- navigation -----------------------------------------------------------------------------
    def src(self, name: str, skip: tuple[str, ...] = PASS_THROUGH) -> Any | None:
        node = self.producer.get(name)
        for _ in range(MAX_HOPS):  # bounded: a hostile graph may loop Identity -> Identity
            if node is None or node.op_type not in skip or not node.input:
                return node
            node = self.producer.get(node.input[0])
        return None

    def only_consumer(self, name: str, skip: tuple[str, ...] = PASS_THROUGH) -> Any | None:
        users = self.consumers.get(name, [])
        if len(users) != 1:
            return None
        node = users[0]
        for _ in range(MAX_HOPS):
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


def raw_const(g: OnnxGraph, name: str) -> np.ndarray | None:
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

def metadata(node: Any) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def module_of(node: Any) -> str:
    """The PyTorch module a node came from: dynamo name scopes, else the legacy exporter's node name."""
    scopes = metadata(node).get("pkg.torch.onnx.name_scopes")
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


def module_from_tensor(name: str) -> str:
    for suffix in (".weight", ".bias", ".scale", ".gamma", ".beta"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return ""


def attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


