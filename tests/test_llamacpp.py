"""The llama.cpp runtime as an activation backend (issue #13): capture, alignment, tokenizer check, three-way
attribution, logits metrics; and the core without llama-cpp-python installed.

Tests that run llama.cpp skip cleanly when llama_cpp does not import."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from breakers import gguf_edit_norm, gguf_eps, gguf_kv, gguf_swap_tokens, scale_channels
from conftest import CORPUS, probe
from normaudit import kernels
from normaudit.activations import diff_activations
from normaudit.activations.runners import llamacpp as lc
from normaudit.api import audit, inspect
from normaudit.cli import app

runner = CliRunner()
needs_llama = pytest.mark.skipif(not lc.available(),
                                 reason="llama-cpp-python is not installed (pip install 'normaudit[llamacpp]')")
HF_NORMS = {"qwen3": 9, "gemma3": 13, "llama": 5}
GEMMA_NORMS = {f"blk.{i}.{n}.weight" for i in (0, 1) for n in ("attn_norm", "ffn_norm", "post_attention_norm",
                                                                "post_ffw_norm", "attn_q_norm", "attn_k_norm")}
GEMMA_NORMS.add("output_norm.weight")


def by_a(report):
    return {p.a: p for p in report.points}


def _validate(doc):
    """The document with the llama.cpp backend's keys validates against the shipped compare schema."""
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return
    from normaudit.report import schemas

    schemas.validate(doc)


# -- without llama-cpp-python ------------------------------------------------------------------------------

@pytest.mark.core
def test_static_audit_never_loads_llama_cpp(real):
    loaded, _ = probe("api", [[str(real / "hf/qwen3"), str(real / "gguf/qwen3-f32.gguf")]])
    assert "llama_cpp" not in loaded["loaded"]


def test_without_llama_cpp_the_backend_says_how_to_install(real):
    """llama_cpp made unimportable in a fresh interpreter: the llama.cpp backend is one line naming the extra;
    the replay backend never loads llama_cpp even when it is installed."""
    pytest.importorskip("transformers", reason="activation runs need the activations extra")
    hf, gg = str(real / "hf/qwen3"), str(real / "gguf/qwen3-f32.gguf")
    got, err = probe("cli", ["compare", hf, gg, "--activations", "--backend", "llama.cpp", "--quiet"],
                     hide=("llama_cpp",))
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("normaudit:")]
    assert got["code"] == 2 and len(lines) == 1, err
    assert lines[0] == ("normaudit: error: the llama.cpp backend (llama-cpp-python) needs llama_cpp, which is not "
                        "installed (hint: pip install 'normaudit[llamacpp]')")
    got, _ = probe("cli", ["compare", hf, gg, "--activations", "--quiet"])
    assert got["code"] == 0 and "llama_cpp" not in got["loaded"]


def test_backend_option_errors_are_one_line(real):
    hf, gg = str(real / "hf/qwen3"), str(real / "gguf/qwen3-f32.gguf")
    for args, text in ((["--backend", "llama.cpp"], "go with --activations"),
                       (["--activations", "--backend", "onnx"], "--backend must be one of replay, llama.cpp, both")):
        res = runner.invoke(app, ["compare", hf, gg, *args])
        assert res.exit_code == 2 and text in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["compare", gg, hf, "--activations", "--backend", "both"])
    assert res.exit_code == 2 and "compares a source model (A) with its GGUF (B)" in res.output
    res = runner.invoke(app, ["compare", hf, str(real / "onnx/qwen3-dynamo-opset18.onnx"), "--activations",
                              "--backend", "llama.cpp"])
    assert res.exit_code == 2 and "neither side is a GGUF" in res.output


def test_next_token_metrics_math():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 5, 11)).astype(np.float32)
    same = kernels.next_token_metrics(ref, ref.astype(np.float64) + 3.0)  # a constant shift: the same distribution
    assert same["kld_max"] < 1e-12 and same["top1_agreement"] == 1.0 and same["max_abs_dp"] < 1e-12
    other = ref.copy()
    other[0, 2] = ref[0, 2, ::-1]  # one token's distribution reversed
    m = kernels.next_token_metrics(ref, other)
    p, q = (np.exp(v - v.max()) / np.exp(v - v.max()).sum() for v in (ref[0, 2].astype(np.float64),
                                                                      other[0, 2].astype(np.float64)))
    assert m["kld_max"] == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-9)
    assert m["kld_mean"] == pytest.approx(m["kld_max"] / 5, rel=1e-9)
    assert m["top1_agreement"] == (0.8 if ref[0, 2].argmax() != other[0, 2].argmax() else 1.0)
    assert m["max_abs_dp"] == pytest.approx(float(np.abs(p - q).max())) and m["tokens"] == 5


# -- the runtime ---------------------------------------------------------------------------------------------

@needs_llama
@pytest.mark.parametrize("model", ["qwen3", "gemma3"])
def test_f32_through_llama_cpp_lines_up_every_point(real, model):
    r = diff_activations(real / "hf" / model, real / "gguf" / f"{model}-f32.gguf", backend="llama.cpp")
    pts = by_a(r)
    hf_norms = {n.id for n in inspect(real / "hf" / model).norms}
    assert {p.a for p in r.points if p.kind == "norm"} == hf_norms and len(hf_norms) == HF_NORMS[model]
    assert {"block.0", "block.1", "output"} <= set(pts)
    assert all(p.note == "" for p in r.points)  # every tensor in A's layout, none merely reshaped
    assert r.first_divergence is None and "llama.cpp runtime" in r.backends["b"] and "F32 KV cache" in r.backends["b"]
    worst = max(p.metrics["rel_l2"] for p in r.points)
    if model == "qwen3":
        assert worst < 1e-6  # float32 kernels: measured 3.0e-7
    else:
        # up to Gemma3's first FFN float32 rounding; ggml-cpu's GELU reads an FP16 table from there (4.1e-4)
        assert max(pts[k].metrics["rel_l2"] for k in ("model.layers.0.input_layernorm",
                                                       "model.layers.0.self_attn.q_norm",
                                                       "model.layers.0.post_attention_layernorm")) < 1e-6
        assert 1e-4 < pts["model.layers.0.post_feedforward_layernorm"].metrics["rel_l2"] < 1e-3 and worst < 1e-3
        assert any("axes reordered" in n for n in r.notes)  # Gemma3's q/k norms run on [heads, T, dim]
    assert r.output["kld_mean"] < 1e-8 and r.output["top1_agreement"] == 1.0 and r.output["tokens"] == 16
    assert r.passed and r.anomalies == [] and r.verdict.startswith("activations match")
    assert {w["dtype"] for w in r.weights} == {"F32"}  # each tensor measured against the source: exact
    assert all(p.local_rel_l2 < 1e-6 for p in r.points if p.kind == "norm")  # the GGUF's own norms on A's input


@needs_llama
def test_what_each_runtime_tensor_holds(real):
    """attn_norm-N is norm-N (the bare RMS_NORM) times the stored weight; asking for tensors changes nothing;
    the captured result_output is llama_get_logits; the last l_out holds every token's row."""
    path = real / "gguf/gemma3-f32.gguf"
    model = inspect(path)
    toks = list(range(3, 19))
    seen: dict[str, np.ndarray] = {}

    class Raw(lc.LlamaCppRunner):  # also capture the bare norm ops (the first norm-0 is attn_norm's)
        def _key(self, name):
            if name == "norm-0" and "raw" not in seen:
                return "raw", "block", "rows"
            return super()._key(name)

    r = Raw(path, model)
    r.decode(toks, lambda k, kind, out, x: seen.setdefault(k, out))
    assert seen["block.1"].shape == (1, 16, 64) and seen["output"].shape == (1, 16, 320)
    raw, weighted = seen["raw"], seen["blk.0.attn_norm"]
    w = next(n for n in model.norms if n.id == "blk.0.attn_norm").weight.load()  # stored 1 + w
    assert np.allclose(weighted, raw * w, rtol=1e-6, atol=1e-7)
    assert np.allclose(np.sqrt((raw.astype(np.float64) ** 2).mean(-1)), 1.0, atol=1e-3)  # x / rms(x)
    plain = lc.LlamaCppRunner(path, model)
    plain._key = lambda name: None  # ask for nothing: the uninstrumented graph, logits from llama_get_logits
    got: dict[str, np.ndarray] = {}
    plain.decode(toks, lambda k, kind, out, x: got.setdefault(k, out))
    assert set(got) == {"output"} and np.array_equal(got["output"], seen["output"])


@needs_llama
def test_runner_rejects_inputs_it_cannot_run(real):
    path = real / "gguf/qwen3-f32.gguf"
    r = lc.LlamaCppRunner(path, inspect(path))
    with pytest.raises(lc.NormauditError, match="one sequence"):
        r.run({"input_ids": np.ones((2, 4), np.int64)}, lambda *a: None)
    with pytest.raises(lc.NormauditError, match="outside the GGUF vocabulary"):
        r.run({"input_ids": np.array([[1, 320]])}, lambda *a: None)
    with pytest.raises(lc.NormauditError, match="attention_mask"):
        r.run({"input_ids": np.array([[1, 2]]), "attention_mask": np.array([[1, 0]])}, lambda *a: None)


@needs_llama
def test_unloadable_gguf_is_one_line_with_llama_cpp_reason(tm):
    res = runner.invoke(app, ["compare", str(tm / "llama/hf"), str(tm / "llama/llama-f32.gguf"), "--activations",
                              "--backend", "llama.cpp"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "llama.cpp cannot load this GGUF" in res.output and "tokenizer.ggml.model" in res.output


@needs_llama
@pytest.mark.parametrize("model, build, where", [
    ("qwen3", lambda s, d: gguf_eps(s, d, 1e-2), "model.layers.0.input_layernorm"),
    ("gemma3", lambda s, d: gguf_eps(s, d, 1e-2), "model.layers.0.input_layernorm"),
    ("qwen3", lambda s, d: gguf_edit_norm(s, d, {"blk.1.attn_norm.weight"}, scale_channels([3, 17, 40], 1.5)),
     "model.layers.1.input_layernorm"),
    ("gemma3", lambda s, d: gguf_edit_norm(s, d, {"blk.1.attn_q_norm.weight"}, scale_channels([2, 5], 1.5)),
     "model.layers.1.self_attn.q_norm"),
    ("gemma3", lambda s, d: gguf_edit_norm(s, d, GEMMA_NORMS, lambda w: w - 1), "model.layers.0.input_layernorm"),
], ids=["qwen3-eps", "gemma3-eps", "qwen3-norm", "gemma3-qnorm", "gemma3-shift-dropped"])
def test_broken_files_pinned_by_the_runtime(real, tmp_path, model, build, where):
    bad = build(real / "gguf" / f"{model}-f32.gguf", tmp_path / "bad.gguf")
    r = diff_activations(real / "hf" / model, bad, backend="llama.cpp")
    fd = r.first_divergence
    assert fd is not None and fd.a == where, (fd and fd.a)
    assert fd.local_rel_l2 == pytest.approx(fd.metrics["rel_l2"], rel=0.05)  # the layer adds the error itself
    earlier = r.points[: r.points.index(fd)]
    assert all(p.metrics["rel_l2"] < 1e-3 for p in earlier)  # float32 (and Gemma3's FP16 GELU table) only
    assert not r.passed and r.anomalies[0]["point"] == where and r.anomalies[0]["kind"] == "norm"


@needs_llama
def test_three_way_attribution_tells_conversion_from_runtime(real, tmp_path):
    hf = real / "hf/qwen3"
    clean = diff_activations(hf, real / "gguf/qwen3-f32.gguf", backend="both")
    att = clean.attribution
    assert att["first"] == {"conversion": None, "runtime": None} and clean.passed
    assert len(att["points"]) == len(clean.points) and all(a["cause"] == "" for a in att["points"])
    assert all(a["a_vs_replay"]["rel_l2"] == 0.0 for a in att["points"])  # F32 replay is exact
    assert att["output"]["a_vs_replay"]["kld_max"] == 0.0 and att["output"]["replay_vs_runtime"]["kld_max"] < 1e-12
    assert "GGUF replay" in clean.backends["replay"] and "llama.cpp runtime" in clean.backends["b"]
    # a norm corrupted in the file: the replay already diverges -> conversion
    bad = gguf_edit_norm(real / "gguf/qwen3-f32.gguf", tmp_path / "norm.gguf", {"blk.1.attn_norm.weight"},
                         scale_channels([3, 17, 40], 1.5))
    r = diff_activations(hf, bad, backend="both")
    assert r.attribution["first"] == {"conversion": "model.layers.1.input_layernorm", "runtime": None}
    assert {(a["kind"], a["point"]) for a in r.anomalies} == {("norm", "model.layers.1.input_layernorm"),
                                                               ("weight", "block.1")}  # main's verdict names both
    # only the runtime reads rope.freq_base: the replay matches, llama.cpp does not -> runtime
    rope = gguf_kv(real / "gguf/qwen3-f32.gguf", tmp_path / "rope.gguf", qwen3__rope__freq_base=100.0)
    res = runner.invoke(app, ["compare", str(hf), str(rope), "--activations", "--backend", "both", "--json", "-"])
    assert res.exit_code == 1
    _validate(json.loads(res.stdout))
    att = json.loads(res.stdout)["activations"]["attribution"]
    assert att["first"] == {"conversion": None, "runtime": "model.layers.0.post_attention_layernorm"}  # after attention
    anomaly = json.loads(res.stdout)["activations"]["anomalies"][0]
    assert anomaly["kind"] == "runtime" and "diverges from the replay of the same file" in anomaly["message"]
    row = {a["point"]: a for a in att["points"]}["model.layers.0.post_attention_layernorm"]
    assert row["cause"] == "runtime" and row["a_vs_replay"]["rel_l2"] == 0.0 and row["replay_vs_runtime"]["rel_l2"] > 0.1
    alone = diff_activations(hf, rope, backend="llama.cpp")  # without the replay: exact weights, drift anyway
    assert [a["kind"] for a in alone.anomalies] == ["runtime"] and "weights are exact" in alone.anomalies[0]["message"]
    res = runner.invoke(app, ["compare", str(hf), str(rope), "--activations", "--backend", "both", "--verbose"])
    assert "three-way attribution" in res.output and "three-way attribution (rel L2 per point)" in res.output
    assert " ".join(res.output.split()).count("first diverges at model.layers.0.post_attention_layernorm") == 1
    flat = " ".join(res.output.split())  # the inherited drift is put on the runtime, not on the file's weights
    assert "the drift comes from upstream, in what only the runtime computes" in flat
    assert "embeddings or non-norm weights" not in flat


@needs_llama
def test_tokenizer_checks(real, tmp_path):
    hf, gg = real / "hf/qwen3", real / "gguf/qwen3-f32.gguf"
    # llama.cpp adds BOS <s> for this vocabulary, transformers' tokenizer does not: a warning, text split alike
    rep = audit(hf, gg, activations=True, backend="llama.cpp", text="hello world")
    tok = rep.activations.tokenization
    assert tok["hf"] == [293, 280, 301, 301, 294, 293, 316, 261, 301, 302] and tok["gguf"] == [1] + tok["hf"]
    assert tok["body_match"] and tok["specials"]["gguf_leading"] == [1]
    f = {x.check: x for x in rep.findings}
    assert f["tokenizer_special_tokens"].severity.value == "warning" and "tokenizer_mismatch" not in f
    assert rep.passed  # a warning does not fail
    assert rep.activations.inputs["input_ids"]["values"] == [tok["hf"]]  # both sides ran the same ids
    # a vocabulary written wrong: an error with the token-level diff
    bad = gguf_swap_tokens(gg, tmp_path / "tok.gguf", 280, 301)
    res = runner.invoke(app, ["compare", str(hf), str(bad), "--activations", "--backend", "llama.cpp",
                              "--text", "hello world", "--json", "-"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 1
    _validate(doc)
    err = next(x for x in doc["findings"] if x["check"] == "tokenizer_mismatch")
    assert err["severity"] == "error" and "first difference at HF token 1 / llama.cpp token 2" in err["message"]
    assert err["values"]["first_difference"]["hf"][1] == [280, "he"]
    assert err["values"]["first_difference"]["gguf"][2] == [301, "he"]
    # without --text the probe text is compared (and said so)
    rep = audit(hf, gg, activations=True, backend="llama.cpp")
    assert rep.activations.tokenization["source"].startswith("probe text")


@needs_llama
def test_gguf_vs_gguf_through_the_runtime_needs_no_source(real):
    r = diff_activations(real / "gguf/qwen3-f32.gguf", real / "gguf/qwen3-Q4_K_M.gguf", backend="llama.cpp")
    assert "llama.cpp runtime" in r.backends["a"] and "llama.cpp runtime" in r.backends["b"]
    assert r.tokenization is None  # no HF tokenizer to compare with, and the report says so
    assert ("tokenizer not compared (tokenizer_mismatch / tokenizer_special_tokens skipped): neither side is an HF "
            "folder (give one with --model HF_DIR)") in r.notes
    pts = by_a(r)
    assert sum(p.kind == "norm" for p in r.points) == 9
    # side A's norm inputs come from the graph: B's norms on them are F32 in both files
    assert pts["blk.0.attn_norm"].local_rel_l2 < 1e-6 and pts["blk.1.ffn_norm"].local_rel_l2 < 1e-6
    assert r.output["kld_mean"] > 1e-6  # Q4_K_M moves the distributions
    # B's tensors measured against A's float tensors of the same name: the drift is explained, the run passes
    w = {x["tensor"]: x for x in r.weights}
    assert len(w) == 25 and w["blk.0.attn_norm.weight"]["rel_l2"] == 0.0
    assert 0 < w["token_embd.weight"]["rel_l2"] <= w["token_embd.weight"]["bound"]
    assert w["blk.1.ffn_down.weight"]["block"] == "block.1"
    assert r.passed and r.anomalies == [] and r.verdict.startswith("expected quantization drift (Q4_K_M)")


@needs_llama
def test_gguf_vs_gguf_through_the_runtime_still_pins_a_broken_norm(real, tmp_path):
    bad = gguf_edit_norm(real / "gguf/qwen3-f32.gguf", tmp_path / "bad.gguf", {"blk.1.attn_norm.weight"},
                         scale_channels([3, 17, 40], 1.5))
    r = diff_activations(real / "gguf/qwen3-f32.gguf", bad, backend="llama.cpp")
    assert not r.passed
    assert r.anomalies[0]["point"] == "blk.1.attn_norm" and r.anomalies[0]["kind"] == "norm"


# -- the shared corpus (CI) ------------------------------------------------------------------------------------

def _corpus_pairs():
    if not CORPUS.is_dir():
        return []
    return [(m, q) for m in ("llama", "qwen3", "gemma3") for q in ("f32", "f16", "q8_0", "Q6_K", "Q4_K_M")]


@needs_llama
@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")
@pytest.mark.parametrize("model, quant", _corpus_pairs(), ids=lambda x: str(x))
def test_corpus_hf_vs_every_gguf_three_way(model, quant):
    r = diff_activations(CORPUS / "hf" / model, CORPUS / "gguf" / f"{model}-{quant}.gguf", backend="both")
    assert sum(p.kind == "norm" for p in r.points) == HF_NORMS[model]
    assert sum(p.kind == "block" for p in r.points) == 2 and r.points[-1].kind == "output"
    assert all(p.note == "" for p in r.points)
    att = r.attribution
    assert att["first"]["runtime"] is None  # llama.cpp never adds more than its measured precision
    assert r.passed, r.anomalies  # quantization drift is explained by the weights' measured errors
    worst_rt = max(a["replay_vs_runtime"]["rel_l2"] for a in att["points"])
    if quant == "f32":
        assert max(a["a_vs_replay"]["rel_l2"] for a in att["points"]) == 0.0
        assert worst_rt < (1e-3 if model == "gemma3" else 1e-6)
        assert r.output["top1_agreement"] == 1.0 and r.output["kld_max"] < 1e-7
    elif quant == "f16":
        assert r.first_divergence is None and worst_rt < 2e-3
    else:
        assert att["first"]["conversion"] is not None  # quantization drift shows in the replay already
