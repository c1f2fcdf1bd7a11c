"""ONNX: fused norm ops (ONNX and ONNX Runtime contrib) and decomposed norms recognised by what their values
compute, with eps read from the attribute or from the Add(eps) constant; convs/ConvTransposes/Gemms kept for
BatchNorm fold checks."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from ...errors import CorruptFile, located, reading
from ...facts.torch import qk_role
from ...facts.onnx import FOLD_TARGETS
from ...model import Convention, LinearOp, NormKind, NormLayer, NormModel, unique_ids
from ..base import LoadOptions, Probe
from .contracts import embedding_from_graph, graph_outputs, preprocess_from_graph
from .graph import OnnxGraph, attr, class_hierarchy, metadata, module_of
from .dataflow import Flow
from .patterns import (Found, batch_norm_of_own_statistics, centred_rms, decomposed, fused, instance_norm,
                       layer_id)


def find_norms(g: OnnxGraph) -> list[Found]:
    """Every norm in graph order: fused ops first (and what they really compute), else a decomposed norm anchored
    at its Add(eps) node."""
    used: set[int] = set()
    found_list: list[Found] = []
    flow = Flow(g)
    for node in g.nodes:
        if id(node) in used:
            continue
        found = fused(g, node)
        if found is not None and found.kind is NormKind.INSTANCE_NORM:
            found = instance_norm(g, found, node)
        elif found is not None and found.kind is NormKind.RMS_NORM and node.op_type == "RMSNormalization":
            found = centred_rms(g, found, node)
        elif found is not None and found.kind is NormKind.BATCH_NORM:
            found = batch_norm_of_own_statistics(g, found, node)
        if found is None:
            found = decomposed(g, node, flow)
        if found is None:
            continue
        used.update(id(n) for n in found.nodes)
        found_list.append(found)
    return found_list


def _layer(g: OnnxGraph, found: Found) -> NormLayer:
    ident, module = layer_id(g, found)
    layer = NormLayer(
        id=ident, kind=found.kind, eps=found.eps, eps_source=found.eps_source, eps_detail=found.eps_detail,
        eps_dtype=found.eps_dtype,
        weight=found.weight.ref() if found.weight else None,
        bias=found.bias.ref() if found.bias else None,
        running_mean=found.mean.ref() if found.mean else None,
        running_var=found.var.ref() if found.var else None,
        num_groups=int(found.num_groups) if found.num_groups else None,
        axis=found.axis, axes_exact=found.axes_exact, module=module, role=qk_role(module),
        convention=Convention.ONE_PLUS if found.one_plus else Convention.SCALE,
        nodes=[n.name or n.output[0] for n in found.nodes], notes=list(found.notes),
        input_name=found.input_name, output_name=found.output_name,
    )
    for c in (found.weight, found.bias):
        if c is not None and c.via:
            layer.notes.append(f"{c.name} reaches the norm through {c.via}")
    return layer


def _linear_ops(g: OnnxGraph) -> list[LinearOp]:
    """Convs, ConvTransposes and Gemms with constant weights: where BatchNorms get folded to, with the weight
    layout (output-channel axis, groups) and Gemm's alpha / beta."""
    ops = []
    for node in g.nodes:
        target = FOLD_TARGETS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if target is None or len(node.input) < 2:
            continue
        w = g.const(node.input[1])
        if w is None:
            continue
        b = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        op, out_axis = target
        groups, alpha, beta = 1, 1.0, 1.0
        if node.op_type == "Gemm":
            if attr(node, "transA", 0) or len(w.shape) != 2:
                continue
            out_axis = 0 if attr(node, "transB", 0) else 1
            alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
        elif node.op_type == "ConvTranspose":
            groups = int(attr(node, "group", 1) or 1)
            if len(w.shape) < 2 or groups < 1 or w.shape[0] % groups:
                continue
        ops.append(LinearOp(node.name or node.output[0], op, w.ref(), b.ref() if b else None, module_of(node),
                            [node.name], out_axis=out_axis, groups=groups, alpha=alpha, beta=beta))
    return ops


def load_onnx(path: Path) -> NormModel:
    import onnx

    with reading(path, "corrupt or truncated ONNX file"):
        model = onnx.load(str(path), load_external_data=False)
    if not model.graph.node:
        raise CorruptFile(f"{path}: ONNX file has an empty graph (corrupt, truncated or not an ONNX model)")
    g = OnnxGraph(model, path.parent, path)
    with located(path):
        norms = [_layer(g, found) for found in find_norms(g)]
        linear_ops = _linear_ops(g)
    unique_ids(norms)  # the same module applied twice (or shared scopes) keeps distinct ids
    out = NormModel(path=str(path), format="onnx", architecture=_architecture(g), norms=norms, container="onnx",
                    linear_ops=linear_ops)
    out.metadata = {"opsets": {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import},
                    "producer": f"{model.producer_name} {model.producer_version}".strip(),
                    "outputs": graph_outputs(g)}
    out.preprocess = preprocess_from_graph(g)
    out.embedding = embedding_from_graph(g)
    return out


def _architecture(g: OnnxGraph) -> str | None:
    """The exported PyTorch class (from dynamo's class hierarchy metadata), if recorded."""
    for node in g.nodes[:50]:
        # module classes are qualified names; skip the leaf op (aten.*) and the exporter's own hooks
        # (``_empty_nn_module_stack_from_metadata_hook`` on nodes it inserts)
        classes = [c for c in class_hierarchy(node) if "." in c and not c.startswith(("aten.", "prims.", "_operator."))]
        for cls in classes:
            if cls.startswith("transformers.models."):
                return cls.rsplit(".", 1)[-1]
        if classes:
            return classes[0].rsplit(".", 1)[-1]
    return None


class OnnxFormat:
    name = "onnx"
    family = "onnx"
    description = "ONNX protobuf"

    def sniff(self, probe: Probe) -> bool:
        # ModelProto starts with field 1 (ir_version, varint: 0x08) in every exporter we know; else the suffix
        return not probe.is_dir and (probe.head[:1] == b"\x08" or probe.path.suffix.lower() == ".onnx")

    def load(self, path: Path, options: LoadOptions) -> NormModel:
        return load_onnx(path)

    def runner(self, path: Path, model: NormModel, ctx: Any) -> Any:
        from ...activations.runners.onnx import OnnxRunner

        return OnnxRunner(path, model)
