import json

import numpy as np
import pytest
from typer.testing import CliRunner

from normaudit.cli import app

runner = CliRunner()


def test_inspect_table(tm):
    result = runner.invoke(app, ["inspect", str(tm / "qwen3/qwen3-q8_0.gguf")])
    assert result.exit_code == 0, result.output
    assert "blk.1.attn_q_norm" in result.output
    assert "gguf_metadata" in result.output and "1e-06" in result.output
    assert "9 norm layers: 9 rms_norm" in result.output


def test_inspect_json_stdout_schema(tm):
    result = runner.invoke(app, ["inspect", str(tm / "bert/bert-legacy-opset14.onnx"), "--json", "-"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["schema"] == "normaudit.inspect/1"
    assert doc["format"] == "onnx" and doc["counts"] == {"layer_norm": 5}
    first = doc["norms"][0]
    assert set(first) >= {"id", "kind", "eps", "eps_source", "shape", "dtype", "tensors", "weight_stats"}
    assert first["id"] == "m.embeddings.LayerNorm"
    assert first["eps"] == pytest.approx(1e-12) and first["eps_source"] == "onnx_constant"
    assert first["tensors"][0] == {"name": "m.embeddings.LayerNorm.weight", "shape": [32], "dtype": "F32"}


def test_inspect_json_file_and_table(tmp_path, tm):
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["inspect", str(tm / "cnn/cnn.pt2"), "--json", str(out)])
    assert result.exit_code == 0 and "batch_norm" in result.output
    doc = json.loads(out.read_text())
    eps = {n["id"]: n["eps"] for n in doc["norms"]}
    assert eps["bn2"] == pytest.approx(1e-3) and eps["bn1"] == pytest.approx(1e-5)
    assert np.isclose(doc["norms"][2]["weight_stats"]["mean"], 1.0, atol=0.1)


def test_format_override(tm):
    ok = runner.invoke(app, ["inspect", str(tm / "llama/llama-f32.gguf"), "--format", "gguf", "--no-stats"])
    assert ok.exit_code == 0
    bad = runner.invoke(app, ["inspect", str(tm / "llama/llama-f32.gguf"), "--format", "onnx"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    unknown = runner.invoke(app, ["inspect", str(tm / "llama/llama-f32.gguf"), "--format", "tflite"])
    assert unknown.exit_code == 2 and "unknown --format" in unknown.output


def test_config_option(tm):
    result = runner.invoke(app, ["inspect", str(tm / "llama/llama.pt"), "--config", str(tm / "llama/hf/config.json"),
                                 "--json", "-", "--no-stats"])
    doc = json.loads(result.stdout)
    assert {n["eps_source"] for n in doc["norms"]} == {"module_attribute"}  # the architecture built from --config (issue #9)
    assert doc["architecture"] == "LlamaForCausalLM"


def test_version_and_usage_errors():
    assert runner.invoke(app, ["--version"]).output.startswith("normaudit ")
    assert runner.invoke(app, ["inspect"]).exit_code == 2
    assert runner.invoke(app, ["inspect", "--bogus", "x"]).exit_code == 2


def test_python_dash_m(tm):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "normaudit", "inspect", str(tm / "gemma3/gemma3-q4_0.gguf"),
                           "--json", "-", "--no-stats"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"] == {"rms_norm": 13}
