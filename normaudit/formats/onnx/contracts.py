"""The contracts an ONNX graph carries in its own nodes: the normalization on its image input (per-channel
Sub/Div or Mul/Add constants, a scalar rescale) and the pooling / L2 normalization at the end of an embedding
model.  Bounded walks over the dataflow (a hostile graph may loop)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...contracts import Embedding, Preprocess, Where
from ...facts import preprocess as pfacts
from .graph import PASS_THROUGH, OnnxGraph, attr

MAX_CHAIN = 16  # elementwise ops followed from the image input before giving up
MAX_BACK = 12  # ops followed back from a norm's denominator to its ReduceL2


def _dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def image_input(g: OnnxGraph) -> tuple[str, int] | None:
    """(name, channels) of the graph's float NCHW image input, if it has one."""
    from onnx import helper

    init = set(g.initializers)
    for gi in g.graph.input:
        if gi.name in init or not gi.type.HasField("tensor_type"):
            continue
        try:
            kind = helper.tensor_dtype_to_np_dtype(gi.type.tensor_type.elem_type).kind
        except (KeyError, ValueError, TypeError):
            continue
        dims = _dims(gi)
        if kind in "fu" and len(dims) == 4 and dims[1] in pfacts.IMAGE_CHANNELS:
            return gi.name, int(dims[1])
    return None


def _per_channel(values: np.ndarray, channels: int) -> np.ndarray | float | None:
    """A constant's values as one per channel (shape [C], [C,1,1], [1,C,1,1]) or a scalar; None otherwise."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return float(v.reshape(-1)[0])
    squeezed = v.reshape(-1)
    if squeezed.size != channels:
        return None
    shape = [d for d in v.shape]
    # the channel axis must be axis 1 of NCHW after broadcasting: [C,1,1], [1,C,1,1] (not [1,1,1,C])
    if v.ndim >= 3 and shape[-3] == channels and all(d == 1 for d in shape[-2:]):
        return squeezed
    if v.ndim == 1:
        return None  # [C] broadcasts over W, not channels
    return None


def preprocess_from_graph(g: OnnxGraph) -> Preprocess | None:
    """The normalization ops on the image input, composed into one per-channel affine; or, when the input goes
    straight into the model, a record that says the file cannot tell (outside the graph, or folded)."""
    found = image_input(g)
    if found is None:
        return None
    name, channels = found
    x = name
    a, b = np.ones(channels), np.zeros(channels)
    rescale: float | None = None
    additive_seen = False
    nodes: list[str] = []
    notes: list[str] = []
    consts: list[str] = []
    for _ in range(MAX_CHAIN):
        node = g.only_consumer(x, skip=PASS_THROUGH)
        if node is None or node.op_type not in ("Sub", "Div", "Mul", "Add") or len(node.input) != 2:
            break
        ins = list(node.input)
        # x may have reached this node through Identity/Cast: find which input carries it
        live = next((i for i, t in enumerate(ins) if g.const(t) is None), None)
        if live is None or g.const(ins[1 - live]) is None:
            break
        const = g.const(ins[1 - live])
        k = _per_channel(const.load(), channels)
        if k is None:
            notes.append(f"{node.op_type} {node.name}: constant of shape {list(const.shape)} is not per channel")
            break
        if node.op_type == "Div" and live == 1:
            notes.append(f"{node.name}: divides a constant by the input (not an affine map)")
            break
        scalar = isinstance(k, float)
        if node.op_type in ("Mul", "Div"):
            f = k if node.op_type == "Mul" else 1.0 / np.asarray(k)
            if scalar and not additive_seen and abs(float(f)) < pfacts.MAX_RESCALE:
                rescale = (rescale or 1.0) * float(f)  # x / 255 (or * 1/127.5...) before the mean subtraction
            a, b = a * f, b * f
        elif node.op_type == "Add":
            b = b + k
            additive_seen = True
        else:  # Sub
            if live == 0:
                b = b - k
            else:
                a, b = -a, k - b
            additive_seen = True
        nodes.append(node.name or node.output[0])
        consts.append(f"{node.op_type} {node.name or node.output[0]} ({ins[1 - live]})")
        x = node.output[0]
    conv = g.only_consumer(x, skip=PASS_THROUGH)
    conv_id = (conv.name or conv.output[0]) if conv is not None and conv.op_type == "Conv" else ""
    if not nodes:
        out = Preprocess(where=Where.UNKNOWN, input=name, conv=conv_id, notes=notes)
        out.notes.append(
            f"the image input {name!r} " + (f"feeds Conv {conv_id} directly" if conv_id else "has no normalization ops")
            + ": normalization is applied outside the graph or folded into the first conv's weights; this file "
              "alone cannot tell (compare against the source model to recover a fold)")
        return out
    out = decode_affine(a, b, rescale, additive_seen, Where.GRAPH, input_name=name, conv=conv_id)
    out.nodes, out.notes = nodes, notes + out.notes
    out.sources = {"affine": "ONNX " + ", ".join(consts), **out.sources}
    return out


def decode_affine(a: np.ndarray, b: np.ndarray, rescale: float | None, additive: bool, where: str,
                  input_name: str = "", conv: str = "") -> Preprocess:
    """A per-channel affine ``y = a x + b`` on the image input as a preprocessing contract
    ``(rescale * x - mean) / std``.  Without a scalar rescale the input is taken as pixels / 255, unless every
    std is above 1.5 (constants in pixel units: raw 0..255 input)."""
    out = Preprocess(where=where, input=input_name, conv=conv, do_normalize=True)
    std = (rescale if rescale is not None else 1.0) / np.asarray(a, dtype=np.float64)
    mean = -np.asarray(b, dtype=np.float64) * std
    if not additive and np.allclose(std, 1.0):  # only a rescale: no mean/std
        out.do_normalize = False
    elif rescale is None and np.all(np.abs(std) > 1.5):
        out.notes.append("no scalar rescale on the input and std > 1: the constants are in pixel units, so the "
                         "input is raw 0..255 pixels")
        rescale = 1.0
        out.sources["rescale"] = "assumed: constants in pixel units"
    elif rescale is None:
        out.notes.append("no scalar rescale on the input: it expects pixels already divided by 255")
    if rescale is not None and "rescale" not in out.sources:
        out.sources["rescale"] = "ONNX graph: scalar scale before the mean subtraction"
    out.rescale, out.do_rescale = rescale, rescale is not None
    if out.do_normalize:
        out.mean, out.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        out.sources["mean"] = out.sources["std"] = "ONNX graph: the per-channel affine of those nodes"
    return out


# -- embedding output ---------------------------------------------------------------------------------------

def _axes(g: OnnxGraph, node: Any) -> list[int] | None:
    """The axes a Reduce* node reduces (attribute, or the second input from opset 13/18)."""
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        c = g.const(node.input[1])
        if c is not None:
            axes = [int(v) for v in c.load().reshape(-1)]
    return None if axes is None else [int(v) for v in axes]


_THROUGH = PASS_THROUGH + ("Clip", "Max", "Expand", "Unsqueeze", "Reshape", "Squeeze", "Add")


def _reaches_l2_of(g: OnnxGraph, denom: str, x: str) -> list[Any] | None:
    """The nodes of ``||x||_2`` (ReduceL2, or Sqrt of ReduceSum(x*x) / ReduceSumSquare) behind ``denom``
    (through clamps, broadcasts and an eps Add), or None."""
    nodes: list[Any] = []
    name = denom
    for _ in range(MAX_BACK):
        node = g.producer.get(name)
        if node is None:
            return None
        nodes.append(node)
        if node.op_type == "ReduceL2" and node.input[0] == x:
            return nodes
        if node.op_type == "Sqrt":
            inner = g.producer.get(node.input[0])
            if inner is not None and inner.op_type == "ReduceSumSquare" and inner.input[0] == x:
                return nodes + [inner]
            if inner is not None and inner.op_type == "ReduceSum":
                sq = g.producer.get(inner.input[0])
                if sq is not None and ((sq.op_type == "Mul" and list(sq.input) == [x, x]) or
                                       (sq.op_type == "Pow" and sq.input[0] == x)):
                    return nodes + [inner, sq]
            return None
        if node.op_type not in _THROUGH or not node.input:
            return None
        name = node.input[0]
    return None


def _normalization(g: OnnxGraph, out: str) -> tuple[str, list[Any]] | None:
    """(the tensor before it, nodes) when ``out`` is produced by an L2 normalization."""
    node = g.src(out)
    if node is None:
        return None
    if node.op_type == "LpNormalization" and int(attr(node, "p", 2)) == 2:
        return node.input[0], [node]
    if node.op_type == "Div" and len(node.input) == 2:
        chain = _reaches_l2_of(g, node.input[1], node.input[0])
        if chain is not None:
            return node.input[0], [node] + chain
    if node.op_type == "Mul" and len(node.input) == 2:
        for i in (0, 1):
            rec = g.producer.get(node.input[1 - i])
            if rec is not None and rec.op_type == "Reciprocal":
                chain = _reaches_l2_of(g, rec.input[0], node.input[i])
                if chain is not None:
                    return node.input[i], [node, rec] + chain
    return None


def _pooling(g: OnnxGraph, x: str) -> tuple[str, list[Any], str] | None:
    """(pooling, nodes, what the graph does) of the op producing ``x`` from [batch, seq, dim] token states."""
    node = g.src(x)
    if node is None:
        return None
    label = node.name or node.output[0]
    if node.op_type == "ReduceMean" and _axes(g, node) == [1]:
        return "mean", [node], f"ReduceMean {label} over the sequence axis"
    if node.op_type == "ReduceMax" and _axes(g, node) == [1]:
        return "max", [node], f"ReduceMax {label} over the sequence axis"
    if node.op_type == "Div" and len(node.input) == 2:  # masked mean: sum(h * mask) / clamp(sum(mask))
        num = g.src(node.input[0])
        if num is not None and num.op_type == "ReduceSum" and _axes(g, num) == [1]:
            return "mean", [node, num], (f"masked mean: ReduceSum {num.name or num.output[0]} over the sequence "
                                         f"axis, divided by the token count ({label})")
    if node.op_type == "Gather" and int(attr(node, "axis", 0)) == 1 and len(node.input) == 2:
        idx = g.const(node.input[1])
        if idx is not None and idx.load().size == 1:
            i = int(idx.load().reshape(-1)[0])
            pooling = "cls" if i == 0 else "last" if i == -1 else f"token {i}"
            return pooling, [node], f"Gather {label} of token {i} on the sequence axis"
        return "last", [node], f"Gather {label} of a computed token on the sequence axis (the last real token)"
    if node.op_type in ("Squeeze", "Reshape"):
        sl = g.src(node.input[0])
        if sl is not None and sl.op_type == "Slice" and len(sl.input) >= 3:
            starts, ends = g.const(sl.input[1]), g.const(sl.input[2])
            axes = g.const(sl.input[3]) if len(sl.input) > 3 and sl.input[3] else None
            if starts is not None and ends is not None and (axes is None or
                                                            axes.load().reshape(-1).tolist() == [1]):
                if int(starts.load().reshape(-1)[0]) == 0 and int(ends.load().reshape(-1)[0]) == 1:
                    return "cls", [node, sl], f"Slice {sl.name or sl.output[0]} of token 0 on the sequence axis"
    return None


def graph_outputs(g: OnnxGraph) -> list[dict[str, Any]]:
    return [{"name": o.name, "rank": len(_dims(o)) if o.type.tensor_type.HasField("shape") else None,
             "dims": _dims(o)} for o in g.graph.output]


def embedding_from_graph(g: OnnxGraph) -> Embedding | None:
    """Pooling and L2 normalization at the end of the graph's first output; None when neither is there (an
    encoder's token states, a classifier's logits: nothing the file says about embeddings)."""
    if not g.graph.output:
        return None
    out = g.graph.output[0].name
    norm = _normalization(g, out)
    x = norm[0] if norm else out
    pool = _pooling(g, x)
    if norm is None and pool is None:
        return None
    nodes = [n.name or n.output[0] for n in (norm[1] if norm else []) + (pool[1] if pool else [])]
    emb = Embedding(where="graph", pooling=pool[0] if pool else None, normalize=norm is not None, output=out,
                    nodes=nodes)
    emb.sources["normalize"] = (f"ONNX {norm[1][0].op_type} {norm[1][0].name or norm[1][0].output[0]} "
                                "divides by the L2 norm" if norm else "ONNX: the output is not divided by its L2 norm")
    emb.sources["pooling"] = f"ONNX {pool[2]}" if pool else "ONNX: no pooling op recognised before the output"
    dims = _dims(g.graph.output[0])
    emb.dim = dims[-1] if dims and dims[-1] else None
    return emb
