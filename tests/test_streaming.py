"""Streamed weight reads (what a 7B activation diff spends its time on): GGUF tensors dequantized in pieces by
gguf-py or by ggml's own C dequantizers, safetensors decoded into caller buffers, rows un-permuted as they are
read, and LazyWeights refilling a released block's buffers.  Every path is checked value for value against the
ecosystem's own reader (gguf-py's GGUFReader + dequantize, the safetensors library)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from normaudit import kernels
from normaudit.formats.gguf import ggml
from normaudit.formats.gguf.reader import GgufFile

ROOT = Path(__file__).resolve().parent.parent
GGUFS = sorted(p for p in (ROOT / "testmodels").rglob("*.gguf") if p.stat().st_size < 2**20)  # no big vocabularies
HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def _gguf_py_values(path: Path) -> dict[str, np.ndarray]:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    return {t.name: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32) for t in reader.tensors}


@pytest.fixture
def gguf_py_only(monkeypatch):
    """ggml's dequantizers off: every quant type goes through gguf-py a few rows at a time."""
    monkeypatch.setattr(ggml, "_checked", {})
    monkeypatch.setattr(ggml, "_looked", True)
    monkeypatch.setattr(ggml, "_lib", None)


def _check_file(path: Path) -> set[str]:
    gf = GgufFile(path)
    types = set()
    for name, ref in _gguf_py_values(path).items():
        t = gf.tensors[name]
        got = gf.read(name)
        assert got.shape == t.shape and got.dtype == np.float32
        assert np.array_equal(got, ref.reshape(t.shape), equal_nan=True), (path.name, name, t.type_name)
        buf = np.full(t.shape, np.nan, dtype=np.float32)
        assert gf.read(name, out=buf) is buf and np.array_equal(buf, got, equal_nan=True)
        types.add(t.type_name)
    return types


@pytest.mark.core
def test_gguf_reads_match_gguf_py_through_gguf_py(gguf_py_only):
    assert len(GGUFS) >= 20
    types = set()
    for path in GGUFS:
        types |= _check_file(path)
    assert {"F32", "F16", "Q8_0", "Q4_0", "Q5_0", "Q4_K", "Q6_K"} <= types


@pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python (the llamacpp extra) is not installed: no ggml")
def test_gguf_reads_match_gguf_py_through_ggml():
    from gguf.constants import GGMLQuantizationType as Q

    for qtype in (Q.Q8_0, Q.Q4_0, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q6_K):
        assert ggml.dequantizer(qtype) is not None, qtype.name  # sizes and probe agree with gguf-py
    types = set()
    for path in GGUFS:
        types |= _check_file(path)
    assert {"Q8_0", "Q4_K", "Q6_K"} <= types


@pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python (the llamacpp extra) is not installed: no ggml")
def test_ggml_refuses_a_buffer_of_the_wrong_size():
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

    run = ggml.dequantizer(Q.Q8_0)
    block, size = GGML_QUANT_SIZES[Q.Q8_0]
    with pytest.raises(ValueError, match="dequantize_row_q8_0"):
        run(np.zeros(size * 2, np.uint8), np.empty(block * 3, np.float32))  # 3 blocks' values from 2 blocks' bytes


@pytest.mark.core
def test_ggml_can_be_turned_off(monkeypatch):
    from gguf.constants import GGMLQuantizationType as Q

    monkeypatch.setenv("NORMAUDIT_DEQUANT", "gguf-py")
    monkeypatch.setattr(ggml, "_checked", {})
    monkeypatch.setattr(ggml, "_looked", False)
    monkeypatch.setattr(ggml, "_lib", None)
    assert ggml.dequantizer(Q.Q8_0) is None


@pytest.mark.core
def test_rows_unpermuted_while_reading_match_unpermute_qk():
    path = ROOT / "testmodels" / "llama" / "llama-q8_0.gguf"
    gf = GgufFile(path)
    n_head = gf.int_value("llama.attention.head_count")
    for name in ("blk.0.attn_q.weight", "blk.1.attn_k.weight"):
        whole = gf.read(name)
        rows = kernels.unpermute_qk_rows(whole.shape[0], n_head)
        assert not np.array_equal(rows, np.arange(whole.shape[0]))
        np.testing.assert_array_equal(gf.read(name, rows=rows), kernels.unpermute_qk(whole, n_head))
    with pytest.raises(ValueError, match="not a permutation"):
        gf.read("blk.0.attn_q.weight", rows=np.zeros(whole.shape[0], dtype=np.int64))


@pytest.mark.core
@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_safetensors_reads_fill_buffers_with_the_library_values(tmp_path, dtype, monkeypatch):
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    from normaudit.formats.torch import tensors

    np_dtype = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}[dtype]
    values = np.random.default_rng(1).standard_normal((300, 1100)).astype(np_dtype)
    path = tmp_path / "m.safetensors"
    save_file({"w": values, "v": values[:3, :5].copy()}, str(path))
    from normaudit.formats import decode

    monkeypatch.setattr(decode, "CHUNK_BYTES", 4096)  # many pieces, most ending mid-row
    refs = tensors.safetensors_refs([path])
    expected = load_file(str(path))["w"].astype(np.float32)
    got = refs["w"].read()
    assert got.shape == (300, 1100) and np.array_equal(got, expected)
    buf = np.zeros((300, 1100), np.float32)
    assert refs["w"].read(out=buf) is buf and np.array_equal(buf, expected)
    other = np.zeros((1100, 300), np.float32)  # same size, other shape: not filled, a new array comes back
    res = refs["w"].read(out=other)
    assert res is not other and res.shape == (300, 1100) and not other.any()
    assert np.array_equal(refs["v"].read(), expected[:3, :5])


def test_lazy_weights_refill_released_buffers_with_the_right_values():
    torch = pytest.importorskip("torch")
    from normaudit.activations.lazy import RECYCLE_MIN, LazyWeights, params_on_meta

    side = 1 << 9
    assert side * side >= RECYCLE_MIN

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(side, side, bias=False) for _ in range(3))
            self.head = torch.nn.Linear(side, 4)

        def forward(self, x):
            for layer in self.layers:
                x = torch.tanh(layer(x))
            return self.head(x)

    rng = np.random.default_rng(2)
    values = {f"layers.{i}.weight": (rng.standard_normal((side, side)) / side ** 0.5).astype(np.float32)
              for i in range(3)}
    values |= {"head.weight": rng.standard_normal((4, side)).astype(np.float32),
               "head.bias": rng.standard_normal(4).astype(np.float32)}
    filled: list[tuple[str, int]] = []

    def getter(name):
        def get(out=None):
            if out is None:
                return values[name].copy()
            filled.append((name, out.ctypes.data))
            out[...] = values[name]
            return out
        return get

    with params_on_meta():
        net = Net()
    # each weight measured against a reference 1% larger: rel L2 = 0.01 / 1.01, computed in the background thread
    reference = {name: (lambda name=name: values[name] * np.float32(1.01)) for name in values}
    weights = LazyWeights(net, {name: getter(name) for name in values}, reference=reference)
    weights.install()
    weights.install_release()
    x = torch.from_numpy(rng.standard_normal((2, side)).astype(np.float32))
    with torch.no_grad():
        y = net(x)
    weights.remove()
    ref = Net()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()})
    with torch.no_grad():
        torch.testing.assert_close(y, ref(x), rtol=0, atol=0)
    # the three blocks' weights went through one recycled buffer; the small head tensors were allocated fresh
    assert [name for name, _ in filled] == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    assert len({addr for _, addr in filled}) == 1
    assert all(p.device.type == "meta" for p in net.parameters())  # released again
    assert [st.name for st in weights.stats] == list(values)
    for st in weights.stats:
        assert st.rel_l2 == pytest.approx(0.01 / 1.01, rel=1e-4), st.name
