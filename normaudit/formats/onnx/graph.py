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
from ...facts.onnx import BROADCAST_OPS, LAYOUT_OPS, SAME_RANK_OPS, SHAPE_PRESERVING_OPS
from ...fileio import pread_exact
from ...model import TensorRef, dtype_name

# ops that pass a value through unchanged for our purposes (on weight and activation paths)
PASS_THROUGH = ("Identity", "Cast", "CastLike")
MAX_HOPS = 32  # pass-through ops followed in a row before giving up
MAX_SHAPE_DEPTH = 24  # producers followed when working out a rank, a shape vector or a dims list
MAX_VECTOR = 64  # entries of an int64 vector (a shape, axes) worth evaluating


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
        _text_names(model.graph)
        self.model = model
        self.source = source  # the model file, for error lines
        self.graph = model.graph
        self.base_dir = base_dir
        # a node without outputs computes nothing anyone reads (and is not valid ONNX): not part of any pattern
        self.nodes = [n for n in self.graph.node if len(n.output) and n.output[0]]
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.order = {id(node): i for i, node in enumerate(self.nodes)}
        self._const_cache: dict[str, Const | None] = {}
        self._declared: dict[str, list[int | None]] | None = None
        self._rank_cache: dict[str, int | None] = {}
        self._dims_cache: dict[str, tuple[list[int | None], bool] | None] = {}
        self._vector_cache: dict[str, tuple[tuple[int | None, ...], bool] | None] = {}

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
        from onnx import AttributeProto, helper

        want = {"value_float": AttributeProto.FLOAT, "value_floats": AttributeProto.FLOATS,
                "value_int": AttributeProto.INT, "value_ints": AttributeProto.INTS}
        for attr in node.attribute:
            if attr.name == "value":
                if attr.type != AttributeProto.TENSOR:
                    return None  # not a tensor: not a constant normaudit can read
                t = attr.t
                return Const(name, tuple(int(d) for d in t.dims), _onnx_dtype_name(t.data_type),
                             self._tensor_loader(t))
            if attr.name in want:
                if attr.type != want[attr.name]:
                    return None
                arr = np.asarray(helper.get_attribute_value(attr))
                return Const(name, tuple(arr.shape), dtype_name(arr.dtype),
                             lambda a=arr: np.asarray(a, dtype=np.float32))
        return None

    def _dequantize(self, node: Any) -> Const | None:
        if len(node.input) < 2 or not node.input[0] or not node.input[1]:
            return None
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
            if s.size == 0 or z.size == 0 or (z.size != 1 and z.size != s.size):
                raise CorruptFile(f"{where}: scale {list(s.shape)} / zero point {list(z.shape)} do not fit each other")
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

    def const_through_layout(self, name: str) -> Const | None:
        """The constant behind ``name`` also through Reshape / Flatten / Unsqueeze / Squeeze (a weight laid out to
        broadcast, e.g. ``weight[:, None, None]`` or the ONNX function bodies' ``Flatten(Scale)``): the stored
        tensor, in its own shape."""
        for _ in range(MAX_HOPS):
            c = self.const(name)
            if c is not None:
                return c
            node = self.src(name)
            if node is None or node.op_type not in LAYOUT_OPS or not node.input:
                return None
            name = node.input[0]
        return None

    # -- shapes (what the file declares, and what simple propagation tells) ----------------------
    def declared_dims(self, name: str) -> list[int | None] | None:
        """Dims a graph input/output/value_info declares for ``name`` (None entries: symbolic)."""
        if self._declared is None:
            self._declared = {}
            for vi in list(self.graph.input) + list(self.graph.output) + list(self.graph.value_info):
                t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
                if t is not None and t.HasField("shape"):
                    self._declared[vi.name] = [int(d.dim_value) if d.HasField("dim_value") else None
                                               for d in t.shape.dim]
            for name_, t in self.initializers.items():
                self._declared.setdefault(name_, [int(d) for d in t.dims])
        return self._declared.get(name)

    def rank(self, name: str, depth: int = 0) -> int | None:
        """The rank of a value: declared, or propagated through rank-preserving ops (bounded)."""
        if name in self._rank_cache:
            return self._rank_cache[name]
        self._rank_cache[name] = None  # cycles in hostile graphs
        result: int | None = None
        declared = self.declared_dims(name)
        node = self.producer.get(name)
        if declared is not None:
            result = len(declared)
        elif node is not None and depth < MAX_SHAPE_DEPTH and node.input:
            op = node.op_type
            if op in SAME_RANK_OPS:
                result = self.rank(node.input[0], depth + 1)
            elif op in BROADCAST_OPS:
                ranks = [self.rank(i, depth + 1) for i in node.input if i]
                result = max(ranks) if ranks and all(r is not None for r in ranks) else None  # type: ignore
            elif op in ("Gemm", "Flatten"):
                result = 2
            elif op == "Reshape" and len(node.input) > 1:
                vec = self.int_vector(node.input[1])
                result = len(vec[0]) if vec is not None and vec[1] else None
            elif op.startswith("Reduce") and attr(node, "keepdims", 1):
                result = self.rank(node.input[0], depth + 1)
            elif op == "Unsqueeze":
                r = self.rank(node.input[0], depth + 1)
                ax = self.axes_arg(node)
                result = r + len(ax) if r is not None and ax is not None else None
            elif op == "MatMul":
                ranks = [self.rank(i, depth + 1) for i in node.input[:2]]
                result = max(ranks) if all(r is not None and r >= 2 for r in ranks) else None  # type: ignore
        self._rank_cache[name] = result
        return result

    def dims(self, name: str, depth: int = 0) -> tuple[list[int | None], bool] | None:
        """Leading dims of a value as far as they are known (None: unknown), and whether the list is complete
        (its length is the rank).  Reshapes are followed through their shape vectors (0 copies the input dim)."""
        if name in self._dims_cache:
            cached = self._dims_cache[name]
            return (list(cached[0]), cached[1]) if cached is not None else None
        self._dims_cache[name] = None  # cycles
        result = self._dims(name, depth)
        self._dims_cache[name] = (list(result[0]), result[1]) if result is not None else None
        return result

    def _dims(self, name: str, depth: int) -> tuple[list[int | None], bool] | None:
        declared = self.declared_dims(name)
        if declared is not None:
            return list(declared), True
        c = self.const(name)
        if c is not None:
            return list(c.shape), True
        node = self.src(name, skip=("Identity", "Cast", "CastLike"))
        if node is None or depth >= MAX_SHAPE_DEPTH:
            return None
        if node.op_type == "Reshape" and len(node.input) > 1:
            vec = self.int_vector(node.input[1])
            if vec is None:
                return None
            inner = self.dims(node.input[0], depth + 1) if 0 in vec[0] and not attr(node, "allowzero", 0) else None
            out: list[int | None] = []
            for i, d in enumerate(vec[0]):
                if d == 0 and not attr(node, "allowzero", 0):
                    out.append(inner[0][i] if inner is not None and i < len(inner[0]) else None)
                else:
                    out.append(d if d is not None and d > 0 else None)
            return out, vec[1]
        if node.op_type in SHAPE_PRESERVING_OPS and node.input:
            return self.dims(node.input[0], depth + 1)
        if node.op_type in BROADCAST_OPS:
            shapes = [self.dims(i, depth + 1) for i in node.input if i]
            if shapes and all(sh is not None and sh[1] for sh in shapes):
                return _broadcast([sh[0] for sh in shapes]), True  # type: ignore[index]
        if node.op_type.startswith("Reduce") and attr(node, "keepdims", 1) and node.input:
            inner = self.dims(node.input[0], depth + 1)
            axes = self.axes_arg(node)
            if inner is not None and inner[1] and axes is not None and inner[0]:
                r = len(inner[0])
                return [1 if i in {a % r for a in axes} else d for i, d in enumerate(inner[0])], True
        rank = self.rank(name)
        return ([None] * rank, True) if rank is not None else None

    def int_vector(self, name: str, depth: int = 0) -> tuple[tuple[int | None, ...], bool] | None:
        """An int64 vector computed from constants and shapes (a Reshape target, reduction axes): its entries as far
        as known (None: a run-time value) and whether the list is complete."""
        if name in self._vector_cache:
            return self._vector_cache[name]
        self._vector_cache[name] = None
        result = self._int_vector(name, depth) if depth < MAX_SHAPE_DEPTH else None
        self._vector_cache[name] = result
        return result

    def _int_vector(self, name: str, depth: int) -> tuple[tuple[int | None, ...], bool] | None:
        c = self.const(name)
        if c is not None:
            if int(np.prod(c.shape or (1,))) > MAX_VECTOR:
                return None
            raw = raw_const(self, name)
            if raw is None:
                raw = c.load()
            return tuple(int(v) for v in np.asarray(raw).reshape(-1)), True
        node = self.producer.get(name)
        if node is None or not node.input:
            return None
        op = node.op_type
        sub = lambda i: self.int_vector(node.input[i], depth + 1) if len(node.input) > i and node.input[i] else None
        if op in ("Identity", "Cast", "Squeeze", "Unsqueeze"):
            return sub(0)
        if op == "Shape":
            rank = self.rank(node.input[0])
            dims = self.declared_dims(node.input[0])
            start, end = attr(node, "start", 0), attr(node, "end", None, kind=int)
            if rank is None:
                if start >= 0 and end is not None and end >= start:
                    return (None,) * (end - start), True
                return (), False
            full = tuple(dims) if dims is not None else (None,) * rank
            return tuple(full[slice(start, end)]), True
        if op == "Size":
            inner = self.producer.get(node.input[0])
            if inner is not None and inner.op_type == "Shape" and inner.input:
                rank = self.rank(inner.input[0])
                return ((rank,) if rank is not None else (None,)), True
            return (None,), True
        if op == "Concat":
            out: list[int | None] = []
            for inp in node.input:
                part = self.int_vector(inp, depth + 1)
                if part is None:
                    return tuple(out), False
                out.extend(part[0])
                if not part[1] or len(out) > MAX_VECTOR:
                    return tuple(out), False
            return tuple(out), True
        if op in ("Add", "Sub", "Mul", "Div") and len(node.input) == 2:
            a, b = sub(0), sub(1)
            if a is None or b is None or not a[1] or not b[1] or (len(a[0]) != len(b[0]) and 1 not in
                                                                      (len(a[0]), len(b[0]))):
                return None
            n = max(len(a[0]), len(b[0]))
            xs = a[0] * n if len(a[0]) == 1 else a[0]
            ys = b[0] * n if len(b[0]) == 1 else b[0]
            fn = {"Add": lambda x, y: x + y, "Sub": lambda x, y: x - y, "Mul": lambda x, y: x * y,
                  "Div": lambda x, y: x // y if y else None}[op]
            return tuple(fn(x, y) if x is not None and y is not None else None for x, y in zip(xs, ys)), True
        if op == "Range" and len(node.input) == 3:
            start, limit, delta = sub(0), sub(1), sub(2)
            if not all(v is not None and v[1] and len(v[0]) == 1 for v in (start, limit, delta)):
                return None
            s0, l0, d0 = start[0][0], limit[0][0], delta[0][0]  # type: ignore[index]
            if None in (s0, l0, d0) or d0 == 0:
                return None
            values = tuple(range(s0, l0, d0))  # type: ignore[arg-type]
            return (values, True) if len(values) <= MAX_VECTOR else None
        return None

    def axes_arg(self, node: Any) -> tuple[int, ...] | None:
        """The axes of a reduction / Unsqueeze / Squeeze: the attribute (older opsets) or the second input (newer),
        when constant; a ``Range(rank + k, rank, 1)`` over the input's rank (the ONNX function bodies' "axis k to
        the last") gives the negative axes k..-1."""
        axes = attr(node, "axes")
        if axes is not None:
            return tuple(int(a) for a in axes)
        if len(node.input) < 2 or not node.input[1]:
            return None
        vec = self.int_vector(node.input[1])
        if vec is not None and vec[1] and None not in vec[0]:
            return tuple(int(a) for a in vec[0])  # type: ignore[arg-type]
        rng = self.src(node.input[1])
        if rng is not None and rng.op_type == "Range" and len(rng.input) == 3:
            limit = self.src(rng.input[1])
            step = self.int_vector(rng.input[2])
            start = self.src(rng.input[0])
            is_rank = lambda n: n is not None and n.op_type == "Size" and self.src(n.input[0]) is not None and \
                self.src(n.input[0]).op_type == "Shape"  # noqa: E731
            if is_rank(limit) and step is not None and step[0] == (1,):
                if start is not None and start.op_type == "Add" and len(start.input) == 2:
                    for i, j in ((0, 1), (1, 0)):
                        k = self.int_vector(start.input[j])
                        if is_rank(self.src(start.input[i])) and k is not None and len(k[0]) == 1 and \
                                k[0][0] is not None and k[0][0] < 0:
                            return tuple(range(k[0][0], 0))
        return None

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


def _broadcast(shapes: list[list[int | None]]) -> list[int | None]:
    """numpy broadcasting of dims lists (None: unknown)."""
    r = max(len(sh) for sh in shapes)
    out: list[int | None] = []
    for i in range(r):
        dims = [sh[i - r + len(sh)] for sh in shapes if i - r + len(sh) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) == 1 and None not in dims:
            out.append(known.pop())
        elif not known and None not in dims:
            out.append(1)
        else:
            out.append(known.pop() if len(known) == 1 and all(d is not None for d in dims) else None)
    return out


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


def metadata_list(node: Any, key: str) -> list[str]:
    """A metadata value dynamo writes as a Python list literal (name scopes, class hierarchy); [] for anything
    else a file may hold there."""
    text = metadata(node).get(key)
    if not text or not isinstance(text, str) or len(text) > 1 << 16:
        return []
    try:
        parts = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return []
    return [str(p) for p in parts] if isinstance(parts, list) else []


def class_hierarchy(node: Any) -> list[str]:
    """The classes / aten ops a node came from, outermost first (dynamo's ``pkg.torch.onnx.class_hierarchy``)."""
    return metadata_list(node, "pkg.torch.onnx.class_hierarchy")


def module_of(node: Any) -> str:
    """The PyTorch module a node came from: dynamo name scopes, else the legacy exporter's node name."""
    parts = metadata_list(node, "pkg.torch.onnx.name_scopes")
    if len(parts) >= 2:
        return parts[-2]
    name = _text(node.name) or ""
    if name.startswith("/") and name.count("/") >= 2:
        return ".".join(p for p in name.split("/")[1:-1] if p)
    return ""


def module_from_tensor(name: str) -> str:
    for suffix in (".weight", ".bias", ".scale", ".gamma", ".beta"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return ""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value


def _text_names(graph: Any) -> None:
    """Names that are not valid UTF-8 come out of protobuf as bytes: make every name normaudit reads a str."""
    for node in graph.node:
        for key in ("name", "op_type", "domain"):
            if isinstance(getattr(node, key), bytes):
                setattr(node, key, _text(getattr(node, key)))
        for field in (node.input, node.output):
            if any(isinstance(v, bytes) for v in field):
                fixed = [_text(v) for v in field]
                del field[:]
                field.extend(fixed)
    for t in [*graph.initializer, *graph.input, *graph.output, *graph.value_info]:
        if isinstance(t.name, bytes):
            t.name = _text(t.name)


def attr(node: Any, name: str, default: Any = None, kind: type | None = None) -> Any:
    """A node attribute's value, of the type ``kind`` (or the default's type) — a hostile file may store any type
    under any name: that is one CorruptFile line, not a TypeError deep in a matcher."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            want = kind or (type(default) if default is not None else None)
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if want is tuple:
                want = (list, tuple)  # type: ignore[assignment]
            if want is not None and not isinstance(value, want):
                raise CorruptFile(f"node {node.name or node.op_type!r}: attribute {name!r} holds a "
                                  f"{type(value).__name__}, not the {getattr(want, '__name__', 'list')} "
                                  f"{node.op_type} defines")
            return value
    return default


