"""Every file of the shared corpus (beside the repo in CI; absent on users' machines -> skipped)."""

import numpy as np
import pytest

import normaudit
from conftest import CORPUS

EXPECT = {"llama": (5, "rms_norm", 1e-6), "qwen3": (9, "rms_norm", 1e-6), "gemma3": (13, "rms_norm", 1e-6),
          "bert": (5, "layer_norm", 1e-12)}


def _files():
    if not CORPUS.is_dir():
        return []
    out = [p for p in sorted((CORPUS / "hf").iterdir()) if p.is_dir()]
    out += sorted((CORPUS / "gguf").glob("*.gguf")) + sorted((CORPUS / "onnx").glob("*.onnx"))
    return out + [CORPUS / "onnx/cnn.pt2", CORPUS / "onnx/cnn.pt"]


@pytest.mark.core
@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")
@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_corpus_file(path):
    if path.suffix == ".pt":
        pytest.importorskip("torch")
    m = normaudit.load(path)
    model = path.name.split("-")[0].split(".")[0]
    if model == "cnn":
        if path.suffix == ".onnx":
            assert m.counts() == {"group_norm": 1}
        else:
            assert m.counts() == {"batch_norm": 2, "group_norm": 1}
            if path.suffix == ".pt2":
                assert sorted(n.eps for n in m.norms) == sorted(float(np.float32(e)) for e in (1e-5, 1e-3, 1e-5))
        return
    count, kind, eps = EXPECT[model]
    assert len(m.norms) == count
    assert m.counts() == {kind: count}
    assert {n.eps for n in m.norms} == {float(np.float32(eps))}


def _clean_pairs():
    if not CORPUS.is_dir():
        return []
    pairs = []
    for model in ("llama", "qwen3", "gemma3"):
        for g in sorted((CORPUS / "gguf").glob(f"{model}-*.gguf")):
            pairs.append((f"hf/{model}", f"gguf/{g.name}"))
        for o in sorted((CORPUS / "onnx").glob(f"{model}-*.onnx")):
            pairs.append((f"hf/{model}", f"onnx/{o.name}"))
            pairs.append((f"onnx/{o.name}", f"gguf/{model}-Q4_K_M.gguf"))
        pairs.append((f"gguf/{model}-f32.gguf", f"gguf/{model}-Q4_K_M.gguf"))
    for o in sorted((CORPUS / "onnx").glob("bert-*.onnx")):
        pairs.append(("hf/bert", f"onnx/{o.name}"))
    for o in sorted((CORPUS / "onnx").glob("cnn-*.onnx")):
        pairs.append(("onnx/cnn.pt2", f"onnx/{o.name}"))
    return pairs


@pytest.mark.core
@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")
@pytest.mark.parametrize("a, b", _clean_pairs(), ids=lambda p: p.split("/")[-1])
def test_corpus_clean_pair_passes(a, b):
    from normaudit.checks import compare

    ma, mb = normaudit.load(CORPUS / a), normaudit.load(CORPUS / b)
    r = compare(ma, mb)
    assert r.passed and not r.findings, [f.to_dict() for f in r.findings]
    assert len(r.pairs) == len(ma.norms)


ACT_PAIRS = [(f"hf/{m}", f"gguf/{m}-f32.gguf", 1e-5) for m in ("llama", "qwen3", "gemma3")]
ACT_PAIRS += [(f"hf/{m}", f"onnx/{m}-dynamo-opset{o}.onnx", 1e-4) for m in ("llama", "qwen3", "gemma3")
              for o in (18, 23)]
ACT_PAIRS += [("hf/bert", f"onnx/bert-{x}.onnx", 1e-4) for x in ("dynamo-opset18", "legacy-opset14", "legacy-opset17")]
ACT_PAIRS += [("onnx/cnn.pt2", f"onnx/cnn-{x}.onnx", 1e-4) for x in ("dynamo-opset18", "dynamo-opset21",
                                                                     "legacy-opset13")]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")
@pytest.mark.parametrize("a, b, tol", ACT_PAIRS, ids=lambda p: str(p).split("/")[-1])
def test_corpus_activations_match(a, b, tol):
    from normaudit.activations import diff_activations

    r = diff_activations(CORPUS / a, CORPUS / b)
    assert r.first_divergence is None
    worst = max(p.metrics["rel_l2"] for p in r.points)
    assert worst < tol, [(p.a, p.metrics["rel_l2"]) for p in r.points]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")
@pytest.mark.parametrize("model", ["llama", "qwen3", "gemma3"])
@pytest.mark.parametrize("qtype", ["q8_0", "Q4_K_M"])
def test_corpus_quantized_drift_grows_with_depth(model, qtype):
    from normaudit.activations import diff_activations

    r = diff_activations(CORPUS / f"hf/{model}", CORPUS / f"gguf/{model}-{qtype}.gguf")
    blocks = [p.metrics["rel_l2"] for p in r.points if p.kind == "block"]
    out = next(p for p in r.points if p.kind == "output").metrics["rel_l2"]
    assert blocks[-1] > blocks[0] > 0 and out > blocks[0]
