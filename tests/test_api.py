"""The library is the product: `normaudit.audit()` returns the document the CLI writes, and the extension
points (formats, checks) take one module and one registration line."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import normaudit
from breakers import gguf_eps
from normaudit.cli import app
from normaudit.formats import registry
from normaudit.report import strip_volatile

runner = CliRunner()


@pytest.mark.parametrize("a, b", [("hf/qwen3", "gguf/qwen3-Q4_K_M.gguf"), ("onnx/cnn.pt2", "onnx/cnn-legacy-opset13.onnx"),
                                  ("hf/bert", "onnx/bert-legacy-opset14.onnx")])
def test_audit_document_equals_cli_json(real, a, b):
    doc = normaudit.audit(real / a, real / b).to_dict()
    res = runner.invoke(app, ["compare", str(real / a), str(real / b), "--json", "-"])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)
    # built by the same code; only the creation time (volatile) may differ between the two runs
    assert strip_volatile(json.loads(json.dumps(doc, default=float))) == strip_volatile(cli)
    assert doc["normaudit_version"] == cli["normaudit_version"] == normaudit.__version__
    assert doc["schema"] == "normaudit.compare/1" and doc["passed"] is True and "thresholds" in doc


def test_audit_document_equals_cli_json_with_findings_and_activations(real, tmp_path):
    bad = gguf_eps(real / "gguf/qwen3-f32.gguf", tmp_path / "bad.gguf", 1e-5)
    report = normaudit.audit(real / "hf/qwen3", bad, activations=True)
    # the static finding, then what the activations cannot explain: every norm, re-run with B's eps, adds error
    checks = [f.check for f in report.findings]
    assert not report.passed and checks[0] == "eps_mismatch" and set(checks[1:]) == {"activation_drift"}
    kinds = [f.values["kind"] for f in report.findings[1:]]
    assert kinds.count("norm") >= 5 and set(kinds) <= {"norm", "block"}
    assert [f.check for f in report.static.findings] == ["eps_mismatch"]
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(bad), "--activations", "--json", "-"])
    assert res.exit_code == 1
    cli = json.loads(res.stdout)
    from normaudit.report.jsonout import dumps

    assert strip_volatile(json.loads(dumps(report.to_dict()))) == strip_volatile(cli)
    assert cli["activations"]["points"] and cli["findings"][0]["a"] is None


def test_audit_loads_each_model_once_and_options_reach_activations(real, tm, monkeypatch):
    calls = []
    real_load = registry.load

    def counting(path, *args, **kw):
        calls.append(Path(path).name)
        return real_load(path, *args, **kw)

    monkeypatch.setattr("normaudit.api.load", counting)
    monkeypatch.setattr("normaudit.formats.registry.load", counting)
    cfg = tm / "llama/hf/config.json"
    r = normaudit.audit(tm / "llama/hf", tm / "llama/llama.pt2", activations=True, config_a=cfg)
    assert calls == ["hf", "llama.pt2"], calls  # each model once, activations included
    assert r.activations is not None and r.activations.first_divergence is None


class NpzFormat:
    """A toy format: an .npz of norm tensors named <layer>.weight, eps in an array named <layer>.eps."""

    name = "npz"
    family = "npz"
    description = "npz of norm tensors (test format)"

    def sniff(self, probe):
        return probe.head[:2] == b"PK" and probe.path.suffix == ".npz"

    def load(self, path, options):
        from normaudit.model import EpsSource, NormKind, NormLayer, NormModel, const_tensor

        data = dict(np.load(path))
        norms = [NormLayer(id=k[:-len(".weight")], kind=NormKind.RMS_NORM, eps=float(data[k[:-len(".weight")] + ".eps"]),
                           eps_source=EpsSource.UNKNOWN, eps_detail=f"{path.name}:{k}.eps",
                           weight=const_tensor(k, data[k])) for k in data if k.endswith(".weight")]
        return NormModel(path=str(path), format="npz", architecture=None, norms=norms, container="npz")

    def runner(self, path, model, ctx):
        raise normaudit.NormauditError("npz files do not run")


def test_a_toy_format_is_one_class_and_one_registry_line(real, tmp_path):
    src = normaudit.load(real / "hf/qwen3")
    arrays = {}
    for n in src.norms:
        arrays[n.id + ".weight"] = n.weight.load()
        arrays[n.id + ".eps"] = np.float32(n.eps)
    arrays["model.layers.1.input_layernorm.weight"] = arrays["model.layers.1.input_layernorm.weight"] * 1.5
    path = tmp_path / "norms.npz"
    np.savez(path, **arrays)
    registry.register(NpzFormat())
    try:
        assert normaudit.detect(path) == "npz"
        res = runner.invoke(app, ["inspect", str(path), "--json", "-"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["counts"] == {"rms_norm": 9}
        res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(path), "--json", "-"])
        doc = json.loads(res.stdout)
        assert res.exit_code == 1
        assert [(f["check"], f["a"]) for f in doc["findings"]] == [("weight_mismatch",
                                                                    "model.layers.1.input_layernorm")]
        assert len(doc["pairs"]) == 9 and {p["aligned_by"] for p in doc["pairs"]} == {"name"}
    finally:
        registry.unregister("npz")
    assert "npz" not in normaudit.FORMATS


def test_a_check_is_one_decorated_function(real):
    from normaudit.checks import REGISTRY, Severity, check

    @check("toy_small_eps", Severity.WARNING, scope="pair", description="eps below 1e-6 (test check)", group_min=2)
    def small_eps(ctx, pair):
        if pair.b.eps is not None and pair.b.eps < 1e-6:
            ctx.finding("toy_small_eps", pair.a.id, pair.b.id, f"eps {pair.b.eps:g}", group="eps")

    try:
        r = normaudit.audit(real / "hf/bert", real / "onnx/bert-legacy-opset14.onnx")
        (f,) = [f for f in r.findings if f.check == "toy_small_eps"]
        assert f.a is None and len(f.values["layers"]) == 5 and "model-wide (5 layers" in f.message
        out = runner.invoke(app, ["checks"]).output
        assert "toy_small_eps" in out and "warning" in out
    finally:
        REGISTRY.pop("toy_small_eps")


def test_checks_lists_severity_and_scope():
    out = runner.invoke(app, ["checks"]).output.splitlines()
    row = next(line for line in out if line.startswith("fold_mismatch"))
    assert row.split()[1:3] == ["error", "fold"]
    assert len(out) == 19  # the 16 static checks, activation_drift, tokenizer_mismatch / tokenizer_special_tokens


def test_internal_error_is_named_as_such(real, monkeypatch):
    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("normaudit.checks.pair.weight_metrics", boom)
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(real / "gguf/qwen3-f32.gguf")])
    assert res.exit_code == 2 and "internal error: ZeroDivisionError: a bug" in res.output
    assert "NORMAUDIT_DEBUG=1" in res.output and len(res.output.strip().splitlines()) == 1
    monkeypatch.setenv("NORMAUDIT_DEBUG", "1")
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(real / "gguf/qwen3-f32.gguf")])
    assert isinstance(res.exception, ZeroDivisionError)
