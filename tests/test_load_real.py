"""Loaders against real converter output (llama.cpp converter/quantizer, torch.onnx dynamo + legacy)."""

import numpy as np
import pytest
from safetensors.numpy import load_file

import normaudit
from normaudit import EpsSource, NormKind

F32_1E6 = float(np.float32(1e-6))
F32_1E12 = float(np.float32(1e-12))


def hf_tensors(real, name):
    return load_file(str(real / "hf" / name / "model.safetensors"))


@pytest.mark.parametrize("path, count, kind, eps, source, qk", [
    ("hf/qwen3", 9, NormKind.RMS_NORM, F32_1E6, EpsSource.MODULE_ATTRIBUTE, 4),
    ("gguf/qwen3-f32.gguf", 9, NormKind.RMS_NORM, F32_1E6, EpsSource.GGUF_METADATA, 4),
    ("gguf/qwen3-q8_0.gguf", 9, NormKind.RMS_NORM, F32_1E6, EpsSource.GGUF_METADATA, 4),
    ("gguf/qwen3-Q4_K_M.gguf", 9, NormKind.RMS_NORM, F32_1E6, EpsSource.GGUF_METADATA, 4),
    ("onnx/qwen3-dynamo-opset18.onnx", 9, NormKind.RMS_NORM, F32_1E6, EpsSource.ONNX_CONSTANT, 4),
    ("hf/gemma3", 13, NormKind.RMS_NORM, F32_1E6, EpsSource.MODULE_ATTRIBUTE, 4),
    ("gguf/gemma3-f32.gguf", 13, NormKind.RMS_NORM, F32_1E6, EpsSource.GGUF_METADATA, 4),
    ("gguf/gemma3-Q4_K_M.gguf", 13, NormKind.RMS_NORM, F32_1E6, EpsSource.GGUF_METADATA, 4),
    ("onnx/gemma3-dynamo-opset18.onnx", 13, NormKind.RMS_NORM, F32_1E6, EpsSource.ONNX_CONSTANT, 4),
    ("onnx/gemma3-dynamo-opset23.onnx", 13, NormKind.RMS_NORM, F32_1E6, EpsSource.ONNX_ATTRIBUTE, 4),
    ("hf/bert", 5, NormKind.LAYER_NORM, F32_1E12, EpsSource.MODULE_ATTRIBUTE, 0),
    ("onnx/bert-dynamo-opset18.onnx", 5, NormKind.LAYER_NORM, F32_1E12, EpsSource.ONNX_ATTRIBUTE, 0),
    ("onnx/bert-legacy-opset14.onnx", 5, NormKind.LAYER_NORM, F32_1E12, EpsSource.ONNX_CONSTANT, 0),
])
def test_counts_kinds_eps(real, path, count, kind, eps, source, qk):
    m = normaudit.load(real / path)
    assert len(m.norms) == count
    assert {n.kind for n in m.norms} == {kind}
    assert {n.eps for n in m.norms} == {eps}
    assert {n.eps_source for n in m.norms} == {source}
    qk_layers = [n for n in m.norms if n.role in ("qk_norm", "attn_q_norm", "attn_k_norm")]
    assert len(qk_layers) == qk


def test_gguf_gemma3_stores_one_plus_w(real):
    src = hf_tensors(real, "gemma3")
    g = normaudit.load(real / "gguf/gemma3-f32.gguf").by_id()
    hf = normaudit.load(real / "hf/gemma3").by_id()
    # the converter stores 1 + w; HF computes x * (1 + w): same effective scale
    np.testing.assert_allclose(g["blk.1.post_ffw_norm"].weight.load(),
                               src["model.layers.1.post_feedforward_layernorm.weight"] + 1, rtol=1e-6)
    np.testing.assert_allclose(g["blk.0.attn_q_norm"].scale(), hf["model.layers.0.self_attn.q_norm"].scale(),
                               rtol=1e-6)
    assert hf["model.norm"].convention.value == "1+w"
    assert g["output_norm"].convention.value == "w"
    assert any("1 + w" in note for note in g["output_norm"].notes)
    assert g["blk.0.ffn_norm"].tensor_kind == "ffn_pre_norm"


def test_gguf_quantized_file_keeps_norms_f32_and_exact(real):
    src = hf_tensors(real, "qwen3")
    m = normaudit.load(real / "gguf/qwen3-Q4_K_M.gguf").by_id()
    assert {n.dtype for n in m.values()} == {"F32"}
    np.testing.assert_array_equal(m["blk.1.attn_k_norm"].weight.load(), src["model.layers.1.self_attn.k_norm.weight"])
    assert m["blk.0.attn_norm"].eps_detail == "qwen3.attention.layer_norm_rms_epsilon"


def test_onnx_names_follow_pytorch_modules_and_weights(real):
    src = hf_tensors(real, "gemma3")
    m = normaudit.load(real / "onnx/gemma3-dynamo-opset23.onnx").by_id()
    layer = m["m.model.layers.0.pre_feedforward_layernorm"]
    # dynamo constant-folds Gemma's 1 + w into an anonymous initializer
    assert not layer.weight.name.startswith("m.model")
    np.testing.assert_allclose(layer.weight.load(), src["model.layers.0.pre_feedforward_layernorm.weight"] + 1,
                               rtol=1e-6)
    assert m["m.model.layers.1.self_attn.k_norm"].role == "qk_norm"
    q = normaudit.load(real / "onnx/qwen3-dynamo-opset18.onnx").by_id()
    src_q = hf_tensors(real, "qwen3")
    np.testing.assert_array_equal(q["m.model.layers.1.self_attn.q_norm"].weight.load(),
                                  src_q["model.layers.1.self_attn.q_norm.weight"])
    assert q["m.model.norm"].nodes and "decomposed RMSNorm pattern" in q["m.model.norm"].notes


def test_legacy_decomposed_layernorm(real):
    src = hf_tensors(real, "bert")
    m = normaudit.load(real / "onnx/bert-legacy-opset14.onnx").by_id()
    ln = m["m.encoder.layer.1.output.LayerNorm"]
    assert ln.kind is NormKind.LAYER_NORM and ln.eps_dtype == "F32"
    np.testing.assert_array_equal(ln.weight.load(), src["encoder.layer.1.output.LayerNorm.weight"])
    np.testing.assert_array_equal(ln.bias.load(), src["encoder.layer.1.output.LayerNorm.bias"])
    assert "Constant" in ln.eps_detail


def test_cnn_pt2_and_state_dict(real):
    import torch

    sd = torch.load(real / "onnx/cnn.pt", weights_only=True)
    ep = normaudit.load(real / "onnx/cnn.pt2")
    assert ep.counts() == {"batch_norm": 2, "group_norm": 1}
    by = ep.by_id()
    assert by["bn1"].eps == float(np.float32(1e-5)) and by["bn2"].eps == float(np.float32(1e-3))
    assert by["gn"].num_groups == 4 and by["gn"].eps_source is EpsSource.EXPORT_GRAPH
    np.testing.assert_array_equal(by["bn2"].running_var.load(), sd["bn2.running_var"].numpy())
    plain = normaudit.load(real / "onnx/cnn.pt").by_id()
    assert plain["bn1"].kind is NormKind.BATCH_NORM and plain["bn1"].eps is None
    assert plain["bn1"].eps_source is EpsSource.UNKNOWN


@pytest.mark.parametrize("name, opset_kind", [("cnn-legacy-opset13.onnx", "decomposed"),
                                              ("cnn-dynamo-opset18.onnx", "decomposed"),
                                              ("cnn-dynamo-opset21.onnx", "fused")])
def test_cnn_onnx_group_norm(real, name, opset_kind):
    import torch

    sd = torch.load(real / "onnx/cnn.pt", weights_only=True)
    m = normaudit.load(real / "onnx" / name)
    assert m.counts() == {"group_norm": 1}  # both BNs are folded into the convs
    gn = m.norms[0]
    assert gn.id == "gn" and gn.num_groups == 4 and gn.eps == float(np.float32(1e-5))
    np.testing.assert_allclose(gn.weight.load().reshape(-1), sd["gn.weight"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(gn.bias.load().reshape(-1), sd["gn.bias"].numpy(), rtol=1e-6)
