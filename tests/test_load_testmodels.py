"""Every generated test model in every container loads with the right norms."""

import importlib.util
import json

import numpy as np
import pytest

import normaudit
from normaudit import Convention, EpsSource, NormKind

pytestmark = pytest.mark.core  # also run in a core-only install; tests that need torch skip there

EXPECT = {  # model -> (count, kinds, eps)
    "llama": (5, {"rms_norm": 5}, 1e-6),
    "qwen3": (9, {"rms_norm": 9}, 1e-6),
    "gemma3": (13, {"rms_norm": 13}, 1e-6),
    "bert": (5, {"layer_norm": 5}, 1e-12),
}
CONTAINERS = ["hf", "{m}.pt2", "{m}-dynamo-opset18.onnx", "{m}-f32.gguf", "{m}-f16.gguf", "{m}-q8_0.gguf",
              "{m}-q4_0.gguf"]


@pytest.mark.parametrize("model", sorted(EXPECT))
@pytest.mark.parametrize("container", CONTAINERS)
def test_language_models(tm, model, container):
    count, kinds, eps = EXPECT[model]
    m = normaudit.load(tm / model / container.format(m=model))
    assert len(m.norms) == count
    assert m.counts() == kinds
    assert {n.eps for n in m.norms} == {float(np.float32(eps))}
    assert EpsSource.UNKNOWN not in {n.eps_source for n in m.norms}


def test_effective_scales_agree_across_containers(tm):
    """The same layer has the same effective scale (w or 1 + w) in HF, .pt2, ONNX 18/23 and GGUF F32."""
    hf = normaudit.load(tm / "gemma3/hf").by_id()
    ref = hf["model.layers.1.post_attention_layernorm"].scale()
    others = {
        "pt2": normaudit.load(tm / "gemma3/gemma3.pt2").by_id()["m.model.layers.1.post_attention_layernorm"],
        "onnx18": normaudit.load(tm / "gemma3/gemma3-dynamo-opset18.onnx").by_id()[
            "m.model.layers.1.post_attention_layernorm"],
        "onnx23": normaudit.load(tm / "gemma3/gemma3-dynamo-opset23.onnx").by_id()[
            "m.model.layers.1.post_attention_layernorm"],
        "gguf": normaudit.load(tm / "gemma3/gemma3-f32.gguf").by_id()["blk.1.post_attention_norm"],
    }
    assert others["pt2"].convention is Convention.ONE_PLUS
    for name, layer in others.items():
        np.testing.assert_allclose(layer.scale(), ref, rtol=1e-6, err_msg=name)


def test_gguf_quantized_types_are_reported(tm):
    """Norms stay F32 in every GGUF written like llama.cpp does; the f16 file keeps its matrices F16."""
    from gguf import GGUFReader

    r = GGUFReader(str(tm / "llama/llama-q4_0.gguf"))
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0"
    m = normaudit.load(tm / "llama/llama-q4_0.gguf")
    assert {n.dtype for n in m.norms} == {"F32"}


def test_state_dict_without_config_guesses_and_says_so(tm):
    pytest.importorskip("torch")
    m = normaudit.load(tm / "bert/bert.pt")
    assert m.counts() == {"layer_norm": 5}
    assert all(n.eps is None and n.eps_source is EpsSource.UNKNOWN for n in m.norms)
    assert any("no config" in note for note in m.notes)
    with_cfg = normaudit.load(tm / "bert/bert.pt", config=tm / "bert/hf/config.json")
    assert {n.eps for n in with_cfg.norms} == {float(np.float32(1e-12))}
    assert {n.eps_source for n in with_cfg.norms} == {EpsSource.MODULE_ATTRIBUTE}


def test_safetensors_file_uses_config_beside_it(tm):
    m = normaudit.load(tm / "qwen3/hf/model.safetensors")
    assert m.container == "safetensors" and len(m.norms) == 9
    # with torch + transformers the modules are built and their own eps read; a core install reads config.json
    has_arch = all(importlib.util.find_spec(mod) is not None for mod in ("torch", "transformers"))
    want = EpsSource.MODULE_ATTRIBUTE if has_arch else EpsSource.HF_CONFIG
    assert {n.eps_source for n in m.norms} == {want}
    assert all(n.eps == pytest.approx(1e-6, rel=1e-6) for n in m.norms)


def test_sharded_hf_directory(tmp_path, tm):
    """HF directories sharded through model.safetensors.index.json."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tm / "llama/hf/model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for fname, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / fname))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
    (tmp_path / "config.json").write_text((tm / "llama/hf/config.json").read_text())
    m = normaudit.load(tmp_path)
    assert len(m.norms) == 5
    np.testing.assert_array_equal(m.by_id()["model.norm"].weight.load(), tensors["model.norm.weight"])


def test_cnn_every_container(tm):
    torch = pytest.importorskip("torch")
    sd = torch.load(tm / "cnn/cnn.pt", weights_only=True)
    for name in ("cnn.pt2", "cnn-torchscript.pt"):
        m = normaudit.load(tm / "cnn" / name)
        by = m.by_id()
        assert m.counts() == {"batch_norm": 2, "group_norm": 1}, name
        assert by["bn2"].eps == float(np.float32(1e-3)), name
        assert by["gn"].num_groups == 4, name
        np.testing.assert_array_equal(by["bn1"].running_mean.load(), sd["bn1.running_mean"].numpy())
    ts = normaudit.load(tm / "cnn/cnn-torchscript.pt")
    assert ts.container == "torchscript"
    assert {n.eps_source for n in ts.norms} == {EpsSource.MODULE_ATTRIBUTE}
    for name in ("cnn-dynamo-opset18.onnx", "cnn-dynamo-opset21.onnx", "cnn-legacy-opset13.onnx"):
        m = normaudit.load(tm / "cnn" / name)
        assert [(n.id, n.kind) for n in m.norms] == [("gn", NormKind.GROUP_NORM)], name


def test_listing_norms_reads_no_other_weights(tm, monkeypatch):
    """TensorRefs are lazy: loading a model reads no tensor until asked."""
    from normaudit.model import TensorRef

    calls = []
    orig = TensorRef.load
    monkeypatch.setattr(TensorRef, "load", lambda self: calls.append(self.name) or orig(self))
    m = normaudit.load(tm / "llama/llama-q8_0.gguf")
    assert calls == []
    m.norms[0].weight.load()
    assert calls == ["blk.0.attn_norm.weight"]


EXTRA = {"llama": ["{m}-dynamo-opset23.onnx"], "qwen3": ["{m}-dynamo-opset23.onnx"],
         "gemma3": ["{m}-dynamo-opset23.onnx"], "bert": ["{m}-legacy-opset14.onnx"]}


@pytest.mark.parametrize("model, container", [(m, c) for m in sorted(EXPECT)
                                              for c in CONTAINERS[1:] + EXTRA[m] + ["{m}.pt"]])
def test_generated_conversions_compare_clean(tm, model, container):
    from normaudit.checks import compare

    if container.endswith(".pt"):
        pytest.importorskip("torch")
    path = tm / model / container.format(m=model)
    r = compare(normaudit.load(tm / model / "hf"), normaudit.load(path))
    assert r.passed, [f.to_dict() for f in r.findings]
    assert len(r.pairs) == EXPECT[model][0]


def test_generated_cnn_folds(tm):
    from normaudit.checks import compare

    names = ["cnn-dynamo-opset18.onnx", "cnn-dynamo-opset21.onnx", "cnn-legacy-opset13.onnx"]
    try:
        import torch  # noqa: F401  (TorchScript is read by torch)
        names.append("cnn-torchscript.pt")
    except ImportError:
        pass
    for name in names:
        r = compare(normaudit.load(tm / "cnn/cnn.pt2"), normaudit.load(tm / "cnn" / name))
        assert r.passed and not r.findings, (name, [f.to_dict() for f in r.findings])
        assert len(r.pairs) == 3
