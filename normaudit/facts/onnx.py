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

#: MeanVarianceNormalization (opset 13): ``(X - mean) / (sqrt(var) + eps)`` over ``axes`` (default [0, 2, 3]);
#: the op has no epsilon attribute: its function body adds the constant 1e-9 to the standard deviation
MVN_DEFAULT_AXES: tuple[int, ...] = (0, 2, 3)
MVN_EPSILON = 1e-9

#: ops that only rearrange a value (same values, another shape): followed on activation and weight paths
LAYOUT_OPS: frozenset[str] = frozenset({"Reshape", "Flatten", "Unsqueeze", "Squeeze"})

#: ops whose output has the shape of their first input (shape propagation where the file declares no shapes)
SHAPE_PRESERVING_OPS: frozenset[str] = frozenset({
    "Identity", "Cast", "CastLike", "Neg", "Abs", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Exp", "Log", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Clip", "Dropout", "Softmax", "LogSoftmax",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization", "RMSNormalization",
    "MeanVarianceNormalization", "LpNormalization", "CumSum", "Trilu", "Not", "IsNaN", "IsInf",
})
#: ops whose output has the rank (not the shape) of their first input
SAME_RANK_OPS: frozenset[str] = SHAPE_PRESERVING_OPS | frozenset({
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "Transpose",
    "Pad", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "Slice", "Tile",
})
#: elementwise ops with numpy broadcasting: the output rank is the largest input rank
BROADCAST_OPS: frozenset[str] = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Equal",
                                           "Less", "Greater", "And", "Or", "Xor", "Mod", "BitShift"})
#: convs / Gemms a BatchNorm can be folded into: op -> (LinearOp.op, axis of the weight holding the output
#: channels).  A Gemm's output channels are on axis 0 with transB=1 ([out, in]), on axis 1 with transB=0.
FOLD_TARGETS: dict[str, tuple[str, int]] = {"Conv": ("conv", 0), "ConvTranspose": ("conv_transpose", 1),
                                            "Gemm": ("linear", 1)}
