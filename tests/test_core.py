"""The torch-free core: static inspect/compare never import torch, onnxruntime or transformers, and a missing
extra is one line naming it.  CI also runs these (`pytest -m core`) in a venv with only the core installed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import CORPUS, HEAVY, ROOT, TM, probe

pytestmark = pytest.mark.core

def test_core_only_venv_has_no_extras():
    """In CI's core-only venv (NORMAUDIT_CORE_ONLY=1) the extras really are absent: what the other core tests
    prove is then proved without them."""
    if not os.environ.get("NORMAUDIT_CORE_ONLY"):
        pytest.skip("only in the core-only venv (NORMAUDIT_CORE_ONLY=1)")
    assert [m for m in HEAVY if importlib.util.find_spec(m) is not None] == []


STATIC = [  # every torch-free format, static inspect and compare, through the library
    [str(TM / "llama/hf"), str(TM / "llama/llama-q4_0.gguf")],
    [str(TM / "real/hf/qwen3"), str(TM / "real/gguf/qwen3-Q4_K_M.gguf")],
    [str(TM / "gemma3/hf/model.safetensors"), str(TM / "gemma3/gemma3-q8_0.gguf")],
    [str(TM / "bert/hf"), str(TM / "bert/bert-legacy-opset14.onnx")],
    [str(TM / "qwen3/qwen3.pt2"), str(TM / "qwen3/qwen3-dynamo-opset23.onnx")],
    [str(TM / "cnn/cnn.pt2"), str(TM / "cnn/cnn-dynamo-opset18.onnx")],
    [str(TM / "llama/llama-f32.gguf"), None],
]


def test_static_paths_import_no_extras():
    out, err = probe("api", STATIC)
    assert [m for m in HEAVY if m in out["loaded"]] == [], err


def test_gguf_vs_safetensors_compare_imports_only_what_it_needs():
    """The CLI compare of an HF folder and a GGUF: no torch/onnxruntime/transformers, and not even onnx."""
    out, err = probe("cli", ["compare", str(TM / "real/hf/qwen3"), str(TM / "real/gguf/qwen3-Q4_K_M.gguf")])
    assert out["code"] == 0, err
    assert [m for m in HEAVY + ("onnx",) if m in out["loaded"]] == []
    import typer

    if tuple(int(x) for x in typer.__version__.split(".")[:2]) < (0, 28):  # the range pyproject.toml declares
        assert "pydantic" not in out["loaded"]
    assert {"numpy", "gguf", "safetensors", "typer", "rich"} <= set(out["loaded"])


@pytest.mark.parametrize("args, extra, what", [
    (["inspect", "testmodels/cnn/cnn.pt"], "torch", "testmodels/cnn/cnn.pt: reading a torch.save'd file needs torch"),
    (["inspect", "testmodels/cnn/cnn-torchscript.pt"], "torch", "needs torch"),
    (["compare", "testmodels/llama/hf", "testmodels/llama/llama.pt"], "torch", "llama.pt: reading a torch.save'd"),
    (["compare", "testmodels/real/hf/qwen3", "testmodels/real/gguf/qwen3-f32.gguf", "--activations"], "activations",
     "testmodels/real/hf/qwen3: running a Hugging Face model needs torch"),
    (["compare", "testmodels/cnn/cnn.pt2", "testmodels/cnn/cnn-dynamo-opset18.onnx", "--activations"], "activations",
     "cnn.pt2: running a torch.export program needs torch"),
], ids=["state_dict", "torchscript", "compare_state_dict", "activations_hf", "activations_pt2"])
def test_missing_extra_is_one_line_naming_it(args, extra, what):
    out, err = probe("cli", args, hide=HEAVY)
    assert out["code"] == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("normaudit: error: ") and what in lines[0], lines[0]
    assert lines[0].endswith(f"(hint: pip install 'normaudit[{extra}]')")
    assert [m for m in HEAVY if m in out["loaded"]] == []


def test_onnx_activations_without_onnxruntime_names_the_extra():
    out, err = probe("cli", ["compare", "testmodels/bert/bert-legacy-opset14.onnx",
                             "testmodels/bert/bert-dynamo-opset18.onnx", "--activations"], hide=HEAVY)
    assert out["code"] == 2
    assert err.strip() == ("normaudit: error: testmodels/bert/bert-legacy-opset14.onnx: running an ONNX model needs "
                           "onnxruntime, which is not installed (hint: pip install 'normaudit[activations]')")


def test_version_has_one_source():
    out = subprocess.run([sys.executable, "-m", "normaudit", "--version"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    import normaudit

    assert out.stdout.strip() == f"normaudit {normaudit.__version__}"
    try:
        installed = importlib.metadata.version("normaudit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("normaudit is not installed (running from a checkout)")
    assert installed == normaudit.__version__


def test_packaging_files():
    assert (ROOT / "normaudit/py.typed").is_file()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_corpus_static_files_without_extras():
    """Every GGUF, ONNX, HF folder and .pt2 of the shared corpus (when present) loads with torch & co hidden."""
    if not CORPUS.is_dir():
        pytest.skip("shared corpus not present")
    files = [str(p) for p in sorted((CORPUS / "hf").iterdir()) if p.is_dir()]
    files += [str(p) for ext in ("gguf/*.gguf", "onnx/*.onnx", "onnx/*.pt2") for p in sorted(CORPUS.glob(ext))]
    out, err = probe("api", [[f, None] for f in files], hide=HEAVY)
    assert out["code"] is None and "Traceback" not in err, err


def _read_bytes() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("read_bytes"))


def test_gguf_header_walk_reads_no_readahead_window(tmp_path):
    """Cold, the header walk reads its 1 MiB buffer and nothing around it (POSIX_FADV_RANDOM); a plain read
    of the same MiB pulls the kernel's readahead window too (the control: skipped where there is none)."""
    from normaudit.formats.gguf.reader import GgufFile

    if not os.path.exists("/proc/self/io") or not hasattr(os, "posix_fadvise"):
        pytest.skip("needs Linux I/O accounting")
    path = tmp_path / "big.gguf"
    path.write_bytes((TM / "llama/llama-f32.gguf").read_bytes() + os.urandom(24 << 20))

    def cold(fn) -> int:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        before = _read_bytes()
        fn()
        return _read_bytes() - before

    def plain() -> None:
        with open(path, "rb") as fh:
            fh.read(1 << 20)

    control = cold(plain)
    if control < (3 << 19):
        pytest.skip(f"no readahead to avoid here (a cold 1 MiB read read {control} bytes)")
    walked = cold(lambda: GgufFile(path))
    assert walked <= (1 << 20) + (64 << 10), (walked, control)


# -- the name fallback (no transformers: a core install) on families beyond the five --------------------------

@pytest.fixture
def by_names(monkeypatch):
    """HF folders read by tensor names, as in a core-only install (the architecture is never built)."""
    monkeypatch.setenv("NORMAUDIT_ARCHITECTURE", "0")


def _checks(report):
    return sorted((f.check, f.severity.value) for f in report.findings)


def test_names_fallback_aligns_renamed_modules_by_block_index_and_leaf(by_names):
    """transformers 5's ViT: checkpoint keys ``encoder.layer.N.layernorm_before``, modules (and so the ONNX export)
    ``layers.N.layernorm_before``; sorted by name, ``layernorm_after`` would come first and pair with B's
    ``layernorm_before``."""
    import normaudit

    for onnx in ("vit-plain.onnx", "vit-norm.onnx", "vit-folded.onnx"):
        r = normaudit.audit(TM / "around/vit/hf", TM / "around/vit" / onnx)
        assert r.passed, (onnx, _checks(r))
        pairs = {p.a: (p.b, p.aligned_by) for p in r.pairs}
        assert len(pairs) == 5
        for i in (0, 1):
            for leaf in ("layernorm_before", "layernorm_after"):
                b, how = pairs[f"vit.encoder.layer.{i}.{leaf}"]
                assert b.endswith(f"layers.{i}.{leaf}") and how == "index_leaf", (onnx, b, how)
        assert all(p.weight is not None and p.weight["rel_l2"] == 0 for p in r.pairs)


def test_names_fallback_vlm_towers(by_names):
    """A VLM read by names: the language model's norms are another file's (qwen2_vl's checkpoint model_type is
    qwen2_vl, its text config qwen2_vl_text), and a Gemma 3 VLM's SigLIP tower is plain x*w while its projector
    norm is Gemma's x*(1+w)."""
    import normaudit

    r = normaudit.audit(TM / "around/qwen2_vl/hf", TM / "around/qwen2_vl/qwen2vl-mmproj-f32.gguf")
    assert r.passed and len(r.pairs) == 7, _checks(r)
    away = [f for f in r.findings if f.check == "not_in_file"]
    assert len(away) == 1 and len(away[0].values["layers"]) == 3

    r = normaudit.audit(TM / "around/gemma3_vlm/hf", TM / "around/gemma3_vlm/gemma3-mmproj-f32.gguf")
    assert r.passed and "convention_mismatch" not in {c for c, _ in _checks(r)}, _checks(r)
    conv = {p.a: p.convention for p in r.pairs}
    assert len(conv) == 6
    assert conv["multi_modal_projector.mm_soft_emb_norm"].startswith("1+w")
    assert all(c.startswith("w") for a, c in conv.items() if "vision_tower" in a)


def test_names_fallback_guesses_are_warnings(by_names):
    """Outside the families the tables list, kind and eps read by names are guesses (wav2vec2's feature-extractor
    'layer_norm' is a GroupNorm with the default eps): a mismatch on a guess is a warning that says so and how to
    read the module instead; on a listed family (qwen3) an eps rewrite is still an error."""
    import normaudit

    r = normaudit.audit(TM / "wide/wav2vec2/hf", TM / "wide/wav2vec2/wav2vec2-dynamo-opset18.onnx")
    assert r.passed
    assert _checks(r) == [("eps_mismatch", "warning"), ("norm_type_mismatch", "warning")]
    assert all("guess from tensor names" in f.message and "normaudit[activations]" in f.hint for f in r.findings)
    inspected = normaudit.inspect(TM / "wide/wav2vec2/hf")
    assert inspected.to_dict()["norms"][0]["guessed"] == ["kind", "eps"]
    assert normaudit.inspect(TM / "real/hf/qwen3").norms[0].guessed == ()


def test_names_fallback_eps_fault_on_a_listed_family_is_an_error(by_names, tmp_path):
    import normaudit
    from breakers import copy_gguf

    bad = copy_gguf(TM / "real/gguf/qwen3-Q4_K_M.gguf", tmp_path / "bad.gguf",
                    kv={"qwen3.attention.layer_norm_rms_epsilon": 1e-5})
    r = normaudit.audit(TM / "real/hf/qwen3", bad)
    assert not r.passed
    assert [(f.check, f.severity.value) for f in r.failing()] == [("eps_mismatch", "error")]
