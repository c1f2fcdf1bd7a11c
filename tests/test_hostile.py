"""Regression tests for hostile files (issue #7): each case found by attacking normaudit gives exit 2 with one
clear line (or loads correctly when the file is in fact valid) — no code run, no outside read, no hang, no
crash, no memory blow-up."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import normaudit
from breakers import copy_gguf, onnx_edit
from normaudit.cli import app

runner = CliRunner()


def one_line_error(args: list[str], *needles: str) -> str:
    res = runner.invoke(app, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("normaudit: error:"), res.output
    assert "internal error" not in res.output and "Traceback" not in res.output
    for n in needles:
        assert n in res.output, res.output
    return res.output


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """A real process: hangs and crashes show as timeouts / signals, not as a stuck test."""
    return subprocess.run([sys.executable, "-m", "normaudit", *args], capture_output=True, text=True, timeout=timeout)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _rewrite_zip(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = edit(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item, data)
        extra = edit(None, None)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst


# -- code execution through .pt2 archives -------------------------------------------------------------------

def _second_program(real: Path, tmp_path: Path, constant: bool) -> tuple[Path, Path]:
    """cnn.pt2 plus a program named 'other' whose weight (or constant) is a pickle with a payload."""
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    import torch

    torch.save(_Evil(str(marker)), buf)

    def edit(name, data):
        if name is None:
            cfg = {"config": {"evil": {"path_name": "opaque_obj_0" if constant else "weight_99", "is_param": False,
                                       "use_pickle": not constant}}}
            member = "cnn/data/constants/opaque_obj_0" if constant else "cnn/data/weights/weight_99"
            kind = "constants/other_constants" if constant else "weights/other_weights"
            return {"cnn/models/other.json": zin_model, f"cnn/data/{kind}_config.json": json.dumps(cfg),
                    member: buf.getvalue()}
        return data

    with zipfile.ZipFile(real / "onnx/cnn.pt2") as z:
        zin_model = z.read("cnn/models/model.json")
    bad = _rewrite_zip(real / "onnx/cnn.pt2", tmp_path / "evil.pt2", edit)
    return bad, marker


@pytest.mark.parametrize("constant", [False, True], ids=["use_pickle", "opaque_obj"])
def test_pt2_second_program_with_pickle_is_refused(real, tmp_path, constant):
    bad, marker = _second_program(real, tmp_path, constant)
    one_line_error(["inspect", str(bad)], "refused", "--trust-pickle")
    one_line_error(["compare", str(real / "onnx/cnn.pt2"), str(bad), "--activations"], "refused")
    assert not marker.exists()


def test_pt2_older_layout_is_refused(real, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(str(marker)))

    def edit(name, data):
        if name is None:
            return {"cnn/version": b"1\n", "cnn/serialized_exported_program.json": b"{}",
                    "cnn/serialized_state_dict.pt": payload, "cnn/serialized_constants.pt": payload}
        return None if "/models/" in name or "/data/" in name else data

    bad = _rewrite_zip(real / "onnx/cnn.pt2", tmp_path / "old.pt2", edit)
    one_line_error(["inspect", str(bad)])
    assert not marker.exists()


def test_pt2_weight_sizes_claiming_2_28_elements(real, tmp_path):
    def edit(name, data):
        if name and name.endswith("model_weights_config.json"):
            cfg = json.loads(data)
            cfg["config"]["bn1.weight"]["tensor_meta"]["sizes"] = [{"as_int": 2**28}]
            return json.dumps(cfg).encode()
        return data

    bad = _rewrite_zip(real / "onnx/cnn.pt2", tmp_path / "big.pt2", edit)
    proc = cli("inspect", str(bad))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "bn1.weight" in proc.stderr


def test_pt2_is_read_without_torch(real, tmp_path):
    """Static reads of a .pt2 never import torch (the archive is JSON + raw bytes)."""
    code = ("import sys; sys.modules['torch'] = None\nimport normaudit\n"
            f"m = normaudit.load({str(real / 'onnx/cnn.pt2')!r})\n"
            "print(sorted(n.id for n in m.norms), m.by_id()['bn2'].eps)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("]")[0] == "['bn1', 'bn2', 'gn'" and "0.0010000000474974513" in proc.stdout


# -- reads outside the model folder -------------------------------------------------------------------------

def test_onnx_constant_node_external_data_outside_folder(tm, tmp_path, monkeypatch):
    """A Constant node's tensor pointing at a file in the working directory is refused, not read."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.full(32, 12345.678, np.float32).tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()

    def f(m):
        name = next(n.input[1] for n in m.graph.node if n.op_type == "RMSNormalization")
        t = TensorProto(name="w_ext", data_type=TensorProto.FLOAT, dims=[32])
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "../outside.bin"), ("offset", "0"), ("length", "128")):
            e = t.external_data.add()
            e.key, e.value = k, v
        m.graph.node.insert(0, helper.make_node("Constant", [], ["w_const"], value=t))
        for n in m.graph.node:
            if n.op_type == "RMSNormalization" and n.input[1] == name:
                n.input[1] = "w_const"
                break

    bad = onnx_edit(tm / "qwen3/qwen3-dynamo-opset23.onnx", model_dir / "bad.onnx", f)
    monkeypatch.chdir(tmp_path)  # the old bug resolved the location against the working directory
    out = one_line_error(["inspect", str(bad), "--json", "-"], "outside the model folder")
    assert "12345" not in out


@pytest.mark.parametrize("case", ["nul", "absolute", "beyond_end", "fifo", "symlink_out", "length_mismatch"])
def test_onnx_external_data_locations(real, tmp_path, case):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    data = np.ones(32, np.float32).tobytes()
    (model_dir / "w.bin").write_bytes(data)
    (tmp_path / "secret.bin").write_bytes(np.full(32, 777.0, np.float32).tobytes())
    location, offset, length = "w.bin", 0, len(data)
    if case == "nul":
        location = "w.bin\0../../secret.bin"
    elif case == "absolute":
        location = str(tmp_path / "secret.bin")
    elif case == "beyond_end":
        offset = 64
    elif case == "fifo":
        os.mkfifo(model_dir / "pipe.bin")
        location = "pipe.bin"
    elif case == "symlink_out":
        os.symlink(tmp_path / "secret.bin", model_dir / "link.bin")
        location = "link.bin"
    elif case == "length_mismatch":
        length = 16

    def f(m):
        t = next(t for t in m.graph.initializer if t.name == "m.embeddings.LayerNorm.weight")
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v

    bad = onnx_edit(real / "onnx/bert-dynamo-opset18.onnx", model_dir / "ext.onnx", f)
    proc = cli("inspect", str(bad), "--json", "-", timeout=60)
    assert proc.returncode == 2, (proc.stdout[-300:], proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "m.embeddings.LayerNorm.weight" in proc.stderr
    assert "777" not in proc.stdout + proc.stderr and "internal error" not in proc.stderr


def test_onnx_external_data_inside_folder_loads(real, tmp_path):
    src = normaudit.load(real / "onnx/bert-dynamo-opset18.onnx").by_id()["m.embeddings.LayerNorm"]
    w = src.weight.load()
    (tmp_path / "w.bin").write_bytes(b"\0" * 8 + w.tobytes())

    def f(m):
        t = next(t for t in m.graph.initializer if t.name == "m.embeddings.LayerNorm.weight")
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "w.bin"), ("offset", "8"), ("length", str(w.nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v

    ok = onnx_edit(real / "onnx/bert-dynamo-opset18.onnx", tmp_path / "ok.onnx", f)
    got = normaudit.load(ok).by_id()["m.embeddings.LayerNorm"].weight.load()
    np.testing.assert_array_equal(got, w)


# -- a crash ------------------------------------------------------------------------------------------------

def test_torchscript_that_crashes_torch_jit_load(tm, tmp_path):
    """Deeply nested parentheses segfault torch.jit.load: the loader runs in a child process."""
    def edit(name, data):
        if name and name.endswith("code/__torch__/torch/nn/modules/linear.py"):
            return data.replace(b"return", b"return " + b"(" * 100000 + b"1" + b")" * 100000 + b"\n    return", 1)
        return data

    bad = _rewrite_zip(tm / "cnn/cnn-torchscript.pt", tmp_path / "nested.pt", edit)
    proc = cli("inspect", str(bad))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "TorchScript loader" in proc.stderr and "crashed" in proc.stderr


def test_torchscript_still_loads(tm):
    m = normaudit.load(tm / "cnn/cnn-torchscript.pt")
    assert m.counts() == {"batch_norm": 2, "group_norm": 1} and m.by_id()["bn2"].eps == pytest.approx(1e-3)


# -- hangs and memory blow-ups ------------------------------------------------------------------------------

def test_gguf_huge_block_count_is_not_looped_over(real, tmp_path):
    bad = copy_gguf(real / "gguf/qwen3-f32.gguf", tmp_path / "blocks.gguf", kv={"qwen3.block_count": 4_000_000_000})
    t0 = time.monotonic()
    proc = cli("compare", str(real / "hf/qwen3"), str(bad), "--json", "-")
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["pairs"]) == 9


def _patch_array_count(path: Path, key: str, count: int) -> None:
    raw = bytearray(path.read_bytes())
    k = key.encode()
    at = raw.index(struct.pack("<Q", len(k)) + k) + 8 + len(k)
    assert struct.unpack_from("<I", raw, at)[0] == 9  # ARRAY
    struct.pack_into("<Q", raw, at + 8, count)
    path.write_bytes(bytes(raw))


def test_gguf_array_with_huge_element_count(real, tmp_path):
    bad = copy_gguf(real / "gguf/qwen3-f32.gguf", tmp_path / "arr.gguf")
    _patch_array_count(bad, "tokenizer.ggml.tokens", 2**40)
    proc = cli("inspect", str(bad), timeout=30)
    assert proc.returncode == 2 and "tokenizer.ggml.tokens" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_fifo_named_safetensors_in_hf_folder(real, tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_bytes((real / "hf/qwen3/config.json").read_bytes())
    os.mkfifo(d / "model.safetensors")
    proc = cli("inspect", str(d), timeout=30)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr


def test_fifo_shard_in_safetensors_index(real, tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_bytes((real / "hf/qwen3/config.json").read_bytes())
    os.mkfifo(d / "shard.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": "shard.safetensors"}}))
    proc = cli("inspect", str(d), timeout=30)
    assert proc.returncode == 2 and "shard" in proc.stderr


# -- values that used to become internal errors -------------------------------------------------------------

@pytest.mark.parametrize("qtype", ["F64", "I8", "I32"])
def test_gguf_norms_of_plain_types(real, tmp_path, qtype):
    import gguf

    dt = {"F64": np.float64, "I8": np.int8, "I32": np.int32}[qtype]

    def t(name, data, q):
        if name == "blk.0.attn_norm.weight":
            return np.round(data * 10).astype(dt), getattr(gguf.GGMLQuantizationType, qtype)
        return data, q

    bad = copy_gguf(real / "gguf/qwen3-f32.gguf", tmp_path / f"{qtype}.gguf", t)
    layer = normaudit.load(bad).by_id()["blk.0.attn_norm"]
    assert layer.dtype == qtype
    src = normaudit.load(real / "gguf/qwen3-f32.gguf").by_id()["blk.0.attn_norm"].weight.load()
    np.testing.assert_allclose(layer.weight.load(), np.round(src * 10), rtol=1e-6)
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(bad), "--json", "-"])
    assert res.exit_code == 1
    assert [f["check"] for f in json.loads(res.stdout)["findings"] if f["severity"] == "error"] == ["weight_mismatch"]


def test_onnx_zero_size_norm_weight(real, tmp_path):
    def f(m):
        t = next(t for t in m.graph.initializer if t.name == "m.embeddings.LayerNorm.weight")
        t.CopyFrom(numpy_helper.from_array(np.zeros(0, np.float32), t.name))

    bad = onnx_edit(real / "onnx/bert-dynamo-opset18.onnx", tmp_path / "zero.onnx", f)
    one_line_error(["inspect", str(bad)], "m.embeddings.LayerNorm.weight", "no elements")


@pytest.mark.parametrize("case", ["dims", "dtype"])
def test_onnx_raw_data_dims_dtype_disagree(real, tmp_path, case):
    def f(m):
        t = next(t for t in m.graph.initializer if t.name == "m.embeddings.LayerNorm.weight")
        if case == "dims":
            t.dims[0] = 1000
        else:
            t.data_type = TensorProto.DOUBLE

    bad = onnx_edit(real / "onnx/bert-dynamo-opset18.onnx", tmp_path / "bad.onnx", f)
    one_line_error(["inspect", str(bad)], "m.embeddings.LayerNorm.weight", "raw data holds 256 bytes")


def test_onnx_dequantize_scale_of_wrong_shape(real, tmp_path):
    def f(m):
        node = next(n for n in m.graph.node if n.op_type == "LayerNormalization")
        w = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == node.input[1]))
        q = np.clip(np.round(w / 0.01), -127, 127).astype(np.int8)
        m.graph.initializer.extend([numpy_helper.from_array(q, "wq"),
                                    numpy_helper.from_array(np.full(7, 0.01, np.float32), "wq_scale")])
        m.graph.node.insert(0, helper.make_node("DequantizeLinear", ["wq", "wq_scale"], ["wq_dq"], axis=0))
        node.input[1] = "wq_dq"

    bad = onnx_edit(real / "onnx/bert-dynamo-opset18.onnx", tmp_path / "dq.onnx", f)
    one_line_error(["inspect", str(bad)], "DequantizeLinear", "do not fit")


def test_onnx_invalid_utf8_node_name_json(real, tmp_path):
    m = onnx.load(str(real / "onnx/bert-dynamo-opset18.onnx"))
    node = next(n for n in m.graph.node if n.op_type == "LayerNormalization")
    node.name = "LNXXXXMARK"
    raw = m.SerializeToString().replace(b"LNXXXXMARK", b"LN\xff\xfe\xc3(MARK")
    bad = tmp_path / "utf8.onnx"
    bad.write_bytes(raw)
    res = runner.invoke(app, ["inspect", str(bad), "--json", "-"])
    if res.exit_code == 0:
        json.loads(res.stdout)  # valid JSON whatever the names hold
    else:
        one_line_error(["inspect", str(bad), "--json", "-"])


def test_third_party_log_lines_do_not_leak(real, tmp_path):
    """A truncated .pt2 / TorchScript: one line on stderr, no logger traceback before it."""
    for src, cut in ((real / "onnx/cnn.pt2", 30_000), (Path(__file__).parents[1] / "testmodels/cnn/cnn-torchscript.pt",
                                                       20_000)):
        bad = tmp_path / src.name
        bad.write_bytes(src.read_bytes()[:cut])
        proc = cli("inspect", str(bad))
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stdout == ""
