"""ONNX norm patterns: fused ops (ONNX and ONNX Runtime contrib) and the decomposed forms exporters write."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...facts.onnx import AXIS_OPS, FUSED_OPS
from ...model import EpsSource, NormKind
from .graph import PASS_THROUGH, Const, OnnxGraph, attr, module_from_tensor, module_of

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


def fused(g: OnnxGraph, node: Any) -> Found | None:
    spec = FUSED_OPS.get((node.domain, node.op_type))
    if spec is None:
        return None
    kind, w_idx, b_idx, default_eps = spec
    inputs = list(node.input)
    weight = g.const(inputs[w_idx]) if len(inputs) > w_idx and inputs[w_idx] else None
    bias = g.const(inputs[b_idx]) if b_idx is not None and len(inputs) > b_idx and inputs[b_idx] else None
    eps = attr(node, "epsilon")
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
        found.num_groups = attr(node, "num_groups", attr(node, "groups"))
        if weight is not None and found.num_groups and weight.shape and weight.shape[0] == found.num_groups:
            notes.append("GroupNormalization-18 scale/bias are per group")
    if node.op_type in AXIS_OPS:
        found.axis = (int(attr(node, "axis", -1)),)
    if node.domain == "com.microsoft" or node.op_type.startswith(("Skip", "Embed", "Simplified")):
        notes.append(f"ONNX Runtime fused op {node.domain or 'ai.onnx'}.{node.op_type}")
    found.notes = tuple(notes)
    return found


def _follow_affine(g: OnnxGraph, out: str, nodes: list[Any]) -> tuple[Const | None, Const | None, str]:
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
        if inp == value or (src is not None and src.op_type in PASS_THROUGH and src.input and src.input[0] == value):
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


def decomposed(g: OnnxGraph, add: Any) -> Found | None:
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
    return Found(kind, eps, EpsSource.ONNX_CONSTANT, f"Add {add.name or add.output[0]} <- {eps_name}", eps_dtype,
                  weight, bias, nodes, anchor,
                  notes=(f"decomposed {'LayerNorm' if kind is NormKind.LAYER_NORM else 'RMSNorm'} pattern",),
                  input_name=source_x, output_name=out)


def group_norm_from_instance(g: OnnxGraph, found: Found, node: Any) -> Found:
    """Reshape -> InstanceNormalization -> Reshape -> Mul -> Add is a GroupNorm (torch exporters < opset 21)."""
    before = g.src(node.input[0], skip=())
    after = g.only_consumer(node.output[0], skip=())
    if before is None or after is None or before.op_type != "Reshape" or after.op_type != "Reshape":
        return found
    groups = found.weight.shape[0] if found.weight is not None and found.weight.shape else None
    nodes = [before, node, after]
    weight, bias, out = _follow_affine(g, after.output[0], nodes)
    return Found(NormKind.GROUP_NORM, found.eps, found.eps_source, found.eps_detail, found.eps_dtype,
                  weight, bias, nodes, node, num_groups=groups,
                  notes=("GroupNorm as Reshape -> InstanceNormalization -> Reshape -> Mul -> Add",),
                  input_name=before.input[0], output_name=out)


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


