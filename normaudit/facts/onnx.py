"""ONNX norm ops: the ONNX standard ops and ONNX Runtime's contrib fusions, with their input layout and the
epsilon default of the op specification (onnx/docs/Operators.md, onnxruntime/docs/ContribOperators.md)."""

from __future__ import annotations

from typing import NamedTuple

from ..model import NormKind


class FusedOp(NamedTuple):
    kind: NormKind
    scale_input: int  # index of the scale (gamma) input
    bias_input: int | None  # index of the bias (beta) input
    default_eps: float  # epsilon when the attribute is absent (op spec)


#: (domain, op_type) -> how to read the op
FUSED_OPS: dict[tuple[str, str], FusedOp] = {
    ("", "LayerNormalization"): FusedOp(NormKind.LAYER_NORM, 1, 2, 1e-5),
    ("", "RMSNormalization"): FusedOp(NormKind.RMS_NORM, 1, None, 1e-5),
    ("", "BatchNormalization"): FusedOp(NormKind.BATCH_NORM, 1, 2, 1e-5),
    ("", "InstanceNormalization"): FusedOp(NormKind.INSTANCE_NORM, 1, 2, 1e-5),
    ("", "GroupNormalization"): FusedOp(NormKind.GROUP_NORM, 1, 2, 1e-5),
    ("com.microsoft", "SimplifiedLayerNormalization"): FusedOp(NormKind.RMS_NORM, 1, None, 1e-5),
    ("com.microsoft", "SkipLayerNormalization"): FusedOp(NormKind.LAYER_NORM, 2, 3, 1e-12),
    ("com.microsoft", "SkipSimplifiedLayerNormalization"): FusedOp(NormKind.RMS_NORM, 2, None, 1e-12),
    ("com.microsoft", "EmbedLayerNormalization"): FusedOp(NormKind.LAYER_NORM, 5, 6, 1e-12),
    ("com.microsoft", "GroupNorm"): FusedOp(NormKind.GROUP_NORM, 1, 2, 1e-5),
    ("com.microsoft", "LayerNormalization"): FusedOp(NormKind.LAYER_NORM, 1, 2, 1e-5),
    # ONNX Runtime registers SimplifiedLayerNormalization in the default domain too
    ("", "SimplifiedLayerNormalization"): FusedOp(NormKind.RMS_NORM, 1, None, 1e-5),
}
# ONNX's own ops also appear with the "ai.onnx" domain spelling
FUSED_OPS.update({("ai.onnx", op): v for (dom, op), v in list(FUSED_OPS.items()) if dom == ""})

#: ops with an ``axis`` attribute: the first normalized axis (normalization runs from it to the last axis)
AXIS_OPS: frozenset[str] = frozenset({"LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"})
