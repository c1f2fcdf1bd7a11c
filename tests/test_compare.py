"""`compare`: silent on correct conversions, catches broken ones on the right layer with the right check."""

import json

import numpy as np
import pytest
from onnx import helper, numpy_helper
from typer.testing import CliRunner

import normaudit
from breakers import (copy_gguf, fp16_eps_constant, gguf_edit_norm, gguf_eps, hf_copy, initializer, node_in_scope,
                      onnx_edit, scale_channels, set_initializer)
from normaudit import kernels
from normaudit.checks import compare
from normaudit.cli import app

runner = CliRunner()


def run(a, b, **kw):
    return compare(normaudit.load(a), normaudit.load(b), **kw)


def errors(report):
    return [f for f in report.findings if f.severity.value == "error"]


CLEAN = [
    ("hf/qwen3", "gguf/qwen3-f32.gguf"), ("hf/qwen3", "gguf/qwen3-q8_0.gguf"), ("hf/qwen3", "gguf/qwen3-Q4_K_M.gguf"),
    ("hf/gemma3", "gguf/gemma3-f32.gguf"), ("hf/gemma3", "gguf/gemma3-Q4_K_M.gguf"),
    ("hf/qwen3", "onnx/qwen3-dynamo-opset18.onnx"), ("hf/gemma3", "onnx/gemma3-dynamo-opset18.onnx"),
    ("hf/gemma3", "onnx/gemma3-dynamo-opset23.onnx"), ("hf/bert", "onnx/bert-dynamo-opset18.onnx"),
    ("hf/bert", "onnx/bert-legacy-opset14.onnx"), ("onnx/cnn.pt2", "onnx/cnn-legacy-opset13.onnx"),
    ("onnx/cnn.pt2", "onnx/cnn-dynamo-opset18.onnx"), ("onnx/cnn.pt2", "onnx/cnn-dynamo-opset21.onnx"),
    ("gguf/qwen3-f32.gguf", "gguf/qwen3-Q4_K_M.gguf"), ("onnx/gemma3-dynamo-opset23.onnx", "gguf/gemma3-Q4_K_M.gguf"),
    ("gguf/gemma3-f32.gguf", "hf/gemma3"), ("onnx/qwen3-dynamo-opset18.onnx", "gguf/qwen3-q8_0.gguf"),
]


@pytest.mark.core
@pytest.mark.parametrize("a, b", CLEAN, ids=lambda p: p.split("/")[-1])
def test_clean_pairs_pass(real, a, b):
    r = run(real / a, real / b)
    assert r.passed, [f.to_dict() for f in r.findings]
    assert errors(r) == [] and [f for f in r.findings if f.severity.value == "warning"] == []
    n = len(normaudit.load(real / a).norms)
    assert len(r.pairs) == n  # every norm aligned (BNs to their folded convs)


def test_alignment_methods(real):
    r = run(real / "hf/gemma3", real / "gguf/gemma3-f32.gguf")
    by = {p.a: p for p in r.pairs}
    # Gemma3's post_attention_layernorm is post_attention_norm; pre_feedforward is ffn_norm
    assert by["model.layers.1.post_attention_layernorm"].b == "blk.1.post_attention_norm"
    assert by["model.layers.1.pre_feedforward_layernorm"].b == "blk.1.ffn_norm"
    assert by["model.layers.0.input_layernorm"].aligned_by == "gguf_table"
    assert by["model.norm"].convention == "1+w -> w (stored 1+w)"
    q = run(real / "hf/qwen3", real / "gguf/qwen3-f32.gguf")
    assert {p.a: p.b for p in q.pairs}["model.layers.0.post_attention_layernorm"] == "blk.0.ffn_norm"
    o = run(real / "hf/qwen3", real / "onnx/qwen3-dynamo-opset18.onnx")
    assert {p.a: p.b for p in o.pairs}["model.norm"] == "m.model.norm"  # wrapper prefix tolerated


def test_folds_are_verified_and_eps_recovered(real):
    r = run(real / "onnx/cnn.pt2", real / "onnx/cnn-legacy-opset13.onnx")
    folds = {p.a: p for p in r.pairs if p.aligned_by.startswith("fold")}
    assert set(folds) == {"bn1", "bn2"}
    assert folds["bn2"].b == "/conv2/Conv"
    assert folds["bn2"].eps_b == pytest.approx(1e-3, rel=1e-3)  # recovered from the folded weights
    assert folds["bn1"].eps_b == pytest.approx(1e-5, rel=0.05)
    assert folds["bn1"].weight["rel_l2"] < 1e-6


# -- broken conversions -------------------------------------------------------------------------------

def test_gguf_eps_rewritten_reported_once_model_wide(real, tmp_path):
    bad = gguf_eps(real / "gguf/qwen3-f32.gguf", tmp_path / "bad.gguf", 1e-5)
    r = run(real / "hf/qwen3", bad)
    (f,) = errors(r)
    assert f.check == "eps_mismatch" and f.a is None and f.b is None
    assert "qwen3.attention.layer_norm_rms_epsilon is 1e-05" in f.message
    assert "rms_norm_eps says 1e-06" in f.message and "(9 layers)" in f.message
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(bad)])
    assert res.exit_code == 1 and "FAIL" in res.output


def test_float32_rounded_eps_is_equal(real, tmp_path):
    """1e-6 stored as 9.99999997e-07 in GGUF/ONNX equals config.json's 1e-06."""
    r = run(real / "hf/qwen3", real / "gguf/qwen3-f32.gguf")
    assert r.pairs[0].eps_b == pytest.approx(9.999999974752427e-07, rel=0) and r.passed


def test_bert_eps_ignored_in_onnx(real, tmp_path):
    """gpt4all#1946-style: the converted model uses the 1e-5 default instead of BERT's 1e-12, one layer."""
    def f(m):
        node = node_in_scope(m, "LayerNormalization", "m.encoder.layer.1.attention.output.LayerNorm")
        for a in node.attribute:
            if a.name == "epsilon":
                a.f = 1e-5

    bad = onnx_edit(real / "onnx/bert-dynamo-opset18.onnx", tmp_path / "bad.onnx", f)
    r = run(real / "hf/bert", bad)
    (err,) = errors(r)
    assert err.check == "eps_mismatch"
    assert (err.a, err.b) == ("encoder.layer.1.attention.output.LayerNorm",
                              "m.encoder.layer.1.attention.output.LayerNorm")
    assert "1e-12 in A, 1e-05 in B" in err.message


def test_gemma_shift_missing_and_doubled(real, tmp_path):
    norms = {f"blk.{i}.{n}.weight" for i in (0, 1) for n in ("attn_norm", "ffn_norm", "post_attention_norm",
                                                             "post_ffw_norm", "attn_q_norm", "attn_k_norm")}
    norms.add("output_norm.weight")
    missing = gguf_edit_norm(real / "gguf/gemma3-f32.gguf", tmp_path / "missing.gguf", norms, lambda w: w - 1)
    r = run(real / "hf/gemma3", missing)
    (e,) = errors(r)  # one converter cause, reported once with every layer listed
    assert e.check == "convention_mismatch" and e.a is None and e.b is None
    assert "model-wide (13 layers" in e.message and "shift is missing" in e.message
    assert len(e.values["layers"]) == 13 and ["model.norm", "output_norm"] in e.values["layers"]
    twice = gguf_edit_norm(real / "gguf/gemma3-f32.gguf", tmp_path / "twice.gguf", {"blk.1.attn_k_norm.weight"},
                           lambda w: w + 1)
    (e,) = errors(run(real / "hf/gemma3", twice))
    assert e.check == "convention_mismatch" and e.b == "blk.1.attn_k_norm" and "applied twice" in e.message


def test_onnx_gemma_folded_shift_dropped(real, tmp_path):
    src = normaudit.load(real / "onnx/gemma3-dynamo-opset23.onnx").by_id()
    name = src["m.model.layers.0.input_layernorm"].weight.name  # anonymous constant-folded 1 + w

    def f(m):
        set_initializer(m, name, initializer(m, name) - 1)

    bad = onnx_edit(real / "onnx/gemma3-dynamo-opset23.onnx", tmp_path / "bad.onnx", f)
    (e,) = errors(run(real / "hf/gemma3", bad))
    assert e.check == "convention_mismatch" and e.a == "model.layers.0.input_layernorm"


def test_corrupted_channels_one_layer(real, tmp_path):
    corrupt = scale_channels([3, 17, 40], 1.5)
    bad = gguf_edit_norm(real / "gguf/qwen3-f32.gguf", tmp_path / "bad.gguf", {"blk.1.ffn_norm.weight"}, corrupt)
    r = run(real / "hf/qwen3", bad)
    (e,) = errors(r)
    assert e.check == "weight_mismatch" and (e.a, e.b) == ("model.layers.1.post_attention_layernorm", "blk.1.ffn_norm")
    assert "3 of 64 channels differ (first: [3, 17, 40])" in e.message
    # the same corruption in a Q4_K_M file is still caught: norms are F32 there
    bad_q = gguf_edit_norm(real / "gguf/qwen3-Q4_K_M.gguf", tmp_path / "bad_q.gguf", {"blk.1.ffn_norm.weight"},
                           corrupt)
    assert [x.b for x in errors(run(real / "hf/qwen3", bad_q))] == ["blk.1.ffn_norm"]


def test_weight_left_at_init(real, tmp_path):
    bad = gguf_edit_norm(real / "gguf/qwen3-q8_0.gguf", tmp_path / "bad.gguf", {"blk.0.attn_q_norm.weight"},
                         lambda w: np.ones_like(w))
    (e,) = errors(run(real / "hf/qwen3", bad))
    assert e.check == "weight_at_init" and e.b == "blk.0.attn_q_norm"


def test_qk_norm_unmapped(real, tmp_path):
    bad = copy_gguf(real / "gguf/qwen3-f32.gguf", tmp_path / "bad.gguf",
                    lambda n, d, q: None if "attn_k_norm" in n else (d, q))
    errs = errors(run(real / "hf/qwen3", bad))
    assert [(e.check, e.a) for e in errs] == [("missing_norm", "model.layers.0.self_attn.k_norm"),
                                              ("missing_norm", "model.layers.1.self_attn.k_norm")]
    assert errs[0].message.startswith("qk-norm") and "blk.0.attn_k_norm.weight" in errs[0].hint
    # and in the other direction it is an extra norm (warning)
    r = run(bad, real / "hf/qwen3")
    assert {f.check for f in r.findings} == {"extra_norm"} and r.passed


def test_norm_stored_in_f16_is_a_dtype_risk_and_within_tolerance(real, tmp_path):
    import gguf

    def f16(name, data, qtype):
        if name.endswith("norm.weight"):
            return data.astype(np.float16), gguf.GGMLQuantizationType.F16
        return data, qtype

    bad = copy_gguf(real / "gguf/qwen3-f32.gguf", tmp_path / "f16norms.gguf", f16)
    r = run(real / "hf/qwen3", bad)
    assert [f.check for f in r.findings] == ["dtype_risk"] and r.passed
    assert "(9 layers)" in r.findings[0].message
    strict = compare(normaudit.load(real / "hf/qwen3"), normaudit.load(bad),
                     __import__("normaudit.config", fromlist=["Thresholds"]).Thresholds(fail_on="warning"))
    assert not strict.passed


def test_rms_swapped_for_layernorm(real, tmp_path):
    def f(m):
        node = node_in_scope(m, "RMSNormalization", "m.model.layers.1.post_attention_layernorm")
        node.op_type = "LayerNormalization"
        m.graph.initializer.append(numpy_helper.from_array(np.zeros(64, np.float32), "zero_bias"))
        node.input.append("zero_bias")
        for a in list(node.attribute):
            if a.name == "stash_type":
                node.attribute.remove(a)

    bad = onnx_edit(real / "onnx/gemma3-dynamo-opset23.onnx", tmp_path / "bad.onnx", f)
    (e,) = errors(run(real / "hf/gemma3", bad))
    assert e.check == "norm_type_mismatch" and e.a == "model.layers.1.post_attention_layernorm"
    assert "rms_norm in A, layer_norm in B (mean centring added)" in e.message


def test_bias_lost(real, tmp_path):
    def f(m):
        node = node_in_scope(m, "LayerNormalization", "m.encoder.layer.0.output.LayerNorm")
        del node.input[2]

    bad = onnx_edit(real / "onnx/bert-dynamo-opset18.onnx", tmp_path / "bad.onnx", f)
    (e,) = errors(run(real / "hf/bert", bad))
    assert e.check == "norm_type_mismatch" and "bias lost" in e.message and e.a == "encoder.layer.0.output.LayerNorm"


def test_decomposed_layernorm_eps_underflows_in_fp16(real, tmp_path):
    bad = onnx_edit(real / "onnx/bert-legacy-opset14.onnx", tmp_path / "bad.onnx",
                    lambda m: fp16_eps_constant(m, "/m/encoder/layer.0/attention/output/LayerNorm/"))
    (e,) = errors(run(real / "hf/bert", bad))
    assert e.check == "eps_underflow" and e.b == "m.encoder.layer.0.attention.output.LayerNorm"
    assert "F16" in e.message and "underflows to 0" in e.message


def test_bn_folded_with_wrong_eps(real, tmp_path):
    a = normaudit.load(real / "onnx/cnn.pt2")
    bn, conv = a.by_id()["bn1"], {op.id: op for op in a.linear_ops}["conv1"]
    w, b = kernels.fold_batch_norm(conv.weight.load(), conv.bias.load(), bn.running_mean.load(),
                                   bn.running_var.load(), bn.weight.load(), bn.bias.load(), 1e-3)

    def f(m):
        set_initializer(m, "onnx::Conv_40", w)
        set_initializer(m, "onnx::Conv_41", b)

    bad = onnx_edit(real / "onnx/cnn-legacy-opset13.onnx", tmp_path / "bad.onnx", f)
    r = compare(a, normaudit.load(bad))
    (e,) = errors(r)
    assert e.check == "fold_mismatch" and (e.a, e.b) == ("bn1", "/conv1/Conv")
    assert e.values["eps_used"] == pytest.approx(1e-3, rel=0.01)
    assert "eps ≈ 0.001" in e.message and "eps 1e-05" in e.message


def test_bn_folded_with_wrong_statistics(real, tmp_path):
    def f(m):
        w = initializer(m, "onnx::Conv_43").copy()
        w[[1, 5]] *= -1  # two output channels with a flipped gamma
        set_initializer(m, "onnx::Conv_43", w)

    bad = onnx_edit(real / "onnx/cnn-legacy-opset13.onnx", tmp_path / "bad.onnx", f)
    (e,) = errors(run(real / "onnx/cnn.pt2", bad))
    assert e.check == "fold_mismatch" and e.a == "bn2" and "does not match" in e.message


def test_group_norm_groups_changed(real, tmp_path):
    def f(m):
        node = node_in_scope(m, "GroupNormalization", "gn")
        for a in node.attribute:
            if a.name == "num_groups":
                a.i = 8

    bad = onnx_edit(real / "onnx/cnn-dynamo-opset21.onnx", tmp_path / "bad.onnx", f)
    (e,) = errors(run(real / "onnx/cnn.pt2", bad))
    assert e.check == "norm_type_mismatch" and "groups 4 in A, 8 in B" in e.message


def test_hf_config_eps_changed(real, tmp_path):
    bad = hf_copy(real / "hf/gemma3", tmp_path / "gemma3", rms_norm_eps=1e-5)
    (e,) = errors(run(real / "gguf/gemma3-f32.gguf", bad))
    assert e.check == "eps_mismatch" and e.a is None and "(13 layers)" in e.message


# -- output, exit codes, thresholds -----------------------------------------------------------------------

def test_json_schema_and_exit_codes(real, tmp_path):
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(real / "gguf/qwen3-Q4_K_M.gguf"), "--json", "-"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["schema"] == "normaudit.compare/1" and doc["passed"] is True
    assert doc["a"]["format"] == "pytorch" and doc["b"]["format"] == "gguf" and doc["b"]["architecture"] == "qwen3"
    p = doc["pairs"][0]
    assert set(p) == {"a", "b", "kind", "eps_a", "eps_b", "aligned_by", "convention", "weight"}
    assert set(p["weight"]) == {"max_abs", "rel_l2", "cosine"}
    bad = gguf_eps(real / "gguf/qwen3-f32.gguf", tmp_path / "bad.gguf", 1e-5)
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(bad), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["passed"] is False and doc["findings"][0]["check"] == "eps_mismatch"
    assert set(doc["findings"][0]) >= {"check", "severity", "a", "b", "message", "hint"}
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(tmp_path / "nope.gguf")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1


def test_thresholds_from_flags_and_files(real, tmp_path, monkeypatch):
    def corrupt(w):
        w[3] += 0.01
        return w

    bad = gguf_edit_norm(real / "gguf/qwen3-f32.gguf", tmp_path / "bad.gguf", {"blk.1.ffn_norm.weight"}, corrupt)
    args = ["compare", str(real / "hf/qwen3"), str(bad)]
    assert runner.invoke(app, args).exit_code == 1
    assert runner.invoke(app, args + ["--rel-l2", "0.05"]).exit_code == 0
    monkeypatch.chdir(tmp_path)
    (tmp_path / "normaudit.toml").write_text("[rel_l2]\nF32 = 0.05\n")
    assert runner.invoke(app, args).exit_code == 0
    (tmp_path / "normaudit.toml").unlink()
    (tmp_path / "pyproject.toml").write_text("[tool.normaudit]\nfail_on = 'warning'\nrel_l2 = 0.05\n")
    assert runner.invoke(app, args).exit_code == 0
    (tmp_path / "pyproject.toml").write_text("[tool.normaudit]\nbogus = 1\n")
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "unknown setting 'bogus'" in res.output
    res = runner.invoke(app, args + ["--settings", str(tmp_path / "none.toml")])
    assert res.exit_code == 2


def test_fp32_vs_int8_qdq_onnx(real, tmp_path):
    """Same-format pair: norm weights reaching the norm through DequantizeLinear (QDQ int8 export)."""
    def f(m):
        for node in list(m.graph.node):
            if node.op_type != "LayerNormalization":
                continue
            w = initializer(m, node.input[1])
            scale = np.float32(np.abs(w).max() / 127)
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            base = node.input[1] + "_q"
            m.graph.initializer.extend([numpy_helper.from_array(q, base), numpy_helper.from_array(np.array(scale),
                                                                                                  base + "_scale")])
            m.graph.node.insert(0, helper.make_node("DequantizeLinear", [base, base + "_scale"], [base + "_dq"]))
            node.input[1] = base + "_dq"

    q = onnx_edit(real / "onnx/bert-dynamo-opset18.onnx", tmp_path / "int8.onnx", f)
    r = run(real / "onnx/bert-dynamo-opset18.onnx", q)
    assert r.passed and len(r.pairs) == 5
    assert [f.check for f in r.findings] == ["dtype_risk"] and "I8" in r.findings[0].message
    assert all(p.aligned_by == "name" and p.weight["rel_l2"] < 1e-2 for p in r.pairs)


def test_different_models_warn_architecture_mismatch(real):
    r = run(real / "hf/gemma3", real / "gguf/qwen3-f32.gguf")
    arch = [f for f in r.findings if f.check == "architecture_mismatch"]
    assert len(arch) == 1 and "gemma3" in arch[0].message and "qwen3" in arch[0].message
    assert any(f.check == "missing_norm" for f in r.findings)  # the sandwich norms qwen3 does not have


@pytest.mark.core
@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3", "bert", "t5", "clip", "wavtokenizer-dec", "nemotron"])
def test_gguf_names_from_a_two_block_table_equal_the_full_table(arch):
    """gguf_name_for builds gguf-py's TensorNameMap for blocks 0 and 1 only; every norm name of every block must
    map exactly as through the table built for all blocks (clip's ``layer{bid}`` names included)."""
    from normaudit.formats.gguf.names import _suffixes, gguf_name_for, name_map

    blocks = 24
    full = name_map(arch, blocks)
    modules = [k for k in full.mapping if "norm" in k.lower()] + ["model.layers.23.unknown_norm", "layers.30.norm"]
    assert len(modules) > 10
    for module in modules:
        for name in (module, "m." + module):
            expected = next((r[: -len(".weight")] if r.endswith(".weight") else r for c in _suffixes(name)[:4]
                             if (r := full.get_name(c + ".weight", try_suffixes=(".weight",))) is not None), None)
            assert gguf_name_for(arch, blocks, name) == expected, name
