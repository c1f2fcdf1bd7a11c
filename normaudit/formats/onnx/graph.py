"""An ONNX graph as normaudit reads it: producers, consumers, constants behind any value (initializers,
Constant nodes, Identity/Cast chains, DequantizeLinear), node scopes.  Bounded walks: hostile graphs may loop."""

from __future__ import annotations

import ast
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import CorruptFile, reading
from ...fileio import pread_exact
from ...model import TensorRef, dtype_name

# ops that pass a value through unchanged for our purposes (on weight and activation paths)
PASS_THROUGH = ("Identity", "Cast", "CastLike")
MAX_HOPS = 32  # pass-through ops followed in a row before giving up


MAX_ELEMENTS = 1 << 34  # elements one tensor may claim (far above any norm or conv weight)


def _onnx_dtype_name(elem_type: int) -> str:
    from onnx import helper

    try:
        return dtype_name(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return f"onnx_type_{elem_type}"


def contained_file(base_dir: Path, location: str, where: str) -> tuple[Path, os.stat_result]:
    """An external-data location resolved (symlinks followed) inside the model's folder, as a regular file."""
    if not location or "\0" in location or Path(location).is_absolute():
        raise CorruptFile(f"{where} location {location!r} is not a relative path")
    root = base_dir.resolve()
    target = (root / location).resolve()
    if root not in target.parents:
        raise CorruptFile(f"{where} {location!r} points outside the model folder")
    try:
        st = os.stat(target)
    except OSError:
        raise CorruptFile(f"{where} file {location!r} is missing next to the model") from None
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFile(f"{where} {location!r} is not a regular file")
    return target, st


def _external_bytes(tensor: Any, base_dir: Path, nbytes: int | None, where: str) -> bytes:
    """The bytes an external-data tensor points at, read only after every check: the location is relative,
    has no NUL, resolves (symlinks followed) inside the model's folder, is a regular file, and offset + length
    lie within it and match what the tensor's dims need."""
    info = {e.key: e.value for e in tensor.external_data}
    where = f"{where}: external data"
    location = info.get("location", "")
    target, st = contained_file(base_dir, location, where)
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else st.st_size - offset
    except ValueError:
        raise CorruptFile(f"{where} offset/length are not integers") from None
    if offset < 0 or length < 0 or offset + length > st.st_size:
        raise CorruptFile(f"{where} [{offset}, {offset + length}) lies beyond the end of {location!r} "
                          f"({st.st_size} bytes)")
    if nbytes is not None and length != nbytes:
        raise CorruptFile(f"{where} holds {length} bytes, its dims need {nbytes}")
    return pread_exact(target, offset, length)


def tensor_values(tensor: Any, base_dir: Path, source: object = "") -> np.ndarray:
    """A TensorProto's values (its own dtype), with sizes checked before anything is read or allocated and
    external data contained in the model's folder.  ``source`` (the model file) prefixes error lines."""
    from onnx import TensorProto, helper, numpy_helper

    label = f"{source}: tensor {tensor.name!r}" if source else f"tensor {tensor.name!r}"

    dims = [int(d) for d in tensor.dims]
    count = 1
    for d in dims:
        if d < 0:
            raise CorruptFile(f"{label}: negative dimension in {dims}")
        count *= d
    if count > MAX_ELEMENTS:
        raise CorruptFile(f"{label}: dims {dims} claim {count} elements")
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        raise CorruptFile(f"{label}: unknown data type {tensor.data_type}") from None
    packed = tensor.data_type in (getattr(TensorProto, n, -1) for n in ("INT4", "UINT4", "FLOAT4E2M1"))
    nbytes = (count + 1) // 2 if packed else count * itemsize
    if tensor.data_location == TensorProto.EXTERNAL:
        proto = TensorProto()
        proto.CopyFrom(tensor)
        proto.raw_data = _external_bytes(tensor, base_dir, nbytes if tensor.data_type != TensorProto.STRING else None,
                                         label)
        proto.data_location = TensorProto.DEFAULT
        del proto.external_data[:]
        tensor = proto
    elif tensor.HasField("raw_data") and tensor.data_type != TensorProto.STRING and len(tensor.raw_data) != nbytes:
        raise CorruptFile(f"{label}: raw data holds {len(tensor.raw_data)} bytes, dims {dims} of "
                          f"{_onnx_dtype_name(tensor.data_type)} need {nbytes}")
    with reading(label, "values do not match its dims and data type"):
        return numpy_helper.to_array(tensor)


@dataclass
class Const:
    name: str
    shape: tuple[int, ...]
    dtype: str
    load: Callable[[], np.ndarray]
    via: str = ""  # e.g. "DequantizeLinear"
    source: str = ""  # the model file

    def ref(self, name: str | None = None) -> TensorRef:
        return TensorRef(name or self.name, self.shape, self.dtype, self.load, source=self.source)


class OnnxGraph:
    """Index over an ONNX graph: producers, consumers, constants (lazy), node scopes."""

    def __init__(self, model: Any, base_dir: Path, source: object = "") -> None:
        self.model = model
        self.source = source  # the model file, for error lines
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
        return lambda: np.asarray(tensor_values(tensor, self.base_dir, self.source), dtype=np.float32)

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
        if result is not None:
            result.source = str(self.source)
        self._const_cache[name] = result
        return result

    def _constant_node(self, node: Any, name: str) -> Const | None:
        from onnx import helper

        for attr in node.attribute:
            if attr.name == "value":
                t = attr.t
                return Const(name, tuple(int(d) for d in t.dims), _onnx_dtype_name(t.data_type),
                             self._tensor_loader(t))
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
        where = f"{self.source}: DequantizeLinear {node.name or node.output[0]!r}"

        def load() -> np.ndarray:
            q = x.load().astype(np.float64)
            s = scale.load().astype(np.float64)
            z = zp.load().astype(np.float64) if zp is not None else np.zeros_like(s)
            if s.size > 1 or z.size > 1:  # per-axis: one scale per slice of q along ``axis``
                if not -q.ndim <= axis < q.ndim or s.ndim != 1 or s.size != q.shape[axis] or z.size not in (1, s.size):
                    raise CorruptFile(f"{where}: scale {list(s.shape)} / zero point {list(z.shape)} do not fit "
                                      f"input {list(q.shape)} along axis {axis}")
                shape = [1] * q.ndim
                shape[axis] = -1
                s, z = s.reshape(shape), z.reshape(shape) if z.size > 1 else z.reshape(-1)[0]
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
    seen = 0
    while seen < 16:
        seen += 1
        if name in g.initializers:
            t = g.initializers[name]
            if t.data_location == 1:
                return None
            return tensor_values(t, g.base_dir, g.source)
        node = g.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return tensor_values(attr.t, g.base_dir, g.source)
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


