"""ONNX norms recognised by what their values compute, whatever the op spelling: graphs built with onnx.helper in
the spellings exporters and tools write (torch legacy / dynamo, the ONNX spec's own function bodies expanded with
onnx's inliner, tf2onnx's op sequences, onnxscript inlining).  Every graph is also run with onnxruntime: the norm's
recorded input through ``kernels.apply_layer`` must give the graph's own output (so kind, eps, axis and weights are
right, not just present)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
import pytest
from onnx import TensorProto, defs, helper, numpy_helper

import normaudit
from normaudit import EpsSource, NormKind, kernels

ort = pytest.importorskip("onnxruntime")

rng = np.random.default_rng(0)
D = 16
W = (1 + 0.1 * rng.normal(size=D)).astype(np.float32)
B = (0.1 * rng.normal(size=D)).astype(np.float32)
C = 8  # channels of the (N, C, H, W) graphs
WC = (1 + 0.1 * rng.normal(size=C)).astype(np.float32)
BC = (0.1 * rng.normal(size=C)).astype(np.float32)
X3 = [2, 4, D]
X4 = [2, C, 4, 4]


def f32(v: float) -> float:
    return float(np.float32(v))


def init(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value)))


def save(tmp_path, nodes, inits=(), shape=X3, opset=18, name="m.onnx", extra_opsets=(), functions=(),
         declare_output=True, x_dtype=TensorProto.FLOAT):
    graph = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("x", x_dtype, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             shape if declare_output else None)], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)] +
                              [helper.make_opsetid(d, v) for d, v in extra_opsets], functions=list(functions))
    model.ir_version = 10
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def run_layers(path, x: np.ndarray) -> list:
    """Load ``path``; for every norm, run the graph with onnxruntime exposing the norm's input and output and check
    that kernels.apply_layer(layer, input) reproduces the output.  Returns the layers."""
    model = normaudit.load(path)
    proto = onnx.load(str(path))
    names = [n for layer in model.norms for n in (layer.input_name, layer.output_name)]
    have = {o.name for o in proto.graph.output} | {i.name for i in proto.graph.input}
    for n in dict.fromkeys(names):
        if n not in have:
            proto.graph.output.append(onnx.ValueInfoProto(name=n))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    values = dict(zip(outs, sess.run(outs, {"x": x})))
    values["x"] = x
    for layer in model.norms:
        assert layer.input_name in values and layer.output_name in values, layer
        got = kernels.apply_layer(layer, values[layer.input_name].astype(np.float32))
        want = values[layer.output_name].astype(np.float32)
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=2e-4, atol=2e-4, err_msg=layer.id)
    return model.norms


def xin(shape=X3, seed=1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * 2 + 0.5).astype(np.float32)


# -- building blocks of decomposed norms, in every spelling -------------------------------------------------------

def reduce_mean(inp: str, out: str, axes, opset: int, how: str = "mean", n: int = D) -> list:
    """mean over ``axes``: ReduceMean (axes as attribute below opset 18, as input from 18), or ReduceSum * 1/n,
    or ReduceSum / n."""
    ax = f"{out}_axes"
    def red(op, o):
        if opset >= 18 or (op == "ReduceSum" and opset >= 13):
            return [const(ax, np.array(axes, np.int64)), helper.make_node(op, [inp, ax], [o], keepdims=1)]
        return [helper.make_node(op, [inp], [o], axes=list(axes), keepdims=1)]
    if how == "mean":
        return red("ReduceMean", out)
    if how == "sum_mul":
        return red("ReduceSum", out + "_s") + [const(out + "_k", np.float32(1.0 / n)),
                                               helper.make_node("Mul", [out + "_k", out + "_s"], [out])]
    return red("ReduceSum", out + "_s") + [const(out + "_n", np.float32(n)),
                                           helper.make_node("Div", [out + "_s", out + "_n"], [out])]


def square(inp: str, out: str, how: str) -> list:
    if how == "pow":
        return [const(out + "_2", np.float32(2.0)), helper.make_node("Pow", [inp, out + "_2"], [out])]
    return [helper.make_node("Mul", [inp, inp], [out])]


def add_eps(var: str, out: str, eps, how: str) -> list:
    """var + eps: eps a Constant, Cast or CastLike to float, on the left or the right."""
    e = np.asarray(eps)
    nodes = [const(out + "_e", e)]
    name = out + "_e"
    if "cast" in how:
        nodes.append(helper.make_node("Cast", [name], [out + "_ec"], to=TensorProto.FLOAT))
        name = out + "_ec"
    if "castlike" in how:
        nodes[-1] = helper.make_node("CastLike", [out + "_e", var], [out + "_ec"])
    ins = [name, var] if "left" in how else [var, name]
    return nodes + [helper.make_node("Add", ins, [out])]


def normalise(d: str, ve: str, out: str, how: str) -> list:
    """d / sqrt(ve) in the spellings exporters use."""
    if how == "sqrt_div":
        return [helper.make_node("Sqrt", [ve], [out + "_r"]), helper.make_node("Div", [d, out + "_r"], [out])]
    if how == "sqrt_recip_mul":  # dynamo, onnxscript, tf2onnx's Rsqrt
        return [helper.make_node("Sqrt", [ve], [out + "_r"]),
                helper.make_node("Reciprocal", [out + "_r"], [out + "_i"]),
                helper.make_node("Mul", [d, out + "_i"], [out])]
    if how == "pow_neg_half":
        return [const(out + "_p", np.float32(-0.5)), helper.make_node("Pow", [ve, out + "_p"], [out + "_i"]),
                helper.make_node("Mul", [out + "_i", d], [out])]
    if how == "div_one_sqrt":  # the legacy exporter's rsqrt
        return [helper.make_node("Sqrt", [ve], [out + "_r"]), const(out + "_1", np.float32(1.0)),
                helper.make_node("Div", [out + "_1", out + "_r"], [out + "_i"]),
                helper.make_node("Mul", [d, out + "_i"], [out])]
    if how == "pow_half_div":
        return [const(out + "_p", np.float32(0.5)), helper.make_node("Pow", [ve, out + "_p"], [out + "_r"]),
                helper.make_node("Div", [d, out + "_r"], [out])]
    raise ValueError(how)


def affine(n: str, out: str, how: str, w="w", b="b") -> list:
    """Scale and shift in either order of inputs; ``cast`` reads fp16 weights through Cast."""
    nodes = []
    if "cast" in how:
        nodes += [helper.make_node("Cast", [w], [w + "_f"], to=TensorProto.FLOAT),
                  helper.make_node("Cast", [b], [b + "_f"], to=TensorProto.FLOAT)]
        w, b = w + "_f", b + "_f"
    mul_in = [w, n] if "w_first" in how else [n, w]
    nodes.append(helper.make_node("Mul", mul_in, [out + "_w"]))
    add_in = [b, out + "_w"] if "b_first" in how else [out + "_w", b]
    return nodes + [helper.make_node("Add", add_in, [out])]


def layer_norm_graph(eps=1e-5, opset=18, sq="pow", root="sqrt_div", eps_how="right", aff="", mean="mean",
                     axes=(-1,), n=D):
    nodes = reduce_mean("x", "mu", axes, opset)
    nodes += [helper.make_node("Sub", ["x", "mu"], ["d"])]
    nodes += square("d", "d2", sq)
    nodes += reduce_mean("d2", "var", axes, opset, mean, n)
    nodes += add_eps("var", "ve", eps if isinstance(eps, np.generic) else np.float32(eps), eps_how)
    nodes += normalise("d", "ve", "nrm", root)
    nodes += affine("nrm", "y", aff)
    return nodes


LN_SPELLINGS = [  # (opset, square, root, eps, affine, mean): what torch legacy / dynamo, onnxscript, tf2onnx write
    (13, "pow", "sqrt_div", "right", "", "mean"),  # legacy exporter
    (18, "pow", "sqrt_div", "right", "", "mean"),  # dynamo (axes as input)
    (18, "mul", "sqrt_recip_mul", "left", "w_first b_first", "mean"),
    (13, "mul", "pow_neg_half", "right cast", "", "sum_mul"),
    (17, "pow", "pow_half_div", "left castlike", "w_first", "sum_div"),
    (18, "mul", "div_one_sqrt", "right", "b_first", "sum_mul"),
]


@pytest.mark.parametrize("opset, sq, root, eps_how, aff, mean", LN_SPELLINGS)
def test_decomposed_layer_norm_any_spelling(tmp_path, opset, sq, root, eps_how, aff, mean):
    nodes = layer_norm_graph(1e-5, opset, sq, root, eps_how, aff, mean)
    path = save(tmp_path, nodes, [init("w", W), init("b", B)], opset=opset)
    (layer,) = run_layers(path, xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-5) and layer.eps_source is EpsSource.ONNX_CONSTANT
    assert layer.axis == (-1,) and not layer.axes_exact
    np.testing.assert_array_equal(layer.weight.load(), W)
    np.testing.assert_array_equal(layer.bias.load(), B)
    assert layer.output_name == "y" and layer.input_name == "x"


def test_decomposed_layer_norm_fp16_weights_through_cast(tmp_path):
    w16, b16 = W.astype(np.float16), B.astype(np.float16)
    path = save(tmp_path, layer_norm_graph(aff="cast"), [init("w", w16), init("b", b16)])
    (layer,) = run_layers(path, xin())
    assert layer.dtype == "F16"
    np.testing.assert_array_equal(layer.weight.load(), w16.astype(np.float32))
    np.testing.assert_array_equal(layer.bias.load(), b16.astype(np.float32))


def test_reduce_sum_with_wrong_count_is_not_a_mean(tmp_path):
    """ReduceSum * k is a mean only when k = 1/n over the reduced axes (shapes declared): 1/(n+1) is not a norm."""
    nodes = layer_norm_graph(mean="sum_mul", n=D + 1)
    path = save(tmp_path, nodes, [init("w", W), init("b", B)])
    m = normaudit.load(path, allow_empty=True)
    assert m.norms == []


def test_eps_in_fp16_through_castlike_keeps_its_stored_value(tmp_path):
    nodes = layer_norm_graph(eps=np.float16(1e-12), eps_how="right castlike")
    (layer,) = normaudit.load(save(tmp_path, nodes, [init("w", W), init("b", B)])).norms
    assert layer.eps == 0.0 and layer.eps_dtype == "F16"  # 1e-12 underflows in fp16


def rms_graph(opset=18, sq="pow", root="sqrt_recip_mul", eps_how="right", mean="mean", cast_x=False,
              weight="mul_w", eps=1e-6):
    x = "x"
    nodes = []
    if cast_x:  # T5: hidden_states.to(float32) before the statistics, the uncast input normalised
        nodes.append(helper.make_node("Cast", ["x"], ["xc"], to=TensorProto.FLOAT))
        x = "xc"
    nodes += square(x, "x2", sq)
    nodes += reduce_mean("x2", "ms", (-1,), opset, mean)
    nodes += add_eps("ms", "ve", np.float32(eps), eps_how)
    nodes += normalise(x, "ve", "nrm", root)
    if weight == "mul_w":
        nodes.append(helper.make_node("Mul", ["w", "nrm"], ["y"]))
    elif weight == "one_plus":  # Gemma: x * (1 + w), the 1 + w computed in the graph
        nodes += [const("one", np.float32(1.0)), helper.make_node("Add", ["w", "one"], ["w1"]),
                  helper.make_node("Mul", ["nrm", "w1"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", ["nrm"], ["y"]))
    return nodes


@pytest.mark.parametrize("spelling", [
    dict(),  # dynamo opset 18: Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul(weight)
    dict(opset=13, cast_x=True, root="div_one_sqrt"),  # legacy T5 / Mamba: Cast, Div(1, Sqrt)
    dict(sq="mul", root="pow_neg_half", eps_how="left cast", mean="sum_div"),
    dict(root="sqrt_div", mean="sum_mul", opset=17),
])
def test_decomposed_rms_norm_any_spelling(tmp_path, spelling):
    path = save(tmp_path, rms_graph(**spelling), [init("w", W)], opset=spelling.get("opset", 18))
    (layer,) = run_layers(path, xin())
    assert layer.kind is NormKind.RMS_NORM and layer.eps == f32(1e-6) and layer.axis == (-1,)
    np.testing.assert_array_equal(layer.weight.load(), W)
    assert layer.output_name == "y"


def test_rms_norm_weight_one_plus_w_in_graph(tmp_path):
    w0 = (0.1 * rng.normal(size=D)).astype(np.float32)
    (layer,) = run_layers(save(tmp_path, rms_graph(weight="one_plus"), [init("w", w0)]), xin())
    assert layer.kind is NormKind.RMS_NORM and layer.convention.value == "1+w"
    np.testing.assert_array_equal(layer.weight.load(), w0)
    assert "weight enters as (1 + w)" in layer.notes


def test_rms_norm_without_weight(tmp_path):
    (layer,) = run_layers(save(tmp_path, rms_graph(weight="none")), xin())
    assert layer.kind is NormKind.RMS_NORM and layer.weight is None and layer.eps == f32(1e-6)


def test_channels_first_layer_norm(tmp_path):
    """ConvNeXt's channels_first LayerNorm: statistics over axis 1 of (N, C, H, W), weight[:, None, None]."""
    nodes = reduce_mean("x", "mu", (1,), 18)
    nodes += [helper.make_node("Sub", ["x", "mu"], ["d"])]
    nodes += square("d", "d2", "pow")
    nodes += reduce_mean("d2", "var", (1,), 18)
    nodes += add_eps("var", "ve", np.float32(1e-6), "right")
    nodes += normalise("d", "ve", "nrm", "sqrt_div")
    nodes += [const("ax12", np.array([1, 2], np.int64)), helper.make_node("Unsqueeze", ["w", "ax12"], ["w3"]),
              helper.make_node("Mul", ["w3", "nrm"], ["nw"]), helper.make_node("Add", ["nw", "b3"], ["y"])]
    path = save(tmp_path, nodes, [init("w", WC), init("b3", BC.reshape(C, 1, 1))], shape=X4)
    (layer,) = run_layers(path, xin(X4))
    assert layer.kind is NormKind.LAYER_NORM and layer.axis == (1,) and layer.axes_exact
    assert layer.eps == f32(1e-6)
    np.testing.assert_array_equal(layer.weight.load(), WC)  # the stored [C] tensor behind the Unsqueeze
    np.testing.assert_array_equal(layer.bias.load().reshape(-1), BC)
    assert normaudit.load(path).to_dict()["norms"][0]["axes_exact"] is True


def test_layer_norm_over_two_axes(tmp_path):
    w2 = (1 + 0.1 * rng.normal(size=(4, D))).astype(np.float32)
    nodes = reduce_mean("x", "mu", (-2, -1), 18)
    nodes += [helper.make_node("Sub", ["x", "mu"], ["d"])]
    nodes += square("d", "d2", "mul")
    nodes += reduce_mean("d2", "var", (-2, -1), 18)
    nodes += add_eps("var", "ve", np.float32(1e-5), "right")
    nodes += normalise("d", "ve", "nrm", "sqrt_div")
    nodes += [helper.make_node("Mul", ["nrm", "w"], ["y"])]
    (layer,) = run_layers(save(tmp_path, nodes, [init("w", w2)]), xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.axis == (-2,) and not layer.axes_exact
    np.testing.assert_array_equal(layer.weight.load(), w2)


def test_group_norm_by_reductions(tmp_path):
    """x.view(N, G, -1) -> mean/var over the last axis -> view back -> * w[:, None, None] + b[:, None, None]."""
    nodes = [const("gshape", np.array([0, 4, -1], np.int64)), helper.make_node("Reshape", ["x", "gshape"], ["xg"])]
    nodes += reduce_mean("xg", "mu", (-1,), 18)
    nodes += [helper.make_node("Sub", ["xg", "mu"], ["d"])]
    nodes += square("d", "d2", "pow")
    nodes += reduce_mean("d2", "var", (-1,), 18)
    nodes += add_eps("var", "ve", np.float32(1e-5), "right")
    nodes += normalise("d", "ve", "nrm", "sqrt_div")
    nodes += [helper.make_node("Shape", ["x"], ["xs"]), helper.make_node("Reshape", ["nrm", "xs"], ["nb"]),
              helper.make_node("Mul", ["nb", "w"], ["nw"]), helper.make_node("Add", ["nw", "b"], ["y"])]
    path = save(tmp_path, nodes, [init("w", WC.reshape(C, 1, 1)), init("b", BC.reshape(C, 1, 1))], shape=X4)
    (layer,) = run_layers(path, xin(X4))
    assert layer.kind is NormKind.GROUP_NORM and layer.num_groups == 4 and layer.eps == f32(1e-5)
    assert layer.input_name == "x" and layer.output_name == "y"
    np.testing.assert_array_equal(layer.weight.load().reshape(-1), WC)


def test_layer_norm_on_reshaped_value_is_not_a_group_norm(tmp_path):
    """A LayerNorm over the last axis of a (N, S, D) reshape is not a GroupNorm: nothing reshapes it back."""
    nodes = [const("s3", np.array([2, 8, 16], np.int64)), helper.make_node("Reshape", ["x", "s3"], ["xr"])]
    nodes += reduce_mean("xr", "mu", (-1,), 18)
    nodes += [helper.make_node("Sub", ["xr", "mu"], ["d"])]
    nodes += square("d", "d2", "pow")
    nodes += reduce_mean("d2", "var", (-1,), 18)
    nodes += add_eps("var", "ve", np.float32(1e-5), "right")
    nodes += normalise("d", "ve", "nrm", "sqrt_div")
    nodes += [helper.make_node("Mul", ["nrm", "w"], ["y"])]
    path = save(tmp_path, nodes, [init("w", W)], shape=[2, 8, 4, 4], declare_output=False)
    (layer,) = run_layers(path, xin([2, 8, 4, 4]))
    assert layer.kind is NormKind.LAYER_NORM and layer.axis == (-1,) and layer.input_name == "xr"


# -- tf2onnx ---------------------------------------------------------------------------------------------------
# Written from tf2onnx's source (onnx/tensorflow-onnx, tf2onnx/onnx_opset/{math,reduction,nn}.py and
# rewriter/layer_normalization_rewriter.py): Mean -> ReduceMean with positive axes as attribute (opset < 18),
# SquaredDifference -> Sub + Mul(d, d), Square -> Mul(x, x), Rsqrt -> Sqrt + Reciprocal, StopGradient -> Identity,
# training-mode FusedBatchNorm -> ReduceMean / ReduceSumSquare / element count from Shape -> BatchNormalization.
# The TensorFlow side (what Keras' LayerNormalization emits) is from Keras 2 / 3 sources, from memory.

def test_tf2onnx_keras2_batch_normalization_form(tmp_path):
    """tf.nn.moments + tf.nn.batch_normalization: y = x * (rsqrt(var + eps) * gamma) + (beta - mean * inv)."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[2], keepdims=1),
             helper.make_node("Identity", ["mean"], ["mean_sg"]),  # StopGradient
             helper.make_node("Sub", ["x", "mean_sg"], ["sd"]), helper.make_node("Mul", ["sd", "sd"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["var"], axes=[2], keepdims=1),
             const("eps", np.float32(1e-3)), helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["rs"]), helper.make_node("Reciprocal", ["rs"], ["inv0"]),
             helper.make_node("Mul", ["inv0", "gamma"], ["inv"]),
             helper.make_node("Mul", ["x", "inv"], ["xi"]), helper.make_node("Mul", ["mean", "inv"], ["mi"]),
             helper.make_node("Sub", ["beta", "mi"], ["off"]), helper.make_node("Add", ["xi", "off"], ["y"])]
    path = save(tmp_path, nodes, [init("gamma", W), init("beta", B)], opset=13)
    (layer,) = run_layers(path, xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-3) and layer.axis == (-1,)
    np.testing.assert_array_equal(layer.weight.load(), W)
    np.testing.assert_array_equal(layer.bias.load(), B)


def test_tf2onnx_keras3_form(tmp_path):
    """Keras 3: inv = rsqrt(var + eps) * gamma; y = x * inv + (-mean * inv + beta)."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1], keepdims=1),
             helper.make_node("Mul", ["x", "x"], ["x2"]),
             helper.make_node("ReduceMean", ["x2"], ["ex2"], axes=[-1], keepdims=1),
             helper.make_node("Mul", ["mean", "mean"], ["m2"]), helper.make_node("Sub", ["ex2", "m2"], ["var"]),
             const("eps", np.float32(1e-6)), helper.make_node("Add", ["eps", "var"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["rs"]), helper.make_node("Reciprocal", ["rs"], ["inv0"]),
             helper.make_node("Mul", ["inv0", "gamma"], ["inv"]), helper.make_node("Neg", ["mean"], ["nm"]),
             helper.make_node("Mul", ["nm", "inv"], ["res0"]), helper.make_node("Add", ["res0", "beta"], ["res"]),
             helper.make_node("Mul", ["x", "inv"], ["xi"]), helper.make_node("Add", ["xi", "res"], ["y"])]
    (layer,) = run_layers(save(tmp_path, nodes, [init("gamma", W), init("beta", B)], opset=13), xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-6) and layer.axis == (-1,)
    np.testing.assert_array_equal(layer.weight.load(), W)
    np.testing.assert_array_equal(layer.bias.load(), B)
    assert "variance as mean(x²) - mean(x)²" in layer.notes


def test_tf2onnx_layer_norm_rewritten_to_instance_normalization(tmp_path):
    """tf2onnx's layer-norm rewriter: InstanceNormalization(x, ConstantOfShape(ones), ConstantOfShape(zeros)) over
    (N, S, D), then Mul(scale), Add(bias)."""
    one = numpy_helper.from_array(np.array([1.0], np.float32), "value")
    zero = numpy_helper.from_array(np.array([0.0], np.float32), "value")
    nodes = [helper.make_node("Shape", ["x"], ["shp"]), const("s1", np.array([1], np.int64)),
             const("s2", np.array([2], np.int64)), const("a0", np.array([0], np.int64)),
             helper.make_node("Slice", ["shp", "s1", "s2", "a0"], ["dim1"]),
             helper.make_node("ConstantOfShape", ["dim1"], ["ones"], value=one),
             helper.make_node("ConstantOfShape", ["dim1"], ["zeros"], value=zero),
             helper.make_node("InstanceNormalization", ["x", "ones", "zeros"], ["n"], epsilon=1e-3),
             helper.make_node("Mul", ["n", "scale"], ["nw"]), helper.make_node("Add", ["nw", "bias"], ["y"])]
    (layer,) = run_layers(save(tmp_path, nodes, [init("scale", W), init("bias", B)], opset=13), xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-3) and layer.axis == (-1,)
    assert layer.eps_source is EpsSource.ONNX_ATTRIBUTE
    np.testing.assert_array_equal(layer.weight.load(), W)
    np.testing.assert_array_equal(layer.bias.load(), B)


def test_tf2onnx_keras2_fused_layer_norm_as_batch_normalization(tmp_path):
    """Keras 2's fused LayerNorm: reshape to [1, rows, features, 1], a training-mode FusedBatchNorm (tf2onnx: the
    statistics computed in the graph, fed to BatchNormalization), reshape back, * gamma + beta."""
    rows = X3[0] * X3[1]
    nodes = [const("sq_shape", np.array([1, rows, D, 1], np.int64)),
             helper.make_node("Reshape", ["x", "sq_shape"], ["xr"]),
             helper.make_node("ReduceMean", ["xr"], ["avg"], axes=[0, 2, 3], keepdims=1),
             helper.make_node("Squeeze", ["avg", "ax"], ["avg_s"]),
             helper.make_node("Sub", ["xr", "avg"], ["sub"]),
             helper.make_node("ReduceSumSquare", ["sub"], ["ss"], axes=[0, 2, 3], keepdims=0),
             helper.make_node("Shape", ["xr"], ["shp"]), helper.make_node("Gather", ["shp", "ax"], ["dims"]),
             helper.make_node("ReduceProd", ["dims"], ["cnt"], keepdims=0),
             helper.make_node("Cast", ["cnt"], ["cntf"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["ss", "cntf"], ["var"]),
             helper.make_node("BatchNormalization", ["xr", "ones", "zeros", "avg_s", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("Shape", ["x"], ["xshape"]), helper.make_node("Reshape", ["bn", "xshape"], ["bnr"]),
             helper.make_node("Mul", ["bnr", "gamma"], ["nw"]), helper.make_node("Add", ["nw", "beta"], ["y"])]
    inits = [init("ax", np.array([0, 2, 3], np.int64)), init("ones", np.ones(rows, np.float32)),
             init("zeros", np.zeros(rows, np.float32)), init("gamma", W), init("beta", B)]
    (layer,) = run_layers(save(tmp_path, nodes, inits, opset=13), xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-3) and layer.axis == (-1,)
    assert layer.input_name == "x" and layer.output_name == "y"
    np.testing.assert_array_equal(layer.weight.load(), W)
    np.testing.assert_array_equal(layer.bias.load(), B)


# -- the ONNX spec's own function bodies, expanded with onnx's inliner ---------------------------------------------

def spec_expanded(tmp_path, op, version, attrs, inits, shape, opset, name="spec.onnx"):
    """A graph with one ``op`` node replaced by the op's function body from the ONNX schema (onnx.defs), inlined
    with onnx.inliner (the body's values renamed, as any tool that expands ONNX functions writes them)."""
    ins = ["x"] + [i.name for i in inits]
    plain = helper.make_node(op, ins, ["y"], **attrs)
    schema = defs.get_schema(op, version)
    if schema.has_context_dependent_function:
        types = [helper.make_tensor_type_proto(TensorProto.FLOAT, None).SerializeToString()] * len(ins)
        body = onnx.FunctionProto()
        body.ParseFromString(schema.get_context_dependent_function_with_opset_version(
            version, plain.SerializeToString(), types))
    else:
        body = schema.get_function_with_opset_version(version)
        if isinstance(body, bytes):
            parsed = onnx.FunctionProto()
            parsed.ParseFromString(body)
            body = parsed
        body.attribute_proto.extend([helper.make_attribute(k, v) for k, v in attrs.items()])
    body.domain, body.name = "expand", op
    node = helper.make_node(op, ins, ["y"], domain="expand", **attrs)
    path = save(tmp_path, [node], inits, shape=shape, opset=opset, extra_opsets=[("expand", 1)], functions=[body],
                name=name)
    model = onnx.inliner.inline_local_functions(onnx.load(str(path)))
    assert not any(n.domain == "expand" for n in model.graph.node)
    onnx.save(model, str(path))
    return path


def test_spec_layer_normalization_body(tmp_path):
    path = spec_expanded(tmp_path, "LayerNormalization", 18, dict(axis=-1, epsilon=1e-5),
                         [init("w", W), init("b", B)], X3, 18)
    (layer,) = run_layers(path, xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-5) and layer.axis == (-1,)
    assert layer.input_name == "x" and layer.output_name == "y"  # Flatten before, Reshape(Shape(x)) after
    np.testing.assert_array_equal(layer.weight.load(), W)
    np.testing.assert_array_equal(layer.bias.load(), B)


def test_spec_layer_normalization_body_axis_1(tmp_path):
    w2 = (1 + 0.1 * rng.normal(size=(4, D))).astype(np.float32)
    path = spec_expanded(tmp_path, "LayerNormalization", 17, dict(axis=1, epsilon=1e-6),
                         [init("w", w2), init("b", np.zeros((4, D), np.float32))], X3, 17)
    (layer,) = run_layers(path, xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-6) and layer.axis == (1,)
    np.testing.assert_array_equal(layer.weight.load(), w2)


def test_spec_group_normalization_body(tmp_path):
    path = spec_expanded(tmp_path, "GroupNormalization", 21, dict(num_groups=4, epsilon=1e-5),
                         [init("w", WC), init("b", BC)], X4, 21)
    (layer,) = run_layers(path, xin(X4))
    assert layer.kind is NormKind.GROUP_NORM and layer.num_groups == 4 and layer.eps == f32(1e-5)
    np.testing.assert_array_equal(layer.weight.load(), WC)
    np.testing.assert_array_equal(layer.bias.load(), BC)


def test_spec_rms_normalization_body(tmp_path):
    """Its reduction axes are Range(rank + axis, rank, 1), computed in the graph."""
    path = spec_expanded(tmp_path, "RMSNormalization", 23, dict(axis=-1, epsilon=1e-6), [init("w", W)], X3, 23)
    (layer,) = run_layers(path, xin())
    assert layer.kind is NormKind.RMS_NORM and layer.eps == f32(1e-6) and layer.axis == (-1,)
    np.testing.assert_array_equal(layer.weight.load(), W)


def test_spec_mean_variance_normalization_body_and_op(tmp_path):
    """MVN: (x - mean) / (sqrt(var) + 1e-9): the body adds eps to the standard deviation."""
    body = spec_expanded(tmp_path, "MeanVarianceNormalization", 13, dict(axes=[0, 2, 3]), [], X4, 13)
    (layer,) = run_layers(body, xin(X4))
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-9) and layer.axis == (0, 2, 3)
    assert "eps is added to sqrt(var), not to var" in layer.notes and layer.weight is None
    op = save(tmp_path, [helper.make_node("MeanVarianceNormalization", ["x"], ["y"])], shape=X4, opset=13,
              name="mvn.onnx")
    (layer,) = run_layers(op, xin(X4))
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-9) and layer.axis == (0, 2, 3)
    assert layer.eps_source is EpsSource.ONNX_DEFAULT


# -- norm ops in disguise ----------------------------------------------------------------------------------------

def test_opset23_layer_norm_as_centred_rms_normalization(tmp_path):
    """ReduceMean -> Sub -> RMSNormalization (-> Add bias) is a LayerNorm, not an RMSNorm."""
    nodes = reduce_mean("x", "mu", (-1,), 23) + [
        helper.make_node("Sub", ["x", "mu"], ["d"]),
        helper.make_node("RMSNormalization", ["d", "w"], ["n"], axis=-1, epsilon=1e-5),
        helper.make_node("Add", ["n", "b"], ["y"])]
    (layer,) = run_layers(save(tmp_path, nodes, [init("w", W), init("b", B)], opset=23), xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-5) and layer.axis == (-1,)
    np.testing.assert_array_equal(layer.bias.load(), B)
    plain = [helper.make_node("RMSNormalization", ["x", "w"], ["y"], axis=-1, epsilon=1e-5)]
    (rms,) = run_layers(save(tmp_path, plain, [init("w", W)], opset=23, name="rms.onnx"), xin())
    assert rms.kind is NormKind.RMS_NORM


def test_instance_normalization_of_a_group_norm_module(tmp_path):
    """A bare InstanceNormalization whose exporter says it came from nn.GroupNorm(C, C) is that GroupNorm."""
    node = helper.make_node("InstanceNormalization", ["x", "w", "b"], ["y"], epsilon=1e-4, name="gn_node")
    for key, value in (("pkg.torch.onnx.class_hierarchy",
                        "['M', 'torch.nn.modules.normalization.GroupNorm', 'aten.group_norm.default']"),
                       ("pkg.torch.onnx.name_scopes", "['', 'gn', 'group_norm']")):
        node.metadata_props.add(key=key, value=value)
    (layer,) = run_layers(save(tmp_path, [node], [init("w", WC), init("b", BC)], shape=X4), xin(X4))
    assert layer.kind is NormKind.GROUP_NORM and layer.num_groups == C and layer.id == "gn"
    plain = helper.make_node("InstanceNormalization", ["x", "w", "b"], ["y"], epsilon=1e-4)
    (inst,) = run_layers(save(tmp_path, [plain], [init("w", WC), init("b", BC)], shape=X4, name="i.onnx"), xin(X4))
    assert inst.kind is NormKind.INSTANCE_NORM and inst.computes() is NormKind.INSTANCE_NORM
    assert layer.computes() is NormKind.INSTANCE_NORM  # the same computation: compare pairs them


# -- onnxscript ----------------------------------------------------------------------------------------------------

try:  # onnxscript functions must be defined at module level (their annotations are evaluated in its globals)
    import onnxscript
    from onnxscript import FLOAT, script
    from onnxscript import opset18 as op
except ImportError:  # pragma: no cover - onnxscript is part of the test extra
    onnxscript = None
else:
    @script()
    def os_layer_norm(x: FLOAT[2, 4, 16], w: FLOAT[16], b: FLOAT[16]) -> FLOAT[2, 4, 16]:
        mu = op.ReduceMean(x, [-1])
        d = op.Sub(x, mu)
        var = op.ReduceMean(op.Mul(d, d), [-1])
        inv = op.Reciprocal(op.Sqrt(op.Add(var, op.Constant(value_float=1e-5))))
        return op.Add(op.Mul(op.Mul(d, inv), w), b)

    @script()
    def os_model(x: FLOAT[2, 4, 16], w: FLOAT[16], b: FLOAT[16]) -> FLOAT[2, 4, 16]:
        return os_layer_norm(x, w, b)


@pytest.mark.skipif(onnxscript is None, reason="onnxscript is not installed")
def test_onnxscript_function_inlined(tmp_path):
    """A LayerNorm written as an onnxscript function, the model inlined by onnxscript's own pass."""
    proto = os_model.to_model_proto()
    ir = onnxscript.ir.serde.deserialize_model(proto)
    onnxscript.ir.passes.common.InlinePass()(ir)
    inlined = onnxscript.ir.serde.serialize_model(ir)
    inlined.graph.initializer.extend([init("w", W), init("b", B)])
    graph_inputs = [i for i in inlined.graph.input if i.name == "x"]
    del inlined.graph.input[:]
    inlined.graph.input.extend(graph_inputs)
    inlined.graph.output[0].name, out = "y", inlined.graph.output[0].name
    for n in inlined.graph.node:
        n.output[:] = ["y" if o == out else o for o in n.output]
    assert not any(n.op_type == "os_layer_norm" for n in inlined.graph.node)
    path = tmp_path / "onnxscript.onnx"
    onnx.save(inlined, str(path))
    (layer,) = run_layers(path, xin())
    assert layer.kind is NormKind.LAYER_NORM and layer.eps == f32(1e-5) and layer.axis == (-1,)
    np.testing.assert_array_equal(layer.weight.load(), W)
    np.testing.assert_array_equal(layer.bias.load(), B)


# -- hostile graphs -----------------------------------------------------------------------------------------------

def test_cyclic_graph_is_bounded(tmp_path):
    """A graph whose values feed back into themselves (invalid, but a file can say so) must not hang the matcher."""
    nodes = layer_norm_graph()
    nodes.append(helper.make_node("Add", ["y", "d"], ["x"]))  # x depends on y
    model = helper.make_model(helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", 1, X3)],
                                                [init("w", W), init("b", B)]))
    path = tmp_path / "loop.onnx"
    onnx.save(model, str(path))
    m = normaudit.load(path, allow_empty=True)
    assert len(m.norms) <= 1


# -- real exports: torch's dynamo and legacy exporters (testmodels/zoo, written by testmodels/generate.py zoo) -------

ZOO_EXPORTS = ["zoo-dynamo-opset18.onnx", "zoo-legacy-opset17.onnx"]


def _state(tm, name):
    from normaudit.formats.torch.pt2_archive import read_pt2

    return {k: v.load() for k, v in read_pt2(tm / "zoo" / f"{name}.pt2").main.state.items()}


@pytest.mark.parametrize("name", ZOO_EXPORTS)
def test_zoo_exports(tm, name):
    """ConvNeXt channels-first LayerNorm and GroupNorm(C, C), as each exporter writes them; the BNs folded
    (dynamo: all; legacy: those after a Conv)."""
    state = _state(tm, "zoo")
    x = np.load(tm / "zoo/input.npz")["zoo"]
    layers = {layer.id: layer for layer in run_layers(tm / "zoo" / name, x)}
    assert set(layers) == ({"cnln", "gn"} if "dynamo" in name else {"cnln", "gn", "upbn", "fcbn"})
    ln, gn = layers["cnln"], layers["gn"]
    assert ln.kind is NormKind.LAYER_NORM and ln.axis == (1,) and ln.axes_exact and ln.eps == f32(1e-6)
    np.testing.assert_array_equal(ln.weight.load().reshape(-1), state["cnln.weight"])
    np.testing.assert_array_equal(ln.bias.load().reshape(-1), state["cnln.bias"])
    assert gn.kind is NormKind.GROUP_NORM and gn.num_groups == 8 and gn.eps == f32(1e-4)
    np.testing.assert_array_equal(gn.weight.load().reshape(-1), state["gn.weight"])


@pytest.mark.parametrize("name", ["t5norm-legacy-opset17.onnx", "t5norm-dynamo-opset18.onnx"])
def test_t5_rms_norm_exports(tm, name):
    """T5LayerNorm: the legacy exporter writes Cast, Pow, ReduceMean, Add, Sqrt, Div(1, .), Mul, Mul(weight)."""
    state = _state(tm, "t5norm")
    layers = run_layers(tm / "zoo" / name, np.load(tm / "zoo/input.npz")["t5norm"])
    assert [(layer.id, layer.kind, layer.eps, layer.axis) for layer in layers] == [
        ("norm", NormKind.RMS_NORM, f32(1e-6), (-1,)), ("final_norm", NormKind.RMS_NORM, f32(1e-6), (-1,))]
    for layer in layers:
        np.testing.assert_array_equal(layer.weight.load(), state[f"{layer.id}.weight"])
    report = normaudit.audit(tm / "zoo/t5norm.pt2", tm / "zoo" / name)
    assert report.passed and not report.findings and len(report.pairs) == 2


def test_group_norm_c_c_against_a_bare_instance_normalization(tmp_path, tm):
    """GroupNorm(C, C) of the source against an InstanceNormalization doing the same (no exporter metadata saying
    it was a GroupNorm): the same computation, compared without a kind mismatch; a corrupted channel is caught."""
    def bare(m, scale=1.0):
        nodes = list(m.graph.node)
        inorm = next(n for n in nodes if n.op_type == "InstanceNormalization")
        before = next(n for n in nodes if inorm.input[0] in n.output)
        after = next(n for n in nodes if inorm.output[0] in n.input)
        mul = next(n for n in nodes if after.output[0] in n.input)
        add = next(n for n in nodes if mul.output[0] in n.input)
        w = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == mul.input[1])).reshape(-1).copy()
        b = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == add.input[1])).reshape(-1)
        w[3] *= scale
        m.graph.initializer.extend([init("gn_w", w), init("gn_b", b)])
        node = helper.make_node("InstanceNormalization", [before.input[0], "gn_w", "gn_b"], [add.output[0]],
                                epsilon=1e-4, name="/gn/InstanceNormalization")
        keep = [n for n in nodes if n not in (before, inorm, after, mul, add)]
        at = nodes.index(before)
        del m.graph.node[:]
        m.graph.node.extend(keep[:at] + [node] + keep[at:])

    from breakers import onnx_edit

    src = normaudit.load(tm / "zoo/zoo.pt2")
    good = onnx_edit(tm / "zoo/zoo-legacy-opset17.onnx", tmp_path / "inst.onnx", bare)
    b = normaudit.load(good)
    assert b.by_id()["gn"].kind is NormKind.INSTANCE_NORM
    r = normaudit.audit(src, b)
    assert not [f for f in r.findings if f.severity.value == "error"], [f.to_dict() for f in r.findings]
    pair = next(p for p in r.pairs if p.a == "gn")
    assert pair.b == "gn" and pair.weight["rel_l2"] == 0.0
    bad = onnx_edit(tm / "zoo/zoo-legacy-opset17.onnx", tmp_path / "bad.onnx", lambda m: bare(m, 1.5))
    (e,) = [f for f in normaudit.audit(src, bad).findings if f.severity.value == "error"]
    assert e.check == "weight_mismatch" and e.a == "gn" and e.values["channels"] == [3]


def test_deep_diamond_graph_is_bounded(tmp_path):
    """Every value used twice by the next (a diamond chain): walks over shapes and values must stay linear."""
    import time

    nodes, prev = [], "x"
    for i in range(200):
        nodes.append(helper.make_node("Add", [prev, prev], [f"a{i}"]))
        prev = f"a{i}"
    rest = layer_norm_graph(mean="sum_mul")
    for n in rest:
        n.input[:] = [prev if i == "x" else i for i in n.input]
    path = save(tmp_path, nodes + rest, [init("w", W), init("b", B)], declare_output=False)
    start = time.process_time()
    (layer,) = normaudit.load(path).norms
    assert time.process_time() - start < 5
    assert layer.kind is NormKind.LAYER_NORM and layer.input_name == prev


def test_constant_of_shape_fill_with_external_data_outside_the_folder(tmp_path):
    """ConstantOfShape's value attribute is read with the same checks as initializers: no reads outside."""
    (tmp_path / "secret.bin").write_bytes(np.float32(1.0).tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    fill = onnx.TensorProto(name="value", data_type=TensorProto.FLOAT, dims=[1])
    fill.data_location = TensorProto.EXTERNAL
    fill.external_data.add(key="location", value="../secret.bin")
    nodes = [helper.make_node("Shape", ["x"], ["shp"]), const("s1", np.array([1], np.int64)),
             const("s2", np.array([2], np.int64)), helper.make_node("Slice", ["shp", "s1", "s2"], ["dim1"]),
             helper.make_node("ConstantOfShape", ["dim1"], ["ones"], value=fill),
             helper.make_node("InstanceNormalization", ["x", "ones", "zeros"], ["n"], epsilon=1e-3),
             helper.make_node("Mul", ["n", "scale"], ["y"])]
    path = save(model_dir, nodes, [init("scale", W), init("zeros", np.zeros(4, np.float32))], opset=13)
    with pytest.raises(normaudit.CorruptFile, match="outside the model folder"):
        normaudit.load(path)
