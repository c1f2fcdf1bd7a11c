"""ONNX graphs the exporters and ONNX Runtime's optimizer write, built with onnx.helper."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import normaudit
from normaudit import EpsSource, NormKind

rng = np.random.default_rng(0)
W = (1 + 0.1 * rng.normal(size=16)).astype(np.float32)
B = (0.1 * rng.normal(size=16)).astype(np.float32)


def _save(tmp_path, nodes, inits, name="m.onnx", opsets=(("", 18),), **save_kw):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    path = tmp_path / name
    onnx.save(model, str(path), **save_kw)
    return path


@pytest.mark.parametrize("domain, op, inputs, kind, eps", [
    ("com.microsoft", "SkipLayerNormalization", ["x", "skip", "g", "b"], NormKind.LAYER_NORM, 1e-5),
    ("com.microsoft", "SkipSimplifiedLayerNormalization", ["x", "skip", "g"], NormKind.RMS_NORM, 1e-6),
    ("", "SimplifiedLayerNormalization", ["x", "g"], NormKind.RMS_NORM, 1e-6),
    ("", "LayerNormalization", ["x", "g", "b"], NormKind.LAYER_NORM, 1e-12),
    ("", "RMSNormalization", ["x", "g"], NormKind.RMS_NORM, 1e-6),
])
def test_fused_ops(tmp_path, domain, op, inputs, kind, eps):
    inits = [numpy_helper.from_array(W, "g"), numpy_helper.from_array(B, "b"),
             numpy_helper.from_array(np.zeros((1, 4, 16), np.float32), "skip")]
    node = helper.make_node(op, inputs, ["y"], name="/model/layers.3/post_attention_layernorm/Fused", domain=domain,
                            epsilon=eps)
    m = normaudit.load(_save(tmp_path, [node], inits, opsets=(("", 23), ("com.microsoft", 1))))
    (layer,) = m.norms
    assert layer.kind is kind and layer.eps == float(np.float32(eps))
    assert layer.eps_source is EpsSource.ONNX_ATTRIBUTE
    assert layer.id == "model.layers.3.post_attention_layernorm"  # from the legacy-style node name
    np.testing.assert_array_equal(layer.weight.load(), W)


def test_fused_op_without_epsilon_uses_spec_default(tmp_path):
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln")
    m = normaudit.load(_save(tmp_path, [node], [numpy_helper.from_array(W, "g"), numpy_helper.from_array(B, "b")]))
    assert m.norms[0].eps == float(np.float32(1e-5)) and m.norms[0].eps_source is EpsSource.ONNX_DEFAULT


def _decomposed_ln(eps_tensor):
    """ReduceMean -> Sub -> Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div -> Mul -> Add, as the legacy exporter."""
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["mu"], name="/enc/LayerNorm/ReduceMean"),
        helper.make_node("Sub", ["x", "mu"], ["d"], name="/enc/LayerNorm/Sub"),
        helper.make_node("Pow", ["d", "two"], ["d2"], name="/enc/LayerNorm/Pow"),
        helper.make_node("ReduceMean", ["d2", "axes"], ["var"], name="/enc/LayerNorm/ReduceMean_1"),
        helper.make_node("Constant", [], ["eps"], name="/enc/LayerNorm/Constant_1", value=eps_tensor),
        helper.make_node("Cast", ["eps"], ["eps32"], name="/enc/LayerNorm/Cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["var", "eps32"], ["ve"], name="/enc/LayerNorm/Add"),
        helper.make_node("Sqrt", ["ve"], ["sd"], name="/enc/LayerNorm/Sqrt"),
        helper.make_node("Div", ["d", "sd"], ["n"], name="/enc/LayerNorm/Div"),
        helper.make_node("Mul", ["n", "w"], ["nw"], name="/enc/LayerNorm/Mul"),
        helper.make_node("Add", ["nw", "b"], ["y"], name="/enc/LayerNorm/Add_1"),
    ]
    return nodes, [axes, two, numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")]


def test_decomposed_layernorm_eps_in_fp16_underflows_to_zero(tmp_path):
    nodes, inits = _decomposed_ln(numpy_helper.from_array(np.array(1e-12, np.float16)))
    (layer,) = normaudit.load(_save(tmp_path, nodes, inits, opsets=(("", 17),))).norms
    assert layer.kind is NormKind.LAYER_NORM and layer.id == "enc.LayerNorm"
    assert layer.eps == 0.0 and layer.eps_dtype == "F16"  # 1e-12 is below fp16's smallest subnormal
    assert layer.eps_source is EpsSource.ONNX_CONSTANT
    np.testing.assert_array_equal(layer.bias.load(), B)


def test_decomposed_layernorm_fp32_eps(tmp_path):
    nodes, inits = _decomposed_ln(numpy_helper.from_array(np.array(1e-5, np.float32)))
    (layer,) = normaudit.load(_save(tmp_path, nodes, inits, opsets=(("", 17),))).norms
    assert layer.eps == float(np.float32(1e-5)) and layer.eps_dtype == "F32"


def test_weight_through_dequantize_linear(tmp_path):
    scale = np.float32(0.01)
    q = np.clip(np.round(W / scale), -128, 127).astype(np.int8)
    inits = [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(np.array(scale), "w_s"),
             numpy_helper.from_array(np.array(0, np.int8), "w_z")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["g"], name="dq"),
             helper.make_node("RMSNormalization", ["x", "g"], ["y"], name="/m/norm/RMSNormalization", epsilon=1e-6)]
    (layer,) = normaudit.load(_save(tmp_path, nodes, inits, opsets=(("", 23),))).norms
    assert layer.dtype == "I8"
    np.testing.assert_allclose(layer.weight.load(), q.astype(np.float32) * scale, rtol=1e-6)
    assert any("DequantizeLinear" in n for n in layer.notes)


def test_external_data(tmp_path):
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln", epsilon=1e-6)
    inits = [numpy_helper.from_array(W, "g"), numpy_helper.from_array(B, "b")]
    path = _save(tmp_path, [node], inits, save_as_external_data=True, all_tensors_to_one_file=True,
                 location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").is_file()
    (layer,) = normaudit.load(path).norms
    np.testing.assert_array_equal(layer.weight.load(), W)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(normaudit.CorruptFile, match="missing"):
        normaudit.load(path).norms[0].weight.load()


def test_group_norm_18_per_group_scale(tmp_path):
    g = np.ones(4, np.float32)
    node = helper.make_node("GroupNormalization", ["x", "g", "b"], ["y"], name="gn", num_groups=4, epsilon=1e-5)
    (layer,) = normaudit.load(_save(tmp_path, [node], [numpy_helper.from_array(g, "g"),
                                                       numpy_helper.from_array(np.zeros(4, np.float32), "b")])).norms
    assert layer.kind is NormKind.GROUP_NORM and layer.num_groups == 4
    assert any("per group" in n for n in layer.notes)
