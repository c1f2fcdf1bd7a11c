"""ONNX norm patterns: fused ops (ONNX and ONNX Runtime contrib, MeanVarianceNormalization), norm ops in
disguise (InstanceNormalization as GroupNorm or LayerNorm, ReduceMean -> Sub -> RMSNormalization), and
decomposed norms recognised by what their values compute (:mod:`.dataflow`), whatever the exporter's spelling."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ...facts.onnx import AXIS_OPS, FUSED_OPS, LAYOUT_OPS, MVN_DEFAULT_AXES, MVN_EPSILON
from ...facts.torch import ATEN_NORMS, module_kind
from ...model import EpsSource, NormKind
from .dataflow import Flow, Moment, Sym, find_output
from .graph import (MAX_HOPS, Const, OnnxGraph, attr, class_hierarchy, module_from_tensor, module_of,
                    tensor_values)

# -- pattern matchers ---------------------------------------------------------------------------


@dataclass
class Found:
    kind: NormKind
    eps: float | None
    eps_source: EpsSource
    eps_detail: str
    eps_dtype: str
    weight: Const | None
    bias: Const | None
    nodes: list[Any]
    anchor: Any  # node whose scope names the layer
    num_groups: int | None = None
    mean: Const | None = None
    var: Const | None = None
    notes: tuple[str, ...] = ()
    axis: tuple[int, ...] = (-1,)
    input_name: str = ""  # tensor the norm normalises
    output_name: str = ""  # tensor after the affine (what the next op reads)
    axes_exact: bool = False  # ``axis`` lists exactly the normalized axes (not k..last)
    one_plus: bool = False  # the weight enters as (1 + w)


def axis_repr(g: OnnxGraph, x: str, axes: tuple[int, ...]) -> tuple[tuple[int, ...], bool]:
    """Normalized axes of ``x`` as a NormLayer records them: ``(k,)`` (k..last) when they run to the last axis,
    else the axes themselves with ``exact`` set for a single axis (a channels-first LayerNorm: ``(1,)``)."""
    r = g.rank(x)
    if r and axes:
        norm = sorted({a % r for a in axes})
        if norm == list(range(norm[0], r)):
            return (norm[0] - r,), False
        return tuple(norm), len(norm) == 1
    if axes and all(a < 0 for a in axes) and sorted(axes) == list(range(min(axes), 0)):
        return (min(axes),), False
    return tuple(sorted(axes)), len(axes) == 1


def fused(g: OnnxGraph, node: Any) -> Found | None:
    if not node.input or not node.input[0]:
        return None  # a norm op without its data input computes nothing normaudit can describe
    if node.op_type == "MeanVarianceNormalization" and node.domain in ("", "ai.onnx"):
        return mean_variance_normalization(g, node)
    spec = FUSED_OPS.get((node.domain, node.op_type))
    if spec is None:
        return None
    kind, w_idx, b_idx, default_eps = spec
    inputs = list(node.input)
    weight = g.const(inputs[w_idx]) if len(inputs) > w_idx and inputs[w_idx] else None
    bias = g.const(inputs[b_idx]) if b_idx is not None and len(inputs) > b_idx and inputs[b_idx] else None
    eps = attr(node, "epsilon", kind=float)
    notes: list[str] = []
    if eps is None:
        eps, source, detail = float(np.float32(default_eps)), EpsSource.ONNX_DEFAULT, f"{node.op_type} default epsilon"
    else:
        eps, source, detail = float(np.float32(eps)), EpsSource.ONNX_ATTRIBUTE, f"{node.name or node.op_type}.epsilon"
    found = Found(kind, eps, source, detail, "F32", weight, bias, [node], node,
                  input_name=inputs[0] if inputs else "", output_name=node.output[0] if node.output else "")
    if kind is NormKind.BATCH_NORM and len(inputs) >= 5:
        found.mean, found.var = g.const(inputs[3]), g.const(inputs[4])
    if kind is NormKind.GROUP_NORM:
        found.num_groups = attr(node, "num_groups", kind=int) or attr(node, "groups", kind=int)
        if weight is not None and found.num_groups and weight.shape and weight.shape[0] == found.num_groups:
            notes.append("GroupNormalization-18 scale/bias are per group")
    if node.op_type in AXIS_OPS:
        found.axis = (int(attr(node, "axis", -1)),)
    if node.domain == "com.microsoft" or node.op_type.startswith(("Skip", "Embed", "Simplified")):
        notes.append(f"ONNX Runtime fused op {node.domain or 'ai.onnx'}.{node.op_type}")
    found.notes = tuple(notes)
    return found


def mean_variance_normalization(g: OnnxGraph, node: Any) -> Found:
    """MeanVarianceNormalization: (x - mean) / (sqrt(var) + 1e-9) over ``axes`` (default [0, 2, 3])."""
    axes = tuple(int(a) for a in attr(node, "axes", MVN_DEFAULT_AXES))
    axis, exact = axis_repr(g, node.input[0], axes) if node.input else (axes, len(axes) == 1)
    nodes = [node]
    weight, bias, out = _follow_affine(g, node.output[0], nodes)
    return Found(NormKind.LAYER_NORM, float(np.float32(MVN_EPSILON)), EpsSource.ONNX_DEFAULT,
                 "MeanVarianceNormalization function body epsilon (added to the standard deviation)", "F32",
                 weight, bias, nodes, node, axis=axis, axes_exact=exact,
                 notes=(f"MeanVarianceNormalization over axes {list(axes)}: eps is added to sqrt(var), not to var",),
                 input_name=node.input[0] if node.input else "", output_name=out)


def _other_input(g: OnnxGraph, node: Any, value: str) -> str | None:
    """The one input of ``node`` that is not ``value`` (either reached through Cast/Identity)."""
    flow = Flow(g)
    base = flow.strip(value)
    others = [i for i in node.input if i and flow.strip(i) != base]
    return others[0] if len(others) == 1 and len(node.input) == 2 else None


def _follow_affine(g: OnnxGraph, out: str, nodes: list[Any]) -> tuple[Const | None, Const | None, str]:
    """After the normalised value: Mul(const weight) then Add(const bias), each optional, inputs in either
    order, through Cast / Identity and weight reshapes."""
    weight = bias = None
    nxt = g.only_consumer(out)
    if nxt is not None and nxt.op_type == "Mul":
        other = _other_input(g, nxt, out)
        c = g.const_through_layout(other) if other else None
        if c is not None:
            weight = c
            nodes.append(nxt)
            out = nxt.output[0]
            nxt = g.only_consumer(out)
    if nxt is not None and nxt.op_type == "Add":
        other = _other_input(g, nxt, out)
        c = g.const_through_layout(other) if other else None
        if c is not None and int(np.prod(c.shape or (1,))) > 1:
            bias = c
            nodes.append(nxt)
            out = nxt.output[0]
    return weight, bias, out


# -- decomposed norms, by what their values compute ------------------------------------------------------------

@dataclass
class _Layout:
    """Where a decomposed norm's statistics sit relative to its input."""

    x0: str  # the norm's input (casts and reshapes before the statistics undone)
    raw: str  # the norm's input as the graph names it (activation capture)
    kind: NormKind | None  # GROUP_NORM when the statistics are per group of a (N, G, -1) reshape
    axis: tuple[int, ...]
    exact: bool
    groups: int | None = None


def _layouts(g: OnnxGraph, flow: Flow, mom: Moment) -> list[_Layout]:
    """How the statistics' axes map to the norm's input, most specific first: through a Flatten (the ONNX
    LayerNormalization function body) or a grouping reshape (GroupNorm) whose output is put back in the input's
    shape, else the statistics' own axes on the value they are taken of."""
    x1 = mom.x
    axis, exact = axis_repr(g, x1, mom.axes)
    plain = _Layout(x1, mom.raw, None, axis, exact)
    chain: list[Any] = []
    v, raw = x1, mom.raw
    for _ in range(MAX_HOPS):
        node = g.producer.get(v)
        if node is None or node.op_type not in LAYOUT_OPS or not node.input:
            break
        chain.append(node)
        raw, v = node.input[0], flow.strip(node.input[0])
    if not chain:
        return [plain]
    last = chain[0]  # the op producing the reduced value
    if len(chain) == 1 and last.op_type == "Flatten" and {a % 2 for a in mom.axes} == {1}:
        return [_Layout(v, raw, None, (int(attr(last, "axis", 1)),), False), plain]
    dims = g.dims(x1)
    if mom.centred and dims is not None and dims[1] and len(dims[0]) >= 3 and \
            {a % len(dims[0]) for a in mom.axes} == set(range(2, len(dims[0]))) and isinstance(dims[0][1], int):
        return [_Layout(v, raw, NormKind.GROUP_NORM, (1,), False, dims[0][1]), plain]
    return [plain]


def _restores(g: OnnxGraph, flow: Flow, x0: str) -> Any:
    """Whether a layout op puts ``x0``'s shape back (Reshape to Shape(x0), or to x0's declared dims)."""
    def check(node: Any) -> bool:
        if node.op_type != "Reshape" or len(node.input) < 2:
            return False
        shp = g.src(node.input[1])
        if shp is not None and shp.op_type == "Shape" and shp.input and not any(
                a.name in ("start", "end") for a in shp.attribute):
            return flow.strip(shp.input[0]) == x0
        vec = g.int_vector(node.input[1])
        declared = g.declared_dims(x0)
        return bool(vec and vec[1] and declared and None not in declared and list(vec[0]) == declared)
    return check


def decomposed(g: OnnxGraph, add: Any, flow: Flow | None = None) -> Found | None:
    """Anchor: Add(v, eps) with v a variance or mean square (or its root: eps added to the standard deviation)."""
    if add.op_type != "Add" or len(add.input) != 2 or not add.output:
        return None
    flow = flow or Flow(g)
    for i, j in ((0, 1), (1, 0)):
        eps_info = g.scalar(add.input[j])
        if eps_info is None:
            continue
        mom, u_exp, root = flow.moment(add.input[i]), Fraction(-1, 2), None
        if mom is None:
            inner = flow.root(add.input[i])
            mom = flow.moment(inner) if inner is not None else None
            if mom is None:
                continue
            u_exp, root = Fraction(-1), flow.node(add.input[i])
        found = _decomposed_norm(g, flow, add, mom, eps_info, add.input[j], u_exp, root)
        if found is not None:
            return found
    return None


def _decomposed_norm(g: OnnxGraph, flow: Flow, add: Any, mom: Moment, eps_info: tuple[float, str], eps_name: str,
                     u_exp: Fraction, root: Any | None) -> Found | None:
    u = add.output[0]
    for lay in _layouts(g, flow, mom):
        sym = Sym(flow, mom.x, mom.axes, u)
        out = find_output(flow, sym, u, mom.centred, u_exp, _restores(g, flow, lay.x0), reshaped=lay.x0 != mom.x)
        if out is not None:
            break
    else:
        return None
    kind = lay.kind or (NormKind.LAYER_NORM if mom.centred else NormKind.RMS_NORM)
    what = {NormKind.LAYER_NORM: "LayerNorm", NormKind.RMS_NORM: "RMSNorm", NormKind.GROUP_NORM: "GroupNorm"}[kind]
    notes = [f"decomposed {what} pattern"] + mom.notes
    if lay.groups:
        notes.append(f"statistics per group of a reshape to (N, {lay.groups}, ...)")
    if root is not None:
        notes.append("eps is added to sqrt(var), not to var")
    if out.affine.one_plus:
        notes.append("weight enters as (1 + w)")
    if lay.exact:
        notes.append(f"normalizes axis {lay.axis[0]} only (channels-first)")
    nodes = mom.centre_nodes + mom.reduce_nodes + ([root] if root is not None else []) + [add] + out.nodes
    eps, eps_dtype = eps_info
    return Found(kind, eps, EpsSource.ONNX_CONSTANT, f"Add {add.name or add.output[0]} <- {eps_name}", eps_dtype,
                 out.affine.weight, out.affine.bias, nodes, add, num_groups=lay.groups, notes=tuple(notes),
                 axis=lay.axis, input_name=lay.raw, output_name=out.value, axes_exact=lay.exact,
                 one_plus=out.affine.one_plus)


# -- norm ops in disguise -------------------------------------------------------------------------------------

def _is_fill(g: OnnxGraph, name: str, value: float) -> bool:
    """Whether ``name`` holds only ``value`` (a constant, or ConstantOfShape of a run-time shape)."""
    if not name:
        return False
    c = g.const(name)
    if c is not None:
        return int(np.prod(c.shape or (1,))) <= 1 << 20 and bool(np.all(c.load() == value))
    node = g.src(name)
    if node is not None and node.op_type == "ConstantOfShape":
        fill = attr(node, "value")
        if fill is not None and not hasattr(fill, "dims"):
            return False  # not a tensor: not a fill constant
        if fill is None:
            return value == 0.0  # the spec's default fill
        if int(np.prod([int(d) for d in fill.dims] or [1])) != 1:
            return False
        arr = tensor_values(fill, g.base_dir, g.source)  # sizes checked, external data contained
        return arr.size == 1 and float(arr.reshape(-1)[0]) == value
    return False


def source_kind(node: Any) -> NormKind | None:
    """The norm the exporter says a node came from (dynamo's class hierarchy: the aten op, else the module)."""
    for entry in reversed(class_hierarchy(node)):
        if entry.startswith("aten."):
            spec = ATEN_NORMS.get(entry)
            if spec is not None:
                return spec.kind
            continue
        kind = module_kind(entry.rsplit(".", 1)[-1])
        if kind is not None:
            return kind
    return None


def instance_norm(g: OnnxGraph, found: Found, node: Any) -> Found:
    """InstanceNormalization as what it computes here: a GroupNorm (reshapes around it, or a GroupNorm module
    with one group per channel), a LayerNorm (unit scale over (N, S, D) then a per-D affine: tf2onnx), or itself."""
    grouped = group_norm_from_instance(g, found, node)
    if grouped is not found:
        return grouped
    unit = _is_fill(g, node.input[1], 1.0) if len(node.input) > 1 else False
    zero = len(node.input) < 3 or not node.input[2] or _is_fill(g, node.input[2], 0.0)
    rank = g.rank(node.input[0])
    if unit and zero and rank in (3, None):
        nodes = [node]
        weight, bias, out = _follow_affine(g, node.output[0], nodes)
        if weight is not None and len(weight.shape) == 1:
            return Found(NormKind.LAYER_NORM, found.eps, found.eps_source, found.eps_detail, found.eps_dtype,
                         weight, bias, nodes, node, axis=(-1,) if rank == 3 else (2,),
                         notes=("LayerNorm as InstanceNormalization with unit scale over (N, S, D), then the "
                                "per-D scale and shift (tf2onnx)",),
                         input_name=node.input[0], output_name=out)
    if source_kind(node) is NormKind.GROUP_NORM and found.weight is not None and found.weight.shape:
        channels = int(found.weight.shape[0])
        found.kind, found.num_groups = NormKind.GROUP_NORM, channels
        found.notes = found.notes + ("GroupNorm with one group per channel, exported as InstanceNormalization",)
        if unit and zero:  # the module's affine follows as a per-channel Mul / Add ([C, 1] constants)
            nodes = [node]
            weight, bias, out = _follow_affine(g, node.output[0], nodes)
            if weight is not None and int(np.prod(weight.shape)) == channels and \
                    (bias is None or int(np.prod(bias.shape)) == channels):
                found.weight, found.bias, found.nodes, found.output_name = weight, bias, nodes, out
    return found


def group_norm_from_instance(g: OnnxGraph, found: Found, node: Any) -> Found:
    """Reshape -> InstanceNormalization -> Reshape -> Mul -> Add is a GroupNorm (torch exporters < opset 21)."""
    before = g.src(node.input[0], skip=())
    after = g.only_consumer(node.output[0], skip=())
    if before is None or after is None or before.op_type != "Reshape" or after.op_type != "Reshape":
        return found
    groups = found.weight.shape[0] if found.weight is not None and found.weight.shape else None
    if groups is None:
        dims = g.dims(before.output[0])
        groups = dims[0][1] if dims is not None and len(dims[0]) > 1 else None
    nodes = [before, node, after]
    weight, bias, out = _follow_affine(g, after.output[0], nodes)
    return Found(NormKind.GROUP_NORM, found.eps, found.eps_source, found.eps_detail, found.eps_dtype,
                 weight, bias, nodes, node, num_groups=groups,
                 notes=("GroupNorm as Reshape -> InstanceNormalization -> Reshape -> Mul -> Add",),
                 input_name=before.input[0], output_name=out)


def centred_rms(g: OnnxGraph, found: Found, node: Any) -> Found:
    """ReduceMean -> Sub -> RMSNormalization over the same axes (then an optional bias Add) is a LayerNorm."""
    flow = Flow(g)
    c = flow.centred(node.input[0]) if node.input else None
    if c is None:
        return found
    x, mean, sub, raw = c
    axis, exact = axis_repr(g, x, mean.axes)
    r = g.rank(x)
    same = (not exact and (axis == found.axis or (r is not None and axis[0] % r == found.axis[0] % r)))
    if not same:
        return found
    nodes = list(mean.nodes) + [sub, node]
    _, bias, out = _follow_affine_bias(g, node.output[0], nodes)
    found.kind, found.bias, found.nodes = NormKind.LAYER_NORM, bias, nodes
    found.input_name, found.output_name = raw, out
    found.notes = found.notes + ("LayerNorm as ReduceMean -> Sub -> RMSNormalization",)
    return found


def _through_layout(flow: Flow, v: str) -> str:
    for _ in range(MAX_HOPS):
        node = flow.node(v)
        if node is None or node.op_type not in LAYOUT_OPS or not node.input:
            return flow.strip(v)
        v = node.input[0]
    return flow.strip(v)


def batch_norm_of_own_statistics(g: OnnxGraph, found: Found, node: Any) -> Found:
    """BatchNormalization whose mean / var inputs are computed from its own input normalizes over the statistics'
    axes: a LayerNorm.  tf2onnx writes Keras 2's fused LayerNorm this way (a training-mode FusedBatchNorm over a
    [1, rows, features, 1] reshape, unit scale, then Reshape back, Mul(gamma), Add(beta))."""
    if (found.mean is not None and found.var is not None) or len(node.input) < 5:
        return found
    flow = Flow(g)
    x = flow.strip(node.input[0])
    m = flow.mean(_through_layout(flow, node.input[3]))
    mom = flow.moment(_through_layout(flow, node.input[4]))
    if m is None or mom is None or not mom.centred or m.squared or m.x != x or mom.x != x or \
            not flow.same_axes(m.axes, mom.axes, x):
        return found
    if not (_is_fill(g, node.input[1], 1.0) and _is_fill(g, node.input[2], 0.0)):
        return found
    x0, raw = x, node.input[0]
    for _ in range(MAX_HOPS):
        prod = g.producer.get(x0)
        if prod is None or prod.op_type not in LAYOUT_OPS or not prod.input:
            break
        raw, x0 = prod.input[0], flow.strip(prod.input[0])
    nodes = list(m.nodes) + mom.centre_nodes + mom.reduce_nodes + [node]
    out = node.output[0]
    notes = ["LayerNorm as BatchNormalization over its own statistics (tf2onnx: Keras fused LayerNorm)"]
    if x0 != x:
        nxt = g.only_consumer(out)
        if nxt is None or not _restores(g, flow, x0)(nxt):
            return found
        nodes.append(nxt)
        out = nxt.output[0]
    weight, bias, out = _follow_affine(g, out, nodes)
    if x0 == x:
        axis, exact = axis_repr(g, x, m.axes)
    else:
        axis, exact = _merged_axes(g, x0, x, m.axes), False
        if axis is None:
            if weight is None or len(weight.shape) != 1:
                return found
            axis = (-1,)
            notes.append("normalized axis taken from the 1-D scale (the reshape's sizes are not declared)")
    return Found(NormKind.LAYER_NORM, found.eps, found.eps_source, found.eps_detail, found.eps_dtype, weight, bias,
                 nodes, node, axis=axis, axes_exact=exact, notes=tuple(notes) + tuple(mom.notes),
                 input_name=raw, output_name=out)


def _merged_axes(g: OnnxGraph, x0: str, x: str, axes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The trailing axes of ``x0`` a reshape merged into the reduced axes of ``x`` (k..last), when sizes are known."""
    d0, d1 = g.dims(x0), g.dims(x)
    if d0 is None or d1 is None or not d0[1] or not d1[1] or None in d0[0] or None in d1[0]:
        return None
    r1 = len(d1[0])
    n = int(np.prod([d1[0][a % r1] for a in axes]))
    for k in range(len(d0[0]) - 1, -1, -1):
        if int(np.prod(d0[0][k:])) == n:
            return (k - len(d0[0]),)
    return None


def _follow_affine_bias(g: OnnxGraph, out: str, nodes: list[Any]) -> tuple[None, Const | None, str]:
    nxt = g.only_consumer(out)
    if nxt is not None and nxt.op_type == "Add":
        other = _other_input(g, nxt, out)
        c = g.const_through_layout(other) if other else None
        if c is not None and int(np.prod(c.shape or (1,))) > 1:
            nodes.append(nxt)
            return None, c, nxt.output[0]
    return None, None, out


def layer_id(g: OnnxGraph, found: Found) -> tuple[str, str]:
    """(id, module) for a found layer."""
    module = ""
    for node in [found.anchor] + found.nodes:
        module = module_of(node)
        if module:
            break
    if not module and found.weight is not None:
        module = module_from_tensor(found.weight.name)
    ident = module or found.anchor.name or found.anchor.output[0]
    return ident, module
