"""The normalization around the model (issue #14), on real converter output (testmodels/around, made by
generate.py there): image mean/std wherever a conversion keeps it (preprocessor_config.json, an mmproj GGUF's
clip.vision.* keys, ONNX input ops or a fold into the first conv), mmproj GGUFs with every vision norm and its
eps, and the pooling / L2-normalization contract of embedding models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

import normaudit
from breakers import copy_gguf, onnx_edit
from normaudit.cli import app

A = Path(__file__).resolve().parents[1] / "testmodels" / "around"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CLIP = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
runner = CliRunner()


def _hf_json(rel: str) -> dict:
    return json.loads((A / rel).read_text())


def _errors(report, check: str | None = None) -> list:
    return [f for f in report.findings if f.severity.value == "error" and (check is None or f.check == check)]


def _only(report, check: str):
    hits = [f for f in report.findings if f.check == check]
    assert len(hits) == 1, [f.to_dict() for f in report.findings]
    return hits[0]


@pytest.fixture(scope="module")
def vit():
    return normaudit.load(A / "vit/hf")


@pytest.fixture(scope="module")
def gemma3():
    return normaudit.load(A / "gemma3_vlm/hf")


@pytest.fixture(scope="module")
def qwen2vl():
    return normaudit.load(A / "qwen2_vl/hf")


@pytest.fixture(scope="module")
def st_bert():
    return normaudit.load(A / "st_bert/hf")


# -- the preprocessing contract: HF folder, ONNX graph -------------------------------------------------------

def test_preprocessor_config_is_read_with_its_sources(vit):
    cfg = _hf_json("vit/hf/preprocessor_config.json")
    p = vit.preprocess
    assert p.where == "outside" and p.mean == tuple(cfg["image_mean"]) and p.std == tuple(cfg["image_std"])
    assert p.rescale == cfg["rescale_factor"] and p.do_rescale is True and p.do_normalize is True
    assert p.sources["mean"] == "preprocessor_config.json image_mean"
    assert p.sources["rescale"] == "preprocessor_config.json rescale_factor"
    mean, std = p.canonical()
    assert mean.tolist() == IMAGENET[0] and std.tolist() == IMAGENET[1]


@pytest.mark.parametrize("name, nodes", [("vit-norm.onnx", ["node_div", "node_sub", "node_div_1"]),
                                         ("vit-norm-legacy.onnx", ["/Div", "/Sub", "/Div_1"])])
def test_onnx_input_normalization_in_the_graph(vit, name, nodes):
    """(pixels / 255 - mean) / std exported by torch.onnx (dynamo: one initializer per value; TorchScript:
    Constant nodes): the per-channel affine of the nodes gives back the preprocessor_config values, and the
    comparison with the HF folder passes without a preprocessing finding."""
    b = normaudit.load(A / "vit" / name)
    p = b.preprocess
    assert p.where == "graph" and p.input == "pixels" and p.nodes == nodes
    assert p.rescale == pytest.approx(1 / 255, rel=1e-6)
    np.testing.assert_allclose(p.mean, IMAGENET[0], rtol=1e-6)
    np.testing.assert_allclose(p.std, IMAGENET[1], rtol=1e-6)
    r = normaudit.audit(vit, b)
    assert r.passed and not [f for f in r.findings if f.check == "preprocess_mismatch"]


def test_onnx_without_normalization_cannot_tell_alone_and_compare_says_outside(vit):
    b = normaudit.load(A / "vit/vit-plain.onnx")
    assert b.preprocess.where == "unknown" and b.preprocess.conv == "node_Conv_182"
    assert "cannot tell" in b.preprocess.notes[0]
    r = normaudit.audit(vit, b)
    f = _only(r, "preprocess_mismatch")
    assert r.passed and f.severity.value == "info"
    assert "equals A's vit.embeddings.patch_embeddings.projection.weight" in f.message
    assert "mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]" in f.message


def test_normalization_folded_into_the_first_conv_is_recovered(vit):
    """The patch conv of vit-folded.onnx holds W * (1/255) / std per input channel and a shifted bias: alone
    the file cannot tell; against the source conv the folded mean/std come back."""
    b = normaudit.load(A / "vit/vit-folded.onnx")
    assert b.preprocess.where == "unknown"
    r = normaudit.audit(vit, b)
    f = _only(r, "preprocess_mismatch")
    assert r.passed and f.severity.value == "info" and "folded into its first conv (node_conv2d)" in f.message
    np.testing.assert_allclose(f.values["mean_b"], IMAGENET[0], rtol=1e-4)
    np.testing.assert_allclose(f.values["std_b"], IMAGENET[1], rtol=1e-4)


def _swap_sub_div(m: onnx.ModelProto) -> None:
    """Exchange the constants of the Sub (mean) and the second Div (std) on the image input."""
    init = {t.name: t for t in m.graph.initializer}
    sub = next(n for n in m.graph.node if n.op_type == "Sub")
    div = next(n for n in m.graph.node if n.op_type == "Div" and n.input[0] == sub.output[0])
    mean, std = init[sub.input[1]], init[div.input[1]]
    vm, vs = numpy_helper.to_array(mean).copy(), numpy_helper.to_array(std).copy()
    mean.CopyFrom(numpy_helper.from_array(vs, mean.name))
    std.CopyFrom(numpy_helper.from_array(vm, std.name))


def test_swapped_mean_std_in_the_graph_is_caught(vit, tmp_path):
    bad = onnx_edit(A / "vit/vit-norm.onnx", tmp_path / "swapped.onnx", _swap_sub_div)
    r = normaudit.audit(vit, bad)
    [f] = _errors(r, "preprocess_mismatch")
    assert "B's mean and std are swapped" in f.values["causes"]
    assert "channel 0: mean 0.485 in A, 0.229 in B, std 0.229 in A, 0.485 in B" in f.message
    np.testing.assert_allclose(f.values["mean_b"], IMAGENET[1], rtol=1e-6)
    result = runner.invoke(app, ["compare", str(A / "vit/hf"), str(bad)])
    assert result.exit_code == 1 and "preprocess_mismatch" in result.output


def test_wrong_set_folded_into_the_conv_is_caught(vit, tmp_path):
    """Fold OpenAI CLIP's mean/std (instead of the model's ImageNet values) into the patch conv of the plain
    export, with numpy: the recovered values name the set and the input scale it causes."""
    def fold(m: onnx.ModelProto) -> None:
        init = {t.name: t for t in m.graph.initializer}
        conv = next(n for n in m.graph.node if n.op_type == "Conv")
        w = numpy_helper.to_array(init[conv.input[1]]).astype(np.float64)
        mean, std = np.array(CLIP[0]).reshape(1, 3, 1, 1), np.array(CLIP[1]).reshape(1, 3, 1, 1)
        init[conv.input[1]].CopyFrom(numpy_helper.from_array((w / 255 / std).astype(np.float32), conv.input[1]))
        bias = -(w * mean / std).sum(axis=(1, 2, 3))
        m.graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), "folded_bias"))
        conv.input.append("folded_bias")

    bad = onnx_edit(A / "vit/vit-plain.onnx", tmp_path / "clip-folded.onnx", fold)
    r = normaudit.audit(vit, bad)
    [f] = _errors(r, "preprocess_mismatch")
    assert f.values["where_b"] == "folded"
    np.testing.assert_allclose(f.values["mean_b"], CLIP[0], rtol=1e-4)
    np.testing.assert_allclose(f.values["std_b"], CLIP[1], rtol=1e-4)
    assert any("B uses OpenAI CLIP's mean/std where A uses ImageNet" in c for c in f.values["causes"])
    assert "re-fold the conv" in f.hint


# -- mmproj GGUFs ---------------------------------------------------------------------------------------------

def test_mmproj_lists_every_vision_norm_with_its_clip_vision_eps():
    """Gemma3's projector: 5 SigLIP LayerNorms (with bias) and the projector's RMSNorm, every eps from
    clip.vision.attention.layer_norm_epsilon (config.json vision_config.layer_norm_eps = 3e-6)."""
    m = normaudit.load(A / "gemma3_vlm/gemma3-mmproj-f32.gguf")
    eps = float(np.float32(_hf_json("gemma3_vlm/hf/config.json")["vision_config"]["layer_norm_eps"]))
    by = m.by_id()
    assert sorted(by) == ["mm.soft_emb_norm", "v.blk.0.ln1", "v.blk.0.ln2", "v.blk.1.ln1", "v.blk.1.ln2", "v.post_ln"]
    for n in m.norms:
        assert n.eps == eps and n.eps_source.value == "gguf_metadata"
        assert n.eps_detail == "clip.vision.attention.layer_norm_epsilon"
    assert m.counts() == {"rms_norm": 1, "layer_norm": 5}
    assert by["mm.soft_emb_norm"].stored_one_plus and by["v.blk.0.ln1"].bias is not None
    assert m.metadata["block_count"] == 2 and m.metadata["projector_type"] == "gemma3"
    assert m.preprocess.mean == (0.5, 0.5, 0.5) and m.preprocess.sources["mean"] == "GGUF clip.vision.image_mean"
    result = runner.invoke(app, ["inspect", str(A / "gemma3_vlm/gemma3-mmproj-f32.gguf")])
    assert result.exit_code == 0 and "6 norm layers: 1 rms_norm, 5 layer_norm" in result.output
    assert " ? " not in result.output and "unknown" not in result.output
    assert "preprocess (outside): rescale 1/255, mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]" in result.output


def test_mmproj_aligns_to_the_hf_vision_tower(gemma3):
    """Every vision norm pairs with its HF module through gguf-py's MMPROJ tables (the hub checkpoint key
    vision_tower.vision_model.* is what maps); the language model's 7 norms are said to be in the text GGUF;
    the projector norm's stored 1 + w equals the HF scale."""
    b = normaudit.load(A / "gemma3_vlm/gemma3-mmproj-f32.gguf")
    r = normaudit.audit(gemma3, b)
    assert r.passed and not [f for f in r.findings if f.severity.value != "info"]
    assert len(r.pairs) == 6 and {p.aligned_by for p in r.pairs} == {"gguf_table"}
    pairs = {p.a: p for p in r.pairs}
    soft = pairs["model.multi_modal_projector.mm_soft_emb_norm"]
    assert soft.b == "mm.soft_emb_norm" and soft.convention == "1+w -> w (stored 1+w)" and soft.weight["rel_l2"] == 0
    assert pairs["model.vision_tower.encoder.layers.1.layer_norm2"].b == "v.blk.1.ln2"
    w_hf = gemma3.by_id()["model.multi_modal_projector.mm_soft_emb_norm"].weight.load()
    np.testing.assert_array_equal(b.by_id()["mm.soft_emb_norm"].weight.load(), w_hf + np.float32(1))
    f = _only(r, "not_in_file")
    assert len(f.values["layers"]) == 7 and all("language_model" in a for a, _ in f.values["layers"])
    assert not [f for f in r.findings if f.check == "architecture_mismatch"]


def test_activations_refuse_mmproj_in_one_line():
    result = runner.invoke(app, ["compare", str(A / "qwen2_vl/hf"), str(A / "qwen2_vl/qwen2vl-mmproj-f32.gguf"),
                                 "--activations", "--quiet"])
    assert result.exit_code == 2 and "does not run multimodal projector (mmproj) files" in result.output


def test_qwen2vl_mmproj_reads_clip_mean_std_and_aligns(qwen2vl):
    b = normaudit.load(A / "qwen2_vl/qwen2vl-mmproj-f32.gguf")
    cfg = _hf_json("qwen2_vl/hf/preprocessor_config.json")
    np.testing.assert_allclose(b.preprocess.mean, cfg["image_mean"], rtol=1e-7)  # stored as float32
    np.testing.assert_allclose(b.preprocess.std, cfg["image_std"], rtol=1e-7)
    assert [n.eps for n in b.norms] == [float(np.float32(1e-6))] * 7
    r = normaudit.audit(qwen2vl, b)
    assert r.passed and len(r.pairs) == 7
    assert {p.a: p.b for p in r.pairs}["model.visual.merger.ln_q"] == "v.post_ln"
    assert len(_only(r, "not_in_file").values["layers"]) == 3


def test_text_gguf_of_a_vlm_leaves_the_tower_to_the_mmproj(gemma3):
    """The same folder converted without --mmproj: the 7 language-model norms pair (stored 1 + w), the 6
    tower/projector norms are said to be in the mmproj, not missing."""
    r = normaudit.audit(gemma3, A / "gemma3_vlm/gemma3-text-f32.gguf")
    assert r.passed and len(r.pairs) == 7 and {p.aligned_by for p in r.pairs} == {"gguf_table"}
    f = _only(r, "not_in_file")
    assert f.severity.value == "info" and "mmproj" in f.message
    assert sorted(a for a, _ in f.values["layers"]) == sorted(
        n.id for n in gemma3.norms if "language_model" not in n.id)


def test_tower_norms_take_their_eps_key_from_the_tower_config(gemma3):
    """The vision tower's eps is vision_config.layer_norm_eps (3e-6), not text_config.rms_norm_eps (2e-6):
    no false "hard-codes" note, and the key model-wide eps findings group on."""
    by = gemma3.by_id()
    for name in ("model.vision_tower.post_layernorm", "model.multi_modal_projector.mm_soft_emb_norm"):
        assert by[name].eps_key == "vision_config.layer_norm_eps" and by[name].eps == float(np.float32(3e-6))
        assert not [n for n in by[name].notes if "hard-codes" in n]
    assert by["model.language_model.norm"].eps_key == "text_config.rms_norm_eps"


@pytest.mark.parametrize("kv, cause", [
    ({"clip.vision.image_mean": CLIP[1], "clip.vision.image_std": CLIP[0]}, "B's mean and std are swapped"),
    ({"clip.vision.image_std": CLIP[0]}, "B's std holds A's mean: the mean was written where the std belongs"),
    ({"clip.vision.image_mean": [CLIP[0][0]] * 3, "clip.vision.image_std": [CLIP[1][0]] * 3},
     "only the first channel was read"),
], ids=["swapped", "mean-as-std", "first-channel"])
def test_broken_mmproj_mean_std_is_caught(qwen2vl, tmp_path, kv, cause):
    bad = copy_gguf(A / "qwen2_vl/qwen2vl-mmproj-f32.gguf", tmp_path / "bad.gguf", kv=kv)
    r = normaudit.audit(qwen2vl, bad)
    [f] = _errors(r)
    assert f.check == "preprocess_mismatch" and any(cause in c for c in f.values["causes"]), f.message
    assert "clip.vision.image_mean / image_std" in f.hint


def test_clip_mean_std_instead_of_half_is_caught_with_its_overscale(gemma3, tmp_path):
    """apple/coreai-models#82: CLIP's mean/std where the model wants 0.5/0.5 scales inputs ~1.86x."""
    bad = copy_gguf(A / "gemma3_vlm/gemma3-mmproj-f32.gguf", tmp_path / "bad.gguf",
                    kv={"clip.vision.image_mean": CLIP[0], "clip.vision.image_std": CLIP[1]})
    r = normaudit.audit(gemma3, bad)
    [f] = _errors(r)
    assert "B uses OpenAI CLIP's mean/std where A uses 0.5/0.5" in f.message
    assert "x[1.861, 1.913, 1.813]" in f.message
    result = runner.invoke(app, ["compare", str(A / "gemma3_vlm/hf"), str(bad)])
    assert result.exit_code == 1


def test_mmproj_eps_key_wrong_or_absent(gemma3, tmp_path):
    """A wrong clip.vision eps is one model-wide finding naming the key; without the key llama.cpp uses 1e-6
    (clip-model.h), reported as the runtime's default."""
    src = A / "gemma3_vlm/gemma3-mmproj-f32.gguf"
    wrong = copy_gguf(src, tmp_path / "eps.gguf", kv={"clip.vision.attention.layer_norm_epsilon": 1e-5})
    r = normaudit.audit(gemma3, wrong)
    [f] = _errors(r)
    assert f.check == "eps_mismatch" and len(f.values["layers"]) == 6
    assert "clip.vision.attention.layer_norm_epsilon is 1e-05" in f.message
    none = normaudit.load(copy_gguf(src, tmp_path / "noeps.gguf", drop={"clip.vision.attention.layer_norm_epsilon"}))
    assert {(n.eps, n.eps_source.value) for n in none.norms} == {(float(np.float32(1e-6)), "runtime_default")}


def test_diagnosis_and_decoding_of_known_cases():
    """The pure parts: names of the known sets, the causes for each real bug, pixel-unit constants decoded to
    pixels / 255, and a fold recovered from a conv weight."""
    from normaudit import kernels
    from normaudit.checks.contracts import diagnose, known_set
    from normaudit.formats.onnx.contracts import decode_affine

    m, s = np.array(IMAGENET[0]), np.array(IMAGENET[1])
    assert known_set(m, s) == "ImageNet" and known_set(np.zeros(3), np.ones(3)) == "no normalization"
    assert diagnose(m, s, s, m) == ["B's mean and std are swapped"]
    assert any("1/255 of A's" in c for c in diagnose(m, s, m / 255, s / 255))
    # Caffe-style pixel-unit constants (x - 123.675) / 58.395 on raw pixels: the same contract as ImageNet's
    p = decode_affine(1 / (s * 255), -m / s, None, True, "graph")
    assert p.rescale == 1.0 and "pixel units" in p.notes[0]
    np.testing.assert_allclose(p.canonical()[0], m, rtol=1e-9)
    np.testing.assert_allclose(p.canonical()[1], s, rtol=1e-9)
    w = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    a, b = 1 / (255 * s), -m / s
    folded_w = w * a.reshape(1, 3, 1, 1)
    folded_b = (w * b.reshape(1, 3, 1, 1)).sum(axis=(1, 2, 3))
    got_a, got_b, err = kernels.recover_input_affine(w, None, folded_w, folded_b)
    np.testing.assert_allclose(got_a, a, rtol=1e-9)
    np.testing.assert_allclose(got_b, b, rtol=1e-9)
    assert err < 1e-12


# -- embedding models ------------------------------------------------------------------------------------------

def test_sentence_transformers_layout_is_read(st_bert):
    e = st_bert.embedding
    assert e.where == "sentence_transformers" and e.pooling == "mean" and e.normalize is True and e.dim == 32
    assert e.sources["pooling"] == "1_Pooling/config.json pooling_mode_mean_tokens"
    assert "Normalize" in e.sources["normalize"]


@pytest.mark.parametrize("name, pooling, normalize", [("st-bert-pooled.onnx", "mean", False),
                                                      ("st-bert-normalized.onnx", "mean", True),
                                                      ("st-bert-cls.onnx", "cls", True)])
def test_onnx_pooling_and_normalization_are_recognised(name, pooling, normalize):
    e = normaudit.load(A / "st_bert" / name).embedding
    assert (e.pooling, e.normalize, e.where, e.dim) == (pooling, normalize, "graph", 32)
    assert ("ReduceSum" in e.sources["pooling"]) == (pooling == "mean")
    assert normaudit.load(A / "st_bert/st-bert-tokens.onnx").embedding is None  # token states: says nothing


def test_onnx_without_normalize_is_caught_with_it_clean(st_bert):
    r = normaudit.audit(st_bert, A / "st_bert/st-bert-pooled.onnx")
    [f] = _errors(r)
    assert f.check == "embedding_normalization_missing" and f.values == {"normalize_a": True, "normalize_b": False}
    clean = normaudit.audit(st_bert, A / "st_bert/st-bert-normalized.onnx")
    assert clean.passed and clean.findings == []
    tokens = normaudit.audit(st_bert, A / "st_bert/st-bert-tokens.onnx")
    assert {(f.check, f.severity.value) for f in tokens.findings} == {
        ("embedding_normalization_missing", "error"), ("pooling_mismatch", "warning")}
    cls = normaudit.audit(st_bert, A / "st_bert/st-bert-cls.onnx")
    [f] = _errors(cls)
    assert f.check == "pooling_mismatch" and (f.values["pooling_a"], f.values["pooling_b"]) == ("mean", "cls")


def test_gguf_pooling_type_and_llama_cpp_normalization(tmp_path):
    """qwen2.pooling_type (3 = LAST, written by the converter from 1_Pooling) matches; GGUF has no
    normalization key: what llama.cpp and llama-cpp-python do is said (info).  A wrong or missing pooling
    type is an error."""
    src = A / "st_qwen2/st-qwen2-f32.gguf"
    g = normaudit.load(src)
    assert (g.embedding.pooling, g.embedding.normalize) == ("last", None)
    assert g.embedding.sources["pooling"] == "GGUF qwen2.pooling_type = 3"
    hf = normaudit.load(A / "st_qwen2/hf")
    r = normaudit.audit(hf, g)
    f = _only(r, "embedding_normalization_missing")
    assert r.passed and f.severity.value == "info" and "normalize=True" in f.hint
    mean = normaudit.audit(hf, copy_gguf(src, tmp_path / "mean.gguf", kv={"qwen2.pooling_type": 1}))
    [f] = _errors(mean)
    assert f.check == "pooling_mismatch" and "set qwen2.pooling_type = 3 (last)" in f.hint
    none = normaudit.audit(hf, copy_gguf(src, tmp_path / "none.gguf", drop={"qwen2.pooling_type"}))
    [f] = _errors(none)
    assert f.values["pooling_b"] == "none" and "pooling none" in f.message


def test_inspect_prints_the_contracts():
    result = runner.invoke(app, ["inspect", str(A / "st_qwen2/st-qwen2-f32.gguf"), "--no-stats"])
    assert result.exit_code == 0
    assert "embedding (gguf): pooling last, normalization left to the runtime, dim 32" in result.output
    assert "normalize=True" in result.output
    result = runner.invoke(app, ["inspect", str(A / "vit/vit-norm.onnx"), "--no-stats"])
    assert "preprocess (graph): rescale 1/255, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]" in result.output


def test_activations_report_output_vector_norms_and_pooled_cosine(st_bert):
    """Four seeded sequences: A's vectors (mean-pooled, normalized per modules.json) have norm 1; the export
    without Normalize gives the same directions (cosine 1) with other lengths; the full export matches."""
    r = normaudit.audit(st_bert, A / "st_bert/st-bert-pooled.onnx", activations=True)
    e = r.activations.embedding
    assert e["vectors"] == 4 and e["a"]["unit"] and not e["b"]["unit"]
    assert e["a"]["norm"]["min"] == pytest.approx(1, abs=1e-6) and e["b"]["norm"]["min"] > 2
    assert e["cosine"]["min"] > 0.99999 and "not L2-normalized" in e["verdict"]
    out = next(p for p in r.activations.points if p.kind == "output")
    assert out.note.startswith("compared as deployed") and out.metrics["rel_l2"] > 1
    # that length difference is one problem, reported once: the static error, and the drift at the output as info
    assert [(f.check, f.severity.value) for f in r.findings] == [("embedding_normalization_missing", "error"),
                                                                 ("activation_drift", "info")]
    [an] = r.activations.anomalies
    assert an["kind"] == "length" and an["point"] == "output" and "differs in length only" in an["message"]
    assert r.b.architecture == "BertModel"  # not the exporter's hook name on the nodes it inserts
    good = normaudit.audit(st_bert, A / "st_bert/st-bert-normalized.onnx", activations=True)
    assert good.passed and good.activations.embedding["b"]["unit"]
    assert good.activations.embedding["verdict"] == "B's vectors match A's (direction and length)"


# -- documents, hostile files ----------------------------------------------------------------------------------

def test_contracts_in_the_json_documents_validate(st_bert, vit):
    pytest.importorskip("jsonschema")
    from normaudit.report import inspect_document, schemas

    for m in (vit, normaudit.load(A / "qwen2_vl/qwen2vl-mmproj-f32.gguf"), st_bert,
              normaudit.load(A / "st_qwen2/st-qwen2-f32.gguf"), normaudit.load(A / "vit/vit-plain.onnx")):
        doc = inspect_document(m, files=False)
        schemas.validate(doc)
        assert "preprocess" in doc or "embedding" in doc
    doc = normaudit.audit(st_bert, A / "st_bert/st-bert-pooled.onnx", activations=True).to_dict(files=False)
    schemas.validate(doc)
    assert doc["a"]["embedding"]["pooling"] == "mean" and doc["activations"]["embedding"]["vectors"] == 4


def test_modules_json_pointing_outside_the_folder_is_one_error_line(tmp_path):
    import shutil

    d = tmp_path / "st"
    shutil.copytree(A / "st_bert/hf", d)
    mods = json.loads((d / "modules.json").read_text())
    mods[1]["path"] = "../../etc"
    (d / "modules.json").write_text(json.dumps(mods))
    result = runner.invoke(app, ["inspect", str(d)])
    assert result.exit_code == 2 and "points outside the model folder" in result.output
    (d / "modules.json").write_text("[not json")
    result = runner.invoke(app, ["inspect", str(d)])
    assert result.exit_code == 2 and "modules.json: unreadable JSON" in result.output
