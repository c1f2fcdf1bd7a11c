"""Untrusted input: no pickle code runs without --trust-pickle; bad files give one line and exit 2."""

import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import normaudit
from normaudit.cli import app

torch = pytest.importorskip("torch")  # these files are torch.save'd: without torch they are refused (test_core.py)

runner = CliRunner()


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pt(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"layer.norm.weight": torch.ones(4), "payload": _Evil(str(marker))}, path)
    assert not marker.exists()
    return path, marker


def test_malicious_pickle_is_refused_and_code_does_not_run(tmp_path):
    path, marker = _evil_pt(tmp_path)
    with pytest.raises(normaudit.UntrustedPickle) as err:
        normaudit.load(path)
    assert "--trust-pickle" in err.value.hint
    assert not marker.exists()
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2
    assert not marker.exists()
    assert "refused to unpickle" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_legacy_non_zip_pickle_is_refused_too(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    with open(path, "wb") as fh:
        pickle.dump({"payload": _Evil(str(marker))}, fh, protocol=2)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and not marker.exists()


def test_trusted_pickled_module_loads_with_flag(tmp_path, tm):
    import sys

    sys.path.insert(0, str(tm.parent))
    from testmodels.generate import CNN

    model = CNN().eval()
    path = tmp_path / "module.pt"
    torch.save(model, path)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and "--trust-pickle" in result.output
    m = normaudit.load(path, trust_pickle=True)
    assert m.container == "module"
    by = m.by_id()
    assert by["bn2"].eps == pytest.approx(1e-3) and by["bn2"].eps_source.value == "module_attribute"
    assert by["gn"].num_groups == 4
    result = runner.invoke(app, ["inspect", str(path), "--trust-pickle", "--no-stats"])
    assert result.exit_code == 0, result.output


def _gguf_header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


BAD_FILES = {
    "empty.gguf": b"",
    "truncated.gguf": None,  # filled from a real file below
    "huge-counts.gguf": _gguf_header(2**60, 2**60) + b"\0" * 64,
    "version.gguf": b"GGUF" + struct.pack("<IQQ", 99, 0, 0),
    "garbage.onnx": b"\x08\x07" + os.urandom(64),
    "text.onnx": b"this is not a model at all\n" * 10,
    "hostile-header.safetensors": struct.pack("<Q", 2**62) + b"{}",
    "random.bin": os.urandom(256),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_one_line_exit_2(tmp_path, real, name):
    path = tmp_path / name
    data = BAD_FILES[name]
    if data is None:
        data = (real / "gguf/qwen3-f32.gguf").read_bytes()[:5000]
    path.write_bytes(data)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("normaudit: error:"), result.output
    assert "Traceback" not in result.output


def test_truncated_onnx_and_pt2(tmp_path, real):
    for src, cut in (("onnx/bert-dynamo-opset18.onnx", 50_000), ("onnx/cnn.pt2", 20_000), ("onnx/cnn.pt", 4000)):
        path = tmp_path / Path(src).name
        path.write_bytes((real / src).read_bytes()[:cut])
        result = runner.invoke(app, ["inspect", str(path)])
        assert result.exit_code == 2, (src, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_zip_that_is_not_a_model(tmp_path):
    path = tmp_path / "x.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and "zip archive" in result.output


def test_missing_file_and_empty_dir(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope.gguf")])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 2 and "no model.safetensors" in result.output


def test_model_without_norms(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "linear.safetensors"
    save_file({"fc.weight": torch.ones(4, 4), "fc.bias": torch.zeros(4)}, str(path))
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and "no normalization layers" in result.output


def test_onnx_external_data_outside_folder_is_refused(tmp_path, real):
    import onnx

    m = onnx.load(str(real / "onnx/bert-dynamo-opset18.onnx"))
    for t in m.graph.initializer:
        if t.name == "m.embeddings.LayerNorm.weight":
            t.ClearField("float_data")
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            e = t.external_data.add()
            e.key, e.value = "location", "../../../../etc/passwd"
    path = tmp_path / "ext.onnx"
    onnx.save(m, str(path))
    assert runner.invoke(app, ["inspect", str(path), "--no-stats"]).exit_code == 0  # listing reads no tensor
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and "outside the model folder" in result.output


def test_onnx_identity_cycle_does_not_hang(tmp_path):
    """A hostile graph whose Identity nodes feed each other: bounded walks, no hang."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Identity", ["b"], ["a"], name="i1"), helper.make_node("Identity", ["a"], ["b"], name="i2"),
             helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="rm"),
             helper.make_node("Add", ["m", "a"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
                              [numpy_helper.from_array(np.array([-1], np.int64), "axes")])
    path = tmp_path / "cycle.onnx"
    onnx.save(helper.make_model(graph), str(path))
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and "no normalization layers" in result.output


def _rewrite_zip(src: Path, dst: Path, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = edit(item.filename, zin.read(item.filename))
            zout.writestr(item, data)


def test_pt2_with_pickled_weight_is_refused(tmp_path, real):
    import io
    import json as _json

    marker = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save(_Evil(str(marker)), payload)

    def edit(name, data):
        if name.endswith("model_weights_config.json"):
            cfg = _json.loads(data)
            cfg["config"]["bn1.weight"]["use_pickle"] = True
            return _json.dumps(cfg).encode()
        if name.endswith("data/weights/weight_2"):  # bn1.weight's payload
            return payload.getvalue()
        return data

    bad = tmp_path / "evil.pt2"
    _rewrite_zip(real / "onnx/cnn.pt2", bad, edit)
    result = runner.invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 2 and "bn1.weight is stored as a pickle" in result.output
    assert "--trust-pickle" in result.output and not marker.exists()
    # the payload is real: with the flag, torch.export.load unpickles it and the code runs
    with pytest.raises(normaudit.NormauditError):
        normaudit.load(bad, trust_pickle=True)
    assert marker.exists()


def test_pt2_with_unsafe_sample_inputs_is_refused(tmp_path, real):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(str(marker)))
    bad = tmp_path / "evil.pt2"
    _rewrite_zip(real / "onnx/cnn.pt2", bad,
                 lambda name, data: payload if "/data/sample_inputs/" in name else data)
    result = runner.invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 2 and "sample_inputs" in result.output and not marker.exists()
    assert normaudit.load(real / "onnx/cnn.pt2").counts() == {"batch_norm": 2, "group_norm": 1}  # clean one loads
