"""The torch-free .pt2 reader: the same programs torch.export.load gives, and hostile archives refused
(one-line errors, no code run, no big allocation)."""

from __future__ import annotations

import json
import os
import pickle
import tracemalloc
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from normaudit.errors import CorruptFile, UnsupportedFormat, UntrustedPickle
from normaudit.formats.torch import pt2_archive as pa
from normaudit.formats.torch.pt2_archive import Pt2Node, read_pt2, unsafe_reasons
from normaudit.model import dtype_name

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "testmodels" / "real" / "onnx" / "cnn.pt2"
TESTMODEL_PT2 = sorted((ROOT / "testmodels").glob("*/*.pt2")) + [CNN]

try:
    import torch
except ImportError:  # the reader needs no torch; only the comparisons with torch.export.load do
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed: nothing to compare against")


# -- same programs as torch.export.load --------------------------------------------------------------------


def _plain(x: Any) -> Any:
    """Args of a Pt2Node or an fx node in one comparable form."""
    if isinstance(x, Pt2Node) or (torch is not None and isinstance(x, torch.fx.Node)):
        return ("node", x.name)
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if torch is not None and isinstance(x, (torch.dtype, torch.layout, torch.memory_format, torch.device)):
        return str(x)
    return x


def _assert_same_graph(ours: list[Pt2Node], fx_nodes: list, where: str) -> None:
    assert [n.name for n in ours] == [n.name for n in fx_nodes], where
    for a, b in zip(ours, fx_nodes):
        here = f"{where}: {a.name}"
        assert (a.op, a.target) == (b.op, str(b.target)), here
        assert _plain(a.args) == _plain(b.args), here  # eps, groups, weights, ... of every op
        assert _plain(a.kwargs) == _plain(dict(b.kwargs)), here
        assert a.meta.get("nn_module_stack") == b.meta.get("nn_module_stack"), here
        assert [u.name for u in a.users] == [u.name for u in b.users], here
        val = b.meta.get("val")
        if isinstance(val, torch.Tensor):
            assert a.meta["val"].shape == tuple(val.shape) and a.meta["val"].dtype == dtype_name(val.dtype), here


def _assert_same_program(prog: pa.Pt2Program, ep: Any, where: str) -> None:
    _assert_same_graph(prog.nodes, list(ep.graph.nodes), where)
    for name, sub in prog.subgraphs.items():
        _assert_same_graph(sub, list(getattr(ep.graph_module, name).graph.nodes), f"{where} > {name}")
    sig = ep.graph_signature
    assert prog.inputs_to_parameters == dict(sig.inputs_to_parameters)
    assert prog.inputs_to_buffers == dict(sig.inputs_to_buffers)
    assert prog.inputs_to_lifted_tensor_constants == dict(sig.inputs_to_lifted_tensor_constants)
    assert prog.user_inputs == tuple(sig.user_inputs) and prog.user_outputs == tuple(sig.user_outputs)
    expected = {**ep.state_dict, **{k: v for k, v in ep.constants.items() if isinstance(v, torch.Tensor)}}
    assert set(prog.state) == set(expected), where
    for fqn, tensor in expected.items():
        ref = prog.state[fqn]
        assert (ref.shape, ref.dtype) == (tuple(tensor.shape), dtype_name(tensor.dtype)), f"{where}: {fqn}"
        np.testing.assert_array_equal(ref.load(), tensor.detach().float().numpy(), err_msg=f"{where}: {fqn}")


@needs_torch
@pytest.mark.parametrize("path", TESTMODEL_PT2, ids=lambda p: str(p.relative_to(ROOT / "testmodels")))
def test_testmodels_match_torch_export_load(path):
    assert unsafe_reasons(path) == []
    with read_pt2(path) as archive:
        assert list(archive.programs) == ["model"]
        _assert_same_program(archive.main, torch.export.load(str(path)), path.name)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    """Every norm / conv the matchers read, exported as is and decomposed (multi-output ops -> getitems),
    with bf16 / f16 weights, a tied weight, a non-persistent buffer, a lifted constant; and a two-program
    archive."""
    torch_ = pytest.importorskip("torch")
    nn = torch_.nn
    from torch.export.pt2_archive._package import package_pt2

    class Zoo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1d, self.bn1d = nn.Conv1d(4, 8, 3), nn.BatchNorm1d(8, eps=1e-3)
            self.conv, self.bn, self.gn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GroupNorm(2, 8, eps=1e-4)
            self.inorm = nn.InstanceNorm2d(8, affine=True, track_running_stats=True, eps=2e-5)
            self.conv3d, self.bn3d = nn.Conv3d(2, 4, 1), nn.BatchNorm3d(4)
            self.ln, self.rms, self.rms_none = nn.LayerNorm(8, eps=1e-6), nn.RMSNorm(8, eps=1e-5), nn.RMSNorm(8)
            self.ln_bf16 = nn.LayerNorm(8).to(torch_.bfloat16)
            self.ln_f16 = nn.LayerNorm(8, bias=False).to(torch_.float16)
            self.fc, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8, bias=False)
            self.fc2.weight = self.fc.weight
            self.w = nn.Parameter(torch_.randn(8))
            self.register_buffer("scale", torch_.rand(8), persistent=False)
            self.const = torch_.tensor([1.5, 2.5])
            with torch_.no_grad():
                for m in self.modules():
                    for p in m.parameters(recurse=False):
                        p.uniform_(-2, 2)
                    if getattr(m, "running_var", None) is not None:
                        m.running_mean.uniform_(-1, 1)
                        m.running_var.uniform_(0.5, 2)

        def forward(self, x2d, x1d, x3d, seq):
            a = self.inorm(self.gn(self.bn(self.conv(x2d))))
            b, c = self.bn1d(self.conv1d(x1d)), self.bn3d(self.conv3d(x3d))
            s = self.ln(seq)
            s = self.rms(s) + self.rms_none(s)
            s = s * torch_.rsqrt(s.float().pow(2).mean(-1, keepdim=True) + 1e-6) * self.w * self.scale  # HF RMSNorm
            s = torch_.nn.functional.layer_norm(s, (8,), weight=self.ln.weight, eps=3e-5)
            t = self.ln_bf16(seq.to(torch_.bfloat16)).float() + self.ln_f16(seq.half()).float()
            s = self.fc2(self.fc(s)) + t + self.const.sum()
            return a.mean() + b.mean() + c.mean() + s.mean(), s

    torch_.manual_seed(0)
    inputs = (torch_.randn(1, 3, 8, 8), torch_.randn(1, 4, 10), torch_.randn(1, 2, 3, 3, 3), torch_.randn(1, 5, 8))
    ep = torch_.export.export(Zoo().eval(), inputs)
    dec = ep.run_decompositions()
    out = tmp_path_factory.mktemp("zoo")
    paths = {"zoo": out / "zoo.pt2", "decomposed": out / "zoo-dec.pt2", "multi": out / "zoo-multi.pt2"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_.export.save(ep, str(paths["zoo"]))
        torch_.export.save(dec, str(paths["decomposed"]))
        package_pt2(str(paths["multi"]), exported_programs={"model": ep, "second": dec})
    return paths


@needs_torch
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch's own treespec deprecation, on load
@pytest.mark.parametrize("kind", ["zoo", "decomposed", "multi"])
def test_zoo_matches_torch(zoo, kind):
    from torch.export.pt2_archive._package import load_pt2

    path = zoo[kind]
    assert unsafe_reasons(path) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        programs = load_pt2(str(path)).exported_programs  # every program, not just "model"
    with read_pt2(path) as archive:
        assert set(archive.programs) == set(programs)
        for name, ep in programs.items():
            _assert_same_program(archive.programs[name], ep, f"{kind}:{name}")
        targets = {n.target for p in archive.programs.values() for n in p.nodes}
        main = archive.main
    assert main.name == "model" and main.state["ln_bf16.weight"].dtype == "BF16"
    if kind == "zoo":
        assert {"aten.layer_norm.default", "aten.rms_norm.default", "aten.batch_norm.default",
                "aten.group_norm.default", "aten.instance_norm.default", "aten.conv1d.default",
                "aten.conv2d.default", "aten.conv3d.default", "aten.linear.default", "aten.rsqrt.default"} <= targets
    else:
        assert {"aten.native_layer_norm.default", "aten._native_batch_norm_legit_no_training.default",
                "aten.native_group_norm.default", "aten.convolution.default",
                "<built-in function getitem>"} <= targets


def test_norm_nodes_read_like_fx():
    """What normaudit's export matchers read, spelled out (no torch needed)."""
    with read_pt2(CNN) as archive:
        prog = archive.main
        by = {n.name: n for n in prog.nodes}
        bn = by["batch_norm_1"]
        assert bn.target == "aten.batch_norm.default" and bn.args[7] == pytest.approx(1e-3)
        assert prog.inputs_to_buffers[bn.args[4].name] == "bn2.running_var"
        assert list(bn.meta["nn_module_stack"].values())[-1] == ("bn2", "torch.nn.modules.batchnorm.BatchNorm2d")
        assert by["conv2d_1"] in bn.args and bn in by["conv2d_1"].users
        gn = by["group_norm"]
        assert gn.args[1] == 4 and gn.args[4] == 1e-5
        w = prog.state[prog.inputs_to_parameters[gn.args[2].name]]
        assert w.name == "gn.weight" and w.dtype == "F32" and w.load().shape == (16,)
        assert prog.nodes[-1].op == "output" and prog.nodes[-1].args == ((by["linear"],),)


# -- hostile archives ---------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling it creates a directory: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _rewrite(dst: Path, edit: Callable[[str, bytes], bytes | None] = lambda n, d: d,
             add: dict[str, bytes] | None = None, src: Path = CNN) -> Path:
    """Copy ``src`` member by member through ``edit`` (None drops the member), then append ``add``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names on purpose
        for item in zin.infolist():
            data = edit(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def _member(name: str) -> bytes:
    with zipfile.ZipFile(CNN) as zf:
        return zf.read(f"cnn/{name}")


def _json_edit(member: str, change: Callable[[Any], Any]) -> Callable[[str, bytes], bytes]:
    """Edit one JSON member in place (``change`` mutates the parsed document)."""
    def edit(name: str, data: bytes) -> bytes:
        if name == f"cnn/{member}":
            obj = json.loads(data)
            change(obj)
            return json.dumps(obj).encode()
        return data
    return edit


def _weight_meta(**changes: Any) -> Callable[[str, bytes], bytes]:
    """Edit bn1.weight's entry (8 float32 in cnn/data/weights/weight_2) of the weights config."""
    def change(cfg: dict) -> None:
        entry = cfg["config"]["bn1.weight"]
        for key, value in changes.items():
            (entry["tensor_meta"] if key in ("dtype", "sizes", "strides", "storage_offset", "layout") else entry)[key] \
                = value
    return _json_edit("data/weights/model_weights_config.json", change)


def _second_program(weights: dict | None = None, constants: dict | None = None,
                    extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Members of a program named 'evil' next to 'model' (torch.export.load deserializes both)."""
    model_weights = json.loads(_member("data/weights/model_weights_config.json"))
    return {
        "cnn/models/evil.json": _member("models/model.json"),
        "cnn/data/weights/evil_weights_config.json": json.dumps(weights or model_weights).encode(),
        "cnn/data/constants/evil_constants_config.json": json.dumps(constants or {"config": {}}).encode(),
        "cnn/data/sample_inputs/evil.pt": _member("data/sample_inputs/model.pt"),
        **(extra or {}),
    }


def _refused(exc_type: type, fn: Callable[[], Any], *needles: str) -> str:
    with pytest.raises(exc_type) as err:
        fn()
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def _torch_would_run_it(path: Path, marker: Path) -> None:
    """The payload is real: torch.export.load executes it (only when torch is installed)."""
    if torch is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.export.load(str(path))
        except Exception:
            pass
    assert marker.exists(), "torch.export.load did not run the payload: the test archive is not hostile"


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


def test_second_program_with_pickled_weight(tmp_path, marker):
    weights = json.loads(_member("data/weights/model_weights_config.json"))
    weights["config"]["bn1.weight"].update(use_pickle=True, path_name="weight_17")
    bad = _rewrite(tmp_path / "evil.pt2", add=_second_program(
        weights, extra={"cnn/data/weights/weight_17": pickle.dumps(_Payload(marker), protocol=2)}))
    text = _refused(UntrustedPickle, lambda: read_pt2(bad), str(bad), "program 'evil': bn1.weight is stored as a pickle",
                    "cnn/data/weights/weight_17")
    assert "torch.export.load would unpickle" in text
    assert unsafe_reasons(bad) == ["program 'evil': bn1.weight is stored as a pickle (cnn/data/weights/weight_17)"]
    with read_pt2(bad, trust_pickle=True) as archive:  # trusted: read all the same, the pickle only listed
        assert archive.programs["evil"].pickled == {"bn1.weight": "cnn/data/weights/weight_17"}
        assert "bn1.weight" not in archive.programs["evil"].state and "bn1.weight" in archive.main.state
    assert not marker.exists()
    _torch_would_run_it(bad, marker)


@pytest.mark.parametrize("use_pickle", [True, False])
def test_second_program_with_opaque_object_constant(tmp_path, marker, use_pickle):
    """torch picks the loader by the opaque_obj_ prefix; the reader refuses on the prefix alone too."""
    constants = {"config": {"obj": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": use_pickle,
                                    "tensor_meta": None}}}
    bad = _rewrite(tmp_path / "evil.pt2", add=_second_program(
        constants=constants, extra={"cnn/data/constants/opaque_obj_0": pickle.dumps(_Payload(marker))}))
    _refused(UntrustedPickle, lambda: read_pt2(bad), "program 'evil': constant obj is a pickled opaque object",
             "cnn/data/constants/opaque_obj_0")
    assert not marker.exists()
    if use_pickle:  # what torch.export.save writes (without it, torch trips on the missing tensor_meta first)
        _torch_would_run_it(bad, marker)


def test_custom_object_constant_and_aoti_and_legacy_payloads(tmp_path, marker):
    constants = {"config": {"obj": {"path_name": "custom_obj_0", "is_param": False, "use_pickle": True,
                                    "tensor_meta": None}}}
    bad = _rewrite(tmp_path / "evil.pt2", add={
        **_second_program(constants=constants, extra={"cnn/data/constants/custom_obj_0": b"x"}),
        "cnn/data/aotinductor/model/model.so": b"\x7fELF",
        "cnn/data/weights/model.pt": pickle.dumps(_Payload(marker)),
    })
    reasons = unsafe_reasons(bad)
    assert any("constant obj is a pickled TorchScript object" in r for r in reasons)
    assert any("AOTInductor" in r and "shared library" in r for r in reasons)
    assert any("cnn/data/weights/model.pt is a legacy pickled payload" in r for r in reasons)
    _refused(UntrustedPickle, lambda: read_pt2(bad), "(+2 more)")
    assert not marker.exists()


def test_older_layout_is_refused(tmp_path, marker):
    payload = pickle.dumps(_Payload(marker), protocol=2)
    bad = tmp_path / "old.pt2"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("version", "8.20")
        zf.writestr("serialized_exported_program.json", _member("models/model.json"))
        for name in ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt"):
            zf.writestr(name, payload)
    _refused(UntrustedPickle, lambda: read_pt2(bad), "older .pt2 layout", "serialized_state_dict.pt")
    _refused(UnsupportedFormat, lambda: read_pt2(bad, trust_pickle=True), "older .pt2 layout")
    assert not marker.exists()
    _torch_would_run_it(bad, marker)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_sample_inputs_with_code_are_refused(tmp_path, marker, protocol):
    inner = tmp_path / "inputs.zip"
    with zipfile.ZipFile(inner, "w") as zf:  # a torch.save-shaped zip whose pickle imports os.mkdir
        zf.writestr("archive/data.pkl", pickle.dumps((_Payload(marker),), protocol=protocol))
        zf.writestr("archive/version", "3\n")
    bad = _rewrite(tmp_path / "evil.pt2", lambda n, d: inner.read_bytes() if n.endswith("sample_inputs/model.pt")
                   else d)
    _refused(UntrustedPickle, lambda: read_pt2(bad), "cnn/data/sample_inputs/model.pt imports", "mkdir",
             "not a plain tensor pickle")
    assert not marker.exists()
    if protocol == 2:
        _torch_would_run_it(bad, marker)


def test_sample_inputs_bare_pickle_or_extra_members_are_refused(tmp_path, marker):
    bare = _rewrite(tmp_path / "bare.pt2", lambda n, d: pickle.dumps(_Payload(marker)) if "sample_inputs" in n else d)
    _refused(UntrustedPickle, lambda: read_pt2(bare), "is not a torch.save zip")
    inner = tmp_path / "inputs.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("archive/data.pkl", _nested(_member("data/sample_inputs/model.pt"), "archive/data.pkl"))
        zf.writestr("archive/constants.pkl", b"")  # torch.load would hand it to torch.jit.load
    ts = _rewrite(tmp_path / "ts.pt2", lambda n, d: inner.read_bytes() if "sample_inputs" in n else d)
    _refused(UntrustedPickle, lambda: read_pt2(ts), "holds archive/constants.pkl")
    assert not marker.exists()


def _nested(zip_bytes: bytes, name: str) -> bytes:
    import io
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        return zf.read(name)


def _peak_mb(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
    except (CorruptFile, UntrustedPickle):
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


@pytest.mark.parametrize("member_bytes", [None, b""], ids=["32-byte member", "empty member"])
def test_huge_sizes_refused_before_allocating(tmp_path, member_bytes):
    bad = _rewrite(tmp_path / "huge.pt2", lambda n, d: (
        member_bytes if member_bytes is not None and n.endswith("weights/weight_2") else
        _weight_meta(sizes=[{"as_int": 2**28}], strides=[{"as_int": 1}])(n, d)))
    expected = "has 0" if member_bytes == b"" else "has 32"
    _refused(CorruptFile, lambda: read_pt2(bad), "bn1.weight", "need 1073741824 bytes",
             f"member cnn/data/weights/weight_2 {expected}")
    assert _peak_mb(lambda: read_pt2(bad)) < 8


@pytest.mark.parametrize("changes, needle", [
    ({"storage_offset": {"as_int": 7}}, "need 60 bytes but member cnn/data/weights/weight_2 has 32"),
    ({"strides": [{"as_int": 5}]}, "need 144 bytes"),
    ({"strides": [{"as_int": -1}]}, "stride -1 is not a non-negative integer"),
    ({"sizes": [{"as_int": -8}]}, "size -8 is not a non-negative integer"),
    ({"sizes": [{"as_expr": {"expr_str": "s0"}}]}, "size is symbolic"),
    ({"sizes": [{"as_int": 2**70}]}, "need 4722366482869645213696 bytes"),
    ({"sizes": [{"as_int": 2**23}], "strides": [{"as_int": 0}]}, "8388608-element view of a 32-byte member is too large"),
    ({"sizes": [{"as_int": 8}, {"as_int": 1}]}, "not two lists of the same length"),
    ({"dtype": 99}, "unknown dtype enum 99"),
    ({"dtype": 8}, "need 64 bytes"),  # float64: 8 elements need 64 bytes
    ({"layout": 1}, "layout 1 (sparse_coo) is not a strided tensor"),
    ({"path_name": "../weights/weight_2"}, "bad path_name '../weights/weight_2'"),
    ({"use_pickle": "no"}, "stored as a pickle"),  # torch tests truthiness: a string is a pickle
], ids=lambda v: str(v)[:40])
def test_bad_tensor_records(tmp_path, changes, needle):
    bad = _rewrite(tmp_path / "bad.pt2", _weight_meta(**changes))
    exc_type = UntrustedPickle if "pickle" in needle else CorruptFile
    _refused(exc_type, lambda: read_pt2(bad), str(bad), needle)


def test_missing_weight_member(tmp_path):
    bad = _rewrite(tmp_path / "missing.pt2", lambda n, d: None if n.endswith("weights/weight_2") else d)
    _refused(CorruptFile, lambda: read_pt2(bad), "bn1.weight: member cnn/data/weights/weight_2 is missing")


def test_truncated_archive(tmp_path):
    data = CNN.read_bytes()
    for cut in (20_000, len(data) - 10, 10):
        bad = tmp_path / f"cut{cut}.pt2"
        bad.write_bytes(data[:cut])
        _refused(CorruptFile, lambda: read_pt2(bad), str(bad), "truncated")


def test_member_past_end_of_file(tmp_path):
    """A central directory claiming more bytes for a stored member than the file holds."""
    data = bytearray(CNN.read_bytes())
    name = b"cnn/data/weights/weight_9"
    pos = data.find(b"PK\x01\x02")
    while data[pos + 46:pos + 46 + len(name)] != name or data[pos + 28:pos + 30] != len(name).to_bytes(2, "little"):
        pos = data.find(b"PK\x01\x02", pos + 4)
        assert pos > 0
    assert int.from_bytes(data[pos + 20:pos + 24], "little") == 640  # compressed size (stored: same as size)
    data[pos + 20:pos + 28] = (10**7).to_bytes(4, "little") * 2
    bad = tmp_path / "past.pt2"
    bad.write_bytes(bytes(data))
    _refused(CorruptFile, lambda: read_pt2(bad), "cnn/data/weights/weight_9", "runs past the end of the file")


def test_deflate_bomb_is_not_inflated(tmp_path):
    real = _member("data/weights/weight_2")
    bad = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(CNN) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            if item.filename.endswith("weights/weight_2"):  # bn1.weight: 32 bytes used, 64 MiB of zeros after
                zout.writestr(item.filename, real + bytes(64 * 2**20), zipfile.ZIP_DEFLATED, compresslevel=1)
            else:
                zout.writestr(item, zin.read(item.filename))
    assert bad.stat().st_size < 2 * 2**20

    values: list = []

    def load() -> None:
        with read_pt2(bad) as archive:
            values.append(archive.main.state["bn1.weight"].load())
    assert _peak_mb(load) < 4
    np.testing.assert_array_equal(values[0], np.frombuffer(real, "<f4"))


def test_json_members_capped_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(pa, "MAX_JSON_BYTES", 2**20)
    bad = _rewrite(tmp_path / "big.pt2", lambda n, d: d + b" " * (3 * 2**20) if n.endswith("models/model.json") else d)
    _refused(CorruptFile, lambda: read_pt2(bad), "cnn/models/model.json", "too large for a JSON member")


@pytest.mark.parametrize("doc, needle", [
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    (b'{"graph_module": ' + b"[" * 400 + b"]" * 400 + b"}", "JSON nested deeper than 160 levels"),
    (b"[1, 2]", "JSON is a list, not an object"),
    (b"not json", "invalid JSON"),
    (b'{"schema_version": {"major": 8, "minor": 20}, "graph_module": 3}', "no graph_module object"),
], ids=["recursion", "depth-cap", "list", "garbage", "wrong-type"])
def test_bad_program_json(tmp_path, doc, needle):
    bad = _rewrite(tmp_path / "bad.pt2", lambda n, d: doc if n.endswith("models/model.json") else d)
    _refused(CorruptFile, lambda: read_pt2(bad), "cnn/models/model.json", needle)


def test_non_object_weights_config(tmp_path):
    bad = _rewrite(tmp_path / "bad.pt2", lambda n, d: b"null" if n.endswith("model_weights_config.json") else d)
    _refused(CorruptFile, lambda: read_pt2(bad), "model_weights_config.json: JSON is a NoneType, not an object")


def _graph_edit(change: Callable[[list], None]) -> Callable[[str, bytes], bytes]:
    return _json_edit("models/model.json", lambda doc: change(doc["graph_module"]["graph"]["nodes"]))


@pytest.mark.parametrize("change, needle", [
    (lambda nodes: nodes[1]["inputs"][0]["arg"].update(as_tensor={"name": "nope"}), "unknown value 'nope'"),
    (lambda nodes: nodes[0]["inputs"][0]["arg"].update(as_tensor={"name": "relu"}), "unknown value 'relu'"),
    (lambda nodes: nodes[2]["outputs"][0].update(as_tensor={"name": "conv2d"}), "value 'conv2d' is defined twice"),
    (lambda nodes: nodes[1]["inputs"][7].update(arg={"as_float": "1e-5"}), "float value '1e-5' is not a number"),
    (lambda nodes: nodes[1]["inputs"][7].update(arg={"as_pickle": 1}), "unknown argument kind 'as_pickle'"),
    (lambda nodes: nodes[1]["inputs"][7].update(arg={"as_scalar_type": 77}), "unknown dtype enum 77"),
], ids=["unknown", "forward-ref", "duplicate", "eps-type", "arg-kind", "dtype"])
def test_bad_graph_references(tmp_path, change, needle):
    bad = _rewrite(tmp_path / "bad.pt2", _graph_edit(change))
    _refused(CorruptFile, lambda: read_pt2(bad), "cnn/models/model.json", needle)


@pytest.mark.parametrize("name, needle", [
    ("cnn/../escape", "contains '..'"),
    ("/etc/cnn", "is an absolute path"),
    ("cnn/a\\b", "contains a backslash"),
    ("cnn/a\x00b", "contains a NUL byte"),
    ("cnn/data/weights/weight_2", "appears twice"),
    ("other/x", "outside the archive folder 'cnn/'"),
])
def test_bad_member_names(tmp_path, name, needle):
    placeholder = name.replace("\x00", "X")
    bad = _rewrite(tmp_path / "names.pt2", add={placeholder: b"x"})
    if "\x00" in name:  # zipfile cannot write a NUL in a name: patch the bytes
        bad.write_bytes(bad.read_bytes().replace(placeholder.encode(), name.encode()))
    _refused(CorruptFile, lambda: read_pt2(bad), needle)


def test_member_count_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(pa, "MAX_MEMBERS", 10)
    _refused(CorruptFile, lambda: read_pt2(CNN), "zip claims 26 members (limit 10)")


def test_central_directory_size_capped_before_zipfile_parses_it(tmp_path):
    """torch writes a zip64 end record; zipfile trusts it, so the cap reads the same record."""
    data = bytearray(CNN.read_bytes())
    rec64 = data.rfind(b"PK\x06\x06")
    assert rec64 > 0
    data[rec64 + 40:rec64 + 48] = (2**40).to_bytes(8, "little")  # central directory size
    bad = tmp_path / "cd.pt2"
    bad.write_bytes(bytes(data))
    _refused(CorruptFile, lambda: read_pt2(bad), "zip central directory is 1099511627776 bytes")


@pytest.mark.parametrize("member, data, exc_type, needle", [
    ("archive_version", b"1", CorruptFile, "unsupported .pt2 archive version b'1'"),
    ("archive_version", None, CorruptFile, "no cnn/archive_version record"),
    ("byteorder", b"big", UnsupportedFormat, "b'big' byte order is not supported"),
    ("models/model.json", None, CorruptFile, "no exported program"),
])
def test_archive_header(tmp_path, member, data, exc_type, needle):
    bad = _rewrite(tmp_path / "hdr.pt2", lambda n, d: data if n == f"cnn/{member}" else d)
    _refused(exc_type, lambda: read_pt2(bad), needle)


def test_bf16_weight_read_without_torch(tmp_path):
    values = np.array([1.5, -2.0, 0.15625, 3.0, -0.0078125, 448.0, 1e-3, -7.25], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")  # the top half of a float32 is its bf16
    expected = (bits.astype(np.uint32) << 16).view(np.float32)
    bad = _rewrite(tmp_path / "bf16.pt2", lambda n, d: bits.tobytes() if n.endswith("weights/weight_2")
                   else _weight_meta(dtype=13)(n, d))
    with read_pt2(bad) as archive:
        ref = archive.main.state["bn1.weight"]
        assert (ref.dtype, ref.shape) == ("BF16", (8,))
        np.testing.assert_array_equal(ref.load(), expected)
    if torch is not None:
        np.testing.assert_array_equal(
            expected, torch.frombuffer(bytearray(bits.tobytes()), dtype=torch.bfloat16).float().numpy())


def test_strided_weight_view(tmp_path):
    """A transposed view with an offset into a shared storage, like torch.as_strided."""
    bad = _rewrite(tmp_path / "view.pt2", _weight_meta(sizes=[{"as_int": 2}, {"as_int": 3}],
                                                       strides=[{"as_int": 1}, {"as_int": 2}],
                                                       storage_offset={"as_int": 2}))
    storage = np.frombuffer(_member("data/weights/weight_2"), "<f4")
    with read_pt2(bad) as archive:
        got = archive.main.state["bn1.weight"].load()
    np.testing.assert_array_equal(got, storage[2:8].reshape(3, 2).T)


def test_pickle_scanner_accepts_plain_tensor_pickles_only(marker):
    clean = _nested(_member("data/sample_inputs/model.pt"), "archive/data.pkl")
    assert pa._pickle_reason(clean) is None
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert "mkdir" in pa._pickle_reason(pickle.dumps({"x": _Payload(marker)}, protocol=protocol))
    assert "unparseable" in pa._pickle_reason(b"\x80\x02\xff garbage")
    assert not marker.exists()


@needs_torch
def test_norms_written_out_as_arithmetic_are_found(tmp_path):
    """A LayerNorm written as mean / pow / sqrt (ConvNeXt's channels-first one, with a broadcast affine) or as
    mean / pow / rsqrt over the last dim is a layer_norm over its own dims; HF's RMSNorm stays an rms_norm."""
    import normaudit
    from normaudit.model import NormKind

    nn = torch.nn

    class ChannelsFirstLN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight, self.bias = nn.Parameter(torch.rand(6) + 0.5), nn.Parameter(torch.randn(6))

        def forward(self, x):
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + 1e-6)) + self.bias[:, None, None]

    class LastDimLN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.rand(6) + 0.5)

        def forward(self, x):
            c = x - x.mean(-1, keepdim=True)
            return c * torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + 3e-5) * self.weight

    class RMS(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.rand(6) + 0.5)

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cf, self.last, self.rms = ChannelsFirstLN(), LastDimLN(), RMS()

        def forward(self, x):
            y = self.cf(x)  # [1, 6, 4, 4]
            return self.rms(self.last(y.permute(0, 2, 3, 1)))

    torch.manual_seed(0)
    m = M().eval()
    path = tmp_path / "arith.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(m, (torch.randn(1, 6, 4, 4),)), str(path))
    got = normaudit.load(path).by_id()
    assert {k: (v.kind, v.eps, v.axis) for k, v in got.items()} == {
        "cf": (NormKind.LAYER_NORM, float(np.float32(1e-6)), (1,)),
        "last": (NormKind.LAYER_NORM, float(np.float32(3e-5)), (-1,)),
        "rms": (NormKind.RMS_NORM, float(np.float32(1e-5)), (-1,))}
    np.testing.assert_array_equal(got["cf"].weight.load(), m.cf.weight.detach().numpy())
    np.testing.assert_array_equal(got["cf"].bias.load(), m.cf.bias.detach().numpy())
    np.testing.assert_array_equal(got["last"].weight.load(), m.last.weight.detach().numpy())
    assert got["last"].bias is None and got["cf"].axes_exact
