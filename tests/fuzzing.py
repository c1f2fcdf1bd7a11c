"""Seeded fuzzing of normaudit's readers through its command line (issue #7).

Every case is built from a file in ``testmodels/`` by one mutation, chosen with ``random.Random(seed)``, and
run as ``normaudit inspect FILE --json -`` (or ``normaudit compare GOOD FILE --json -``) in a child forked
from this process, with its stdout/stderr in files, a wall-clock limit and a memory cap.  The oracle (see
:func:`classify`) passes a case iff the child exited normally with 0/1/2, an exit 2 wrote exactly one line
``normaudit: error: ...`` (no ``internal error``), nothing printed a traceback, no time-out, no memory
blow-up, the pickle sentinel was not created, and no file outside the model folder was opened or shows up
in the output.

Only the stable entry point is used: ``normaudit.cli.run()`` with ``sys.argv``.

    python -m tests.fuzzing replay gguf 1234567 [--debug] [--keep DIR]   # one case, by its seed
    python benchmarks/fuzz.py --cases-per-format 2000                   # the long run
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import pickle
import pickletools
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TM = ROOT / "testmodels"
REAL = TM / "real"

FORMATS = ("gguf", "onnx", "safetensors", "hf", "pt", "pt2", "torchscript")

#: the value every planted file outside the model folder holds (float32)
PLANTED = np.float32(12345.678)
PLANTED_MARKERS = ("12345.67", "12345.68")  # how it prints, widened exactly or rounded
SENTINEL_NAME = "SENTINEL"  # pickle payloads would create <case>/SENTINEL

GiB = 1 << 30


# ================================================================================================
# sources
# ================================================================================================

def sources(fmt: str) -> list[Path]:
    """The unmutated inputs of one format (files, or folders for ``hf``)."""
    if fmt == "gguf":
        out = sorted(TM.glob("*/*.gguf")) + sorted((REAL / "gguf").glob("*.gguf"))
    elif fmt == "onnx":
        out = sorted(TM.glob("*/*.onnx")) + sorted((REAL / "onnx").glob("*.onnx"))
    elif fmt == "safetensors":
        out = sorted(TM.glob("*/hf/model.safetensors")) + sorted((REAL / "hf").glob("*/model.safetensors"))
    elif fmt == "hf":
        out = sorted(p for p in TM.glob("*/hf") if p.is_dir() and p != REAL / "hf") + sorted(p for p in (REAL / "hf").iterdir() if p.is_dir())
    elif fmt == "pt":
        out = [p for p in sorted(TM.glob("*/*.pt")) if "torchscript" not in p.name] + [REAL / "onnx/cnn.pt"]
    elif fmt == "pt2":
        out = sorted(TM.glob("*/*.pt2")) + [REAL / "onnx/cnn.pt2"]
    elif fmt == "torchscript":
        out = [TM / "cnn/cnn-torchscript.pt"]
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return [p for p in out if p.exists()]


def _family(src: Path) -> str:
    """The model a test file was made from: qwen3, gemma3, llama, bert, cnn."""
    if src.parent.parent == TM and src.parent.name != "real":
        return src.parent.name
    if src.name == "hf" and src.parent.parent == TM:
        return src.parent.name
    if src.parent == REAL / "hf":
        return src.name
    if src.name == "model.safetensors":
        return _family(src.parent)
    return re.split(r"[-.]", src.name, maxsplit=1)[0]


def partners(src: Path) -> list[Path]:
    """Unmutated files of the same model in every format (the other side of a ``compare``)."""
    fam = _family(src)
    return [p for fmt in FORMATS if fmt != "safetensors" for p in sources(fmt) if _family(p) == fam]


_INFO_CACHE: dict[str, dict] = {}


def source_info(src: Path) -> dict:
    """``normaudit inspect SRC --json -`` of an unmutated source, run in this process (cached).

    Used to aim structure-aware mutations at norm tensors and nodes; it also imports everything the
    readers import lazily, so forked children do not pay for it."""
    key = str(src)
    if key not in _INFO_CACHE:
        out, err = io.StringIO(), io.StringIO()
        argv = sys.argv
        code: Any = 0
        try:
            import normaudit.cli

            sys.argv = ["normaudit", "inspect", str(src), "--json", "-"]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    normaudit.cli.run()
                except SystemExit as exc:
                    code = exc.code
        finally:
            sys.argv = argv
        try:
            doc = json.loads(out.getvalue()) if code in (0, None) else {}
        except ValueError:
            doc = {}
        _INFO_CACHE[key] = doc
    return _INFO_CACHE[key]


def norm_tensor_names(src: Path) -> list[str]:
    names: list[str] = []
    for n in source_info(src).get("norms", []):
        for t in n.get("tensors", []):
            if t.get("name") and t["name"] not in names:
                names.append(t["name"])
    return names


def norm_node_names(src: Path) -> list[str]:
    out: list[str] = []
    for n in source_info(src).get("norms", []):
        out.extend(x for x in n.get("nodes", []) if x)
    return out


# ================================================================================================
# blind byte mutations
# ================================================================================================

def interesting_int(rng: random.Random, bits: int = 64, signed: bool = False, near: int | None = None) -> int:
    """A boundary value of a ``bits``-wide integer (as its unsigned bit pattern unless ``signed``)."""
    cands = [0, 1, 2, 3, 7, 8, 255, 256, 4095, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**48,
             2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**28, 2**24, 10**6, 10**9]
    if near is not None:
        cands += [near + 1, max(near - 1, 0), near * 2, near * 1000, near + 2**32]
    v = rng.choice(cands) if rng.random() < 0.85 else rng.getrandbits(bits)
    v &= (1 << bits) - 1
    if signed and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


def mutate_bytes(data: bytes, rng: random.Random, region: tuple[int, int] | None = None,
                 donor: bytes | None = None) -> tuple[bytes, str]:
    """One blind mutation; positions fall into ``region`` (the structured prefix) 80% of the time."""
    buf = bytearray(data)
    n = len(buf)
    if n == 0:
        return bytes(rng.randbytes(16)), "random16"

    def pos() -> int:
        if region and rng.random() < 0.8:
            lo, hi = max(0, region[0]), min(n, region[1])
            if hi > lo:
                return rng.randrange(lo, hi)
        return rng.randrange(n)

    op = rng.choice(["flip", "flip", "byte", "int", "int", "truncate", "dup", "delete", "splice", "insert"])
    if op == "flip":
        k = rng.choice([1, 1, 2, 4, 8, 32])
        for _ in range(k):
            p = pos()
            buf[p] ^= 1 << rng.randrange(8)
        return bytes(buf), f"flip{k}"
    if op == "byte":
        k = rng.choice([1, 2, 4])
        for _ in range(k):
            buf[pos()] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, 0x3F, rng.randrange(256)])
        return bytes(buf), f"byte{k}"
    if op == "int":
        width = rng.choice([4, 8])
        p = pos()
        if rng.random() < 0.5:
            p -= p % width
        v = interesting_int(rng, width * 8)
        buf[p:p + width] = v.to_bytes(width, "little")
        return bytes(buf[:max(n, p + width)]), f"int{width}@{p}={v}"
    if op == "truncate":
        p = pos()
        return bytes(buf[:p]), f"truncate@{p}"
    if op == "dup":
        p, k = pos(), rng.choice([1, 4, 16, 64, 256, 4096])
        return bytes(buf[:p] + buf[p:p + k] + buf[p:]), f"dup{k}@{p}"
    if op == "delete":
        p, k = pos(), rng.choice([1, 4, 16, 64, 256, 4096])
        return bytes(buf[:p] + buf[p + k:]), f"delete{k}@{p}"
    if op == "splice" and donor:
        p, q = pos(), rng.randrange(len(donor))
        return bytes(buf[:p]) + donor[q:], f"splice@{p}<-{q}"
    p, k = pos(), rng.choice([1, 8, 64, 1024])
    return bytes(buf[:p]) + rng.randbytes(k) + bytes(buf[p:]), f"insert{k}@{p}"


# ================================================================================================
# mutation context
# ================================================================================================

@dataclass
class MutCtx:
    """What a mutation gets: the source, a fresh model folder holding a copy of it, the folder outside."""

    fmt: str
    rng: random.Random
    src: Path
    case_dir: Path
    model_dir: Path
    outside: Path
    target: Path  # what normaudit is pointed at (a file in model_dir, or model_dir itself)
    sentinel: Path
    extra_args: list[str] = field(default_factory=list)

    def read(self) -> bytes:
        return self.target.read_bytes()

    def write(self, data: bytes) -> None:
        self.target.write_bytes(data)

    # -- planted files (outside the model folder) -------------------------------------------
    def planted_bin(self) -> Path:
        p = self.outside / "planted.bin"
        if not p.exists():
            p.write_bytes(np.full(4096, PLANTED, np.float32).tobytes())
        return p

    def planted_safetensors(self, like: Path | None = None) -> Path:
        """A safetensors file with the tensors of ``like`` (default: the source's), every value PLANTED."""
        p = self.outside / "planted.safetensors"
        if not p.exists():
            from safetensors.numpy import save_file

            tensors = {}
            like = like or (self.src / "model.safetensors" if self.src.is_dir() else self.src)
            try:
                hdr, _ = st_parse(like.read_bytes())
                for k, v in hdr.items():
                    if k != "__metadata__" and isinstance(v, dict):
                        tensors[k] = np.full(v.get("shape", [4]), PLANTED, np.float32)
            except Exception:
                pass
            if not tensors:
                tensors = {"model.norm.weight": np.full(64, PLANTED, np.float32)}
            save_file(tensors, str(p))
        return p

    def planted_state_dict(self) -> Path:
        p = self.outside / "planted.pt"
        if not p.exists():
            import torch

            names = norm_tensor_names(self.src) or ["model.norm.weight"]
            p.write_bytes(torch_save_bytes({n: torch.full((64,), float(PLANTED)) for n in names}))
        return p

    def evil_pickle(self, protocol: int = 2) -> bytes:
        """A pickle whose loading runs code (creates the sentinel)."""
        return pickle.dumps(_Evil(str(self.sentinel)), protocol=protocol)

    def evil_torch_save(self, with_tensors: bool = True) -> bytes:
        import torch

        obj: dict[str, Any] = {"payload": _Evil(str(self.sentinel))}
        if with_tensors:
            obj = {"layers.0.norm.weight": torch.ones(4), **obj}
        return torch_save_bytes(obj)


PAYLOAD_HEADER = "normaudit-fuzz: pickle payload ran; stack (most recent call last):"


def payload_code(sentinel: str) -> str:
    """What every pickle payload executes: print where it runs (for the bug report), create the sentinel."""
    return ("import sys, traceback\n"
            f"sys.stderr.write({PAYLOAD_HEADER + chr(10)!r})\n"
            "traceback.print_stack(file=sys.stderr)\n"
            f"open({sentinel!r}, 'w').close()\n")


def torch_save_bytes(obj: Any, **kw: Any) -> bytes:
    """``torch.save`` to bytes, deterministic (the random ``.data/serialization_id`` member fixed)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    data = buf.getvalue()
    if not data.startswith(b"PK"):
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, d in members:
            if name.endswith(".data/serialization_id"):
                d = b"0" * len(d)
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), d)
    return out.getvalue()


class _Evil:
    """Unpickling this runs code (``builtins.exec``) that creates the sentinel file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import builtins

        return (builtins.exec, (payload_code(self.path),))


# ================================================================================================
# GGUF
# ================================================================================================

_GG_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GG_STRING, _GG_ARRAY = 8, 9
# ggml types: F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, Q8_1 9, Q2_K 10 .. Q8_K 15, IQ* 16-23,
# I8 24, I16 25, I32 26, I64 27, F64 28, IQ1_M 29, BF16 30, TQ1_0 34, TQ2_0 35, MXFP4 39
_GG_INT_TYPES = {24: np.int8, 25: np.int16, 26: np.int32, 27: np.int64, 28: np.float64, 1: np.float16, 0: np.float32}


class GGUFLayout:
    """Byte offsets of every field of a GGUF file, to patch (lie) or rebuild (structural edits)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.version, self.n_tensors, self.n_kv = struct.unpack_from("<IQQ", data, 4)
        pos = 24
        self.kvs: list[dict] = []
        for _ in range(self.n_kv):
            kv: dict[str, Any] = {"start": pos}
            klen = struct.unpack_from("<Q", data, pos)[0]
            kv["key"] = data[pos + 8:pos + 8 + klen].decode("utf-8", "replace")
            pos += 8 + klen
            kv["type_off"] = pos
            kv["vtype"] = struct.unpack_from("<I", data, pos)[0]
            pos += 4
            kv["value_off"] = pos
            kv["value"], pos, kv["arr"] = self._value(kv["vtype"], pos)
            kv["end"] = pos
            self.kvs.append(kv)
        self.tensors: list[dict] = []
        for _ in range(self.n_tensors):
            t: dict[str, Any] = {"start": pos}
            nlen = struct.unpack_from("<Q", data, pos)[0]
            t["name"] = data[pos + 8:pos + 8 + nlen].decode("utf-8", "replace")
            pos += 8 + nlen
            t["ndims_off"] = pos
            nd = struct.unpack_from("<I", data, pos)[0]
            pos += 4
            t["dims_off"] = pos
            t["dims"] = list(struct.unpack_from(f"<{nd}Q", data, pos))
            pos += 8 * nd
            t["type_off"] = pos
            t["type"] = struct.unpack_from("<I", data, pos)[0]
            pos += 4
            t["offset_off"] = pos
            t["offset"] = struct.unpack_from("<Q", data, pos)[0]
            pos += 8
            t["end"] = pos
            self.tensors.append(t)
        self.infos_end = pos
        self.alignment = 32
        for kv in self.kvs:
            if kv["key"] == "general.alignment" and isinstance(kv["value"], int) and kv["value"] > 0:
                self.alignment = kv["value"]
        self.data_start = -(-pos // self.alignment) * self.alignment
        self.arch = next((kv["value"] for kv in self.kvs if kv["key"] == "general.architecture"), "llama")

    def _value(self, vtype: int, pos: int) -> tuple[Any, int, dict | None]:
        d = self.data
        if vtype in _GG_SCALAR:
            fmt = _GG_SCALAR[vtype]
            return struct.unpack_from(fmt, d, pos)[0], pos + struct.calcsize(fmt), None
        if vtype == _GG_STRING:
            n = struct.unpack_from("<Q", d, pos)[0]
            return d[pos + 8:pos + 8 + n].decode("utf-8", "replace"), pos + 8 + n, {"len_off": pos}
        if vtype == _GG_ARRAY:
            atype, count = struct.unpack_from("<IQ", d, pos)
            arr = {"atype_off": pos, "atype": atype, "count_off": pos + 4, "count": count, "item_len_offs": []}
            pos += 12
            items = []
            for _ in range(count):
                if atype == _GG_STRING and len(arr["item_len_offs"]) < 64:
                    arr["item_len_offs"].append(pos)
                v, pos, _ = self._value(atype, pos)
                if len(items) < 8:
                    items.append(v)
            return items, pos, arr
        raise ValueError(f"bad GGUF value type {vtype}")

    # -- access --------------------------------------------------------------------------------
    def kv(self, key: str) -> dict | None:
        return next((kv for kv in self.kvs if kv["key"] == key), None)

    def norm_tensors(self) -> list[dict]:
        return [t for t in self.tensors if "norm" in t["name"]] or self.tensors

    def blob(self) -> bytes:
        return self.data[self.data_start:]

    def kv_blobs(self) -> list[bytes]:
        return [self.data[kv["start"]:kv["end"]] for kv in self.kvs]

    def tinfo_blobs(self) -> list[bytes]:
        return [self.data[t["start"]:t["end"]] for t in self.tensors]


def gg_str(s: bytes | str) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gg_value(vtype: int, value: Any, atype: int = 6) -> bytes:
    if vtype in _GG_SCALAR:
        return struct.pack(_GG_SCALAR[vtype], value)
    if vtype == _GG_STRING:
        return gg_str(value)
    if vtype == _GG_ARRAY:
        return struct.pack("<IQ", atype, len(value)) + b"".join(gg_value(atype, v) for v in value)
    raise ValueError(vtype)


def gg_kv(key: str | bytes, vtype: int, value: Any, atype: int = 6) -> bytes:
    return gg_str(key) + struct.pack("<I", vtype) + gg_value(vtype, value, atype)


def gg_tinfo(name: str | bytes, dims: list[int], ttype: int, offset: int) -> bytes:
    return gg_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in dims) \
        + struct.pack("<IQ", ttype, offset & (2**64 - 1))


def gg_build(kvs: list[bytes], tinfos: list[bytes], blob: bytes, alignment: int = 32, version: int = 3,
             n_kv: int | None = None, n_tensors: int | None = None) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, len(tinfos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tinfos)
    align = alignment if alignment > 0 else 32
    pad = (-len(body)) % align
    return body + b"\0" * pad + blob


def _patch(data: bytes, off: int, fmt: str, value: int) -> bytes:
    size = struct.calcsize(fmt)
    bits = size * 8
    value &= (1 << bits) - 1
    if fmt[-1].islower() and value >= 1 << (bits - 1):
        value -= 1 << bits
    return data[:off] + struct.pack(fmt, value) + data[off + size:]


def _gg_rebuild(L: GGUFLayout, kvs: list[bytes] | None = None, tinfos: list[bytes] | None = None,
                blob: bytes | None = None, **kw: Any) -> bytes:
    return gg_build(L.kv_blobs() if kvs is None else kvs, L.tinfo_blobs() if tinfos is None else tinfos,
                    L.blob() if blob is None else blob, alignment=kw.pop("alignment", L.alignment),
                    version=kw.pop("version", L.version), **kw)


def _gg_replace_kv(L: GGUFLayout, key: str, new: bytes | None) -> list[bytes]:
    out = []
    for kv, b in zip(L.kvs, L.kv_blobs()):
        if kv["key"] == key:
            if new is not None:
                out.append(new)
        else:
            out.append(b)
    return out


def gguf_header_counts(c: MutCtx, L: GGUFLayout) -> str:
    which = c.rng.choice(["n_tensors", "n_kv"])
    cur = L.n_tensors if which == "n_tensors" else L.n_kv
    budget = (len(L.data) - 24) // (33 if which == "n_tensors" else 14)
    v = c.rng.choice([cur + 1, max(cur - 1, 0), 0, budget, budget // 2, cur + 100, interesting_int(c.rng, 64)])
    c.write(_patch(L.data, 8 if which == "n_tensors" else 16, "<Q", v))
    return f"{which} {cur}->{v}"


def gguf_version(c: MutCtx, L: GGUFLayout) -> str:
    v = c.rng.choice([1, 2, 2, 4, 0, 2**32 - 1])
    c.write(_patch(L.data, 4, "<I", v))
    return f"version={v}"


def gguf_kv_type(c: MutCtx, L: GGUFLayout) -> str:
    kv = c.rng.choice(L.kvs)
    v = c.rng.choice(list(range(13)) + [13, 255, 2**31, 2**32 - 1])
    c.write(_patch(L.data, kv["type_off"], "<I", v))
    return f"{kv['key']} type {kv['vtype']}->{v}"


def gguf_kv_retype(c: MutCtx, L: GGUFLayout) -> str:
    """Re-encode one important key with another type (a consistent file with unexpected types)."""
    arch = L.arch
    keys = [f"{arch}.attention.layer_norm_rms_epsilon", f"{arch}.attention.layer_norm_epsilon", f"{arch}.block_count",
            "general.architecture", "general.alignment", "general.file_type", f"{arch}.attention.group_norm_groups",
            f"{arch}.attention.group_norm_epsilon", "general.name"]
    key = c.rng.choice(keys)
    rng = c.rng
    variants: list[tuple[int, Any, int]] = [
        (_GG_STRING, rng.choice(["1e-6", "", "llama", "x" * 100000, "\u00e9\u0000z"]), 0),
        (_GG_ARRAY, [], 6), (_GG_ARRAY, [1e-6, 2e-6], 6), (_GG_ARRAY, ["a", "b"], _GG_STRING),
        (_GG_ARRAY, [3, 4], 4), (12, rng.choice([1e-6, float("nan"), float("inf"), -1.0, 1e308]), 0),
        (6, rng.choice([float("nan"), float("inf"), -0.0, 1e-45, 3.4e38]), 0), (7, True, 0),
        (10, interesting_int(rng, 64), 0), (11, interesting_int(rng, 64, signed=True), 0),
        (5, interesting_int(rng, 32, signed=True), 0), (4, interesting_int(rng, 32), 0), (0, 255, 0),
    ]
    vtype, value, atype = rng.choice(variants)
    new = gg_kv(key, vtype, value, atype)
    kvs = _gg_replace_kv(L, key, new) if L.kv(key) else L.kv_blobs() + [new]
    c.write(_gg_rebuild(L, kvs=kvs))
    return f"{key} as type {vtype}/{atype} = {str(value)[:40]!r}"


def gguf_array_count(c: MutCtx, L: GGUFLayout) -> str:
    arrs = [kv for kv in L.kvs if kv["vtype"] == _GG_ARRAY]
    if not arrs:
        return gguf_header_counts(c, L)
    kv = c.rng.choice(arrs)
    cur = kv["arr"]["count"]
    v = c.rng.choice([cur + 1, cur * 2, len(L.data), 2**32, 2**40, 2**62, 2**64 - 1, 0, max(cur - 1, 0)])
    c.write(_patch(L.data, kv["arr"]["count_off"], "<Q", v))
    return f"{kv['key']} count {cur}->{v}"


def gguf_string_len(c: MutCtx, L: GGUFLayout) -> str:
    offs: list[tuple[str, int]] = []
    for kv in L.kvs:
        offs.append((f"key {kv['key']}", kv["start"]))
        if kv["vtype"] == _GG_STRING:
            offs.append((f"value of {kv['key']}", kv["arr"]["len_off"]))
        if kv["arr"] and kv["arr"].get("item_len_offs"):
            offs.append((f"item of {kv['key']}", c.rng.choice(kv["arr"]["item_len_offs"])))
    for t in L.tensors[:64]:
        offs.append((f"tensor name {t['name']}", t["start"]))
    what, off = c.rng.choice(offs)
    cur = struct.unpack_from("<Q", L.data, off)[0]
    v = c.rng.choice([cur + 1, max(cur - 1, 0), 0, len(L.data), 2**31, 2**32 + cur, 2**48, 2**63, 2**64 - 1])
    c.write(_patch(L.data, off, "<Q", v))
    return f"{what} length {cur}->{v}"


def gguf_block_count(c: MutCtx, L: GGUFLayout) -> str:
    key = f"{L.arch}.block_count"
    kv = L.kv(key)
    v = c.rng.choice([2**16, 2**20, 2**24, 2**31 - 1, 2**32 - 1, 10**7])
    if kv is not None and kv["vtype"] == 4 and c.rng.random() < 0.7:
        c.write(_patch(L.data, kv["value_off"], "<I", v))
        return f"{key} u32 {kv['value']}->{v}"
    v = c.rng.choice([v, 2**40, 2**62, 2**64 - 1])
    new = gg_kv(key, 10, v)
    kvs = _gg_replace_kv(L, key, new) if kv else L.kv_blobs() + [new]
    c.write(_gg_rebuild(L, kvs=kvs))
    return f"{key} u64 = {v}"


def gguf_tensor_ndims(c: MutCtx, L: GGUFLayout) -> str:
    t = c.rng.choice(L.norm_tensors() if c.rng.random() < 0.6 else L.tensors)
    v = c.rng.choice([0, 0, 3, 4, 5, 8, 255, 2**16, 2**31, 2**32 - 1])
    c.write(_patch(L.data, t["ndims_off"], "<I", v))
    return f"{t['name']} n_dims {len(t['dims'])}->{v}"


def gguf_tensor_dims(c: MutCtx, L: GGUFLayout) -> str:
    t = c.rng.choice(L.norm_tensors() if c.rng.random() < 0.7 else L.tensors)
    i = c.rng.randrange(len(t["dims"])) if t["dims"] else 0
    cur = t["dims"][i] if t["dims"] else 0
    v = c.rng.choice([0, 0, 1, cur * 2, cur + 1, max(cur - 1, 0), 2**31, 2**32, 2**40, 2**62, 2**63, 2**64 - 1])
    if not t["dims"]:
        return gguf_tensor_ndims(c, L)
    c.write(_patch(L.data, t["dims_off"] + 8 * i, "<Q", v))
    return f"{t['name']} dim[{i}] {cur}->{v}"


def gguf_tensor_type(c: MutCtx, L: GGUFLayout) -> str:
    t = c.rng.choice(L.norm_tensors() if c.rng.random() < 0.8 else L.tensors)
    v = c.rng.choice([24, 25, 26, 27, 28, 1, 30, 2, 3, 6, 8, 10, 12, 14, 16, 20, 29, 34, 39, 4, 5, 31, 40, 99,
                      2**31, 2**32 - 1])
    c.write(_patch(L.data, t["type_off"], "<I", v))
    return f"{t['name']} type {t['type']}->{v}"


def gguf_tensor_offset(c: MutCtx, L: GGUFLayout) -> str:
    t = c.rng.choice(L.norm_tensors() if c.rng.random() < 0.7 else L.tensors)
    size = len(L.data) - L.data_start
    other = c.rng.choice(L.tensors)["offset"]
    v = c.rng.choice([t["offset"] + 1, t["offset"] + L.alignment, size, size - 4, size + L.alignment, 0, other,
                      2**32, 2**63, 2**64 - 32, 2**64 - 1])
    c.write(_patch(L.data, t["offset_off"], "<Q", v))
    return f"{t['name']} offset {t['offset']}->{v}"


def gguf_norm_retype_consistent(c: MutCtx, L: GGUFLayout) -> str:
    """A norm tensor re-stored as I8/I16/I32/I64/F64/F16 (data converted and appended): a valid file."""
    cands = [t for t in L.norm_tensors() if t["type"] == 0 and "norm" in t["name"]]
    if not cands:
        return gguf_tensor_type(c, L)
    t = c.rng.choice(cands)
    ttype = c.rng.choice([24, 25, 26, 27, 28, 1])
    n = int(np.prod(t["dims"])) if t["dims"] else 1
    start = L.data_start + t["offset"]
    vals = np.frombuffer(L.data[start:start + 4 * n], np.float32)
    if ttype in (24, 25, 26, 27):
        vals = vals * c.rng.choice([1, 100, 1e6])
    new = np.asarray(vals).astype(_GG_INT_TYPES[ttype]).tobytes()
    blob = L.blob()
    blob += b"\0" * ((-len(blob)) % L.alignment)
    off = len(blob)
    blob += new
    tinfos = [gg_tinfo(x["name"], x["dims"], ttype, off) if x is t else b for x, b in zip(L.tensors, L.tinfo_blobs())]
    c.write(_gg_rebuild(L, tinfos=tinfos, blob=blob))
    return f"{t['name']} stored as ggml type {ttype}"


def gguf_zero_size(c: MutCtx, L: GGUFLayout) -> str:
    t = c.rng.choice(L.norm_tensors())
    dims = c.rng.choice([[0], [0, 64], [64, 0], []])
    tinfos = [gg_tinfo(x["name"], dims, x["type"], x["offset"]) if x is t else b
              for x, b in zip(L.tensors, L.tinfo_blobs())]
    c.write(_gg_rebuild(L, tinfos=tinfos))
    return f"{t['name']} dims={dims}"


def gguf_alignment(c: MutCtx, L: GGUFLayout) -> str:
    v = c.rng.choice([0, 1, 3, 7, 24, 48, 64, 4096, 2**31, 2**32 - 1])
    vtype = c.rng.choice([4, 4, 4, 10, 5, 6, _GG_STRING])
    value: Any = {6: float(v), _GG_STRING: str(v), 5: v if v < 2**31 else -1}.get(vtype, v)
    new = gg_kv("general.alignment", vtype, value)
    kvs = _gg_replace_kv(L, "general.alignment", new) if L.kv("general.alignment") else L.kv_blobs() + [new]
    relayout = c.rng.random() < 0.5 and vtype == 4 and v in (1, 64, 4096)
    c.write(_gg_rebuild(L, kvs=kvs, alignment=v if relayout else L.alignment))
    return f"general.alignment type {vtype} = {value!r}{' (relaid out)' if relayout else ''}"


def gguf_eps_special(c: MutCtx, L: GGUFLayout) -> str:
    key = next((kv["key"] for kv in L.kvs if "epsilon" in kv["key"]), f"{L.arch}.attention.layer_norm_rms_epsilon")
    v = c.rng.choice([float("nan"), float("inf"), float("-inf"), -1.0, 0.0, 1e-45, 3.4e38, 1.0])
    kvs = _gg_replace_kv(L, key, gg_kv(key, 6, v)) if L.kv(key) else L.kv_blobs() + [gg_kv(key, 6, v)]
    c.write(_gg_rebuild(L, kvs=kvs))
    return f"{key} = {v}"


def gguf_arch(c: MutCtx, L: GGUFLayout) -> str:
    v = c.rng.choice(["llama", "gemma3", "qwen3", "bert", "t5", "clip", "rwkv6", "mamba", "wavtokenizer-dec",
                      "zzz", "", "x" * 65536, "blk.{bid}", "{arch}", "..", b"\xff\xfe\x00".decode("latin-1")])
    raw = v.encode("latin-1") if v.startswith("\xff") else v.encode()
    kvs = _gg_replace_kv(L, "general.architecture", gg_kv("general.architecture", _GG_STRING, raw))
    c.write(_gg_rebuild(L, kvs=kvs))
    return f"general.architecture={v[:20]!r}"


def gguf_tensor_names(c: MutCtx, L: GGUFLayout) -> str:
    t = c.rng.choice(L.norm_tensors())
    v = c.rng.choice(["blk.999999.attn_norm.weight", "blk.-1.attn_norm.weight", "output_norm.bias", t["name"],
                      "blk.0.attn_norm.weight", "blk.0.attn_norm", ".weight", "", "x" * 70000,
                      "blk.0.attn_norm.w\xe9ight", "blk.0.ffn_norm.weight\x00x"])
    raw = v.encode("utf-8") if c.rng.random() < 0.8 else v.encode("latin-1", "replace")
    tinfos = [gg_tinfo(raw, x["dims"], x["type"], x["offset"]) if x is t else b
              for x, b in zip(L.tensors, L.tinfo_blobs())]
    c.write(_gg_rebuild(L, tinfos=tinfos))
    return f"{t['name']} renamed {v[:30]!r}"


def gguf_many_tensors(c: MutCtx, L: GGUFLayout) -> str:
    """Thousands of tensor infos naming norm tensors of far blocks, all pointing at one norm's data."""
    t = c.rng.choice([x for x in L.norm_tensors() if x["dims"]] or L.tensors)
    n = c.rng.choice([1000, 20000, 100000])
    blocks = c.rng.choice([n, 2**20])
    extra = [gg_tinfo(f"blk.{i}.attn_norm.weight", t["dims"], t["type"], t["offset"]) for i in range(n)]
    key = f"{L.arch}.block_count"
    kvs = _gg_replace_kv(L, key, gg_kv(key, 4, blocks)) if L.kv(key) else L.kv_blobs()
    c.write(_gg_rebuild(L, kvs=kvs, tinfos=L.tinfo_blobs() + extra))
    return f"{n} extra norm tensors, block_count={blocks}"


def gguf_duplicate(c: MutCtx, L: GGUFLayout) -> str:
    if c.rng.random() < 0.5:
        i = c.rng.randrange(len(L.kvs))
        kvs = L.kv_blobs()
        kvs.insert(i, kvs[i])
        c.write(_gg_rebuild(L, kvs=kvs))
        return f"duplicate key {L.kvs[i]['key']}"
    i = L.tensors.index(c.rng.choice(L.norm_tensors()))
    tinfos = L.tinfo_blobs()
    tinfos.insert(i, tinfos[i])
    c.write(_gg_rebuild(L, tinfos=tinfos))
    return f"duplicate tensor {L.tensors[i]['name']}"


def gguf_blind(c: MutCtx, L: GGUFLayout | None) -> str:
    data = c.read()
    region = (0, L.infos_end) if L is not None else (0, min(len(data), 8192))
    donor = c.rng.choice(sources("gguf")).read_bytes()
    out, desc = mutate_bytes(data, c.rng, region, donor)
    c.write(out)
    return desc


GGUF_MUTATIONS: list[tuple[str, float, Callable]] = [
    ("blind", 3.0, gguf_blind),
    ("header_counts", 1.0, gguf_header_counts),
    ("version", 0.3, gguf_version),
    ("kv_type", 1.0, gguf_kv_type),
    ("kv_retype", 1.5, gguf_kv_retype),
    ("array_count", 1.0, gguf_array_count),
    ("string_len", 1.0, gguf_string_len),
    ("block_count", 0.8, gguf_block_count),
    ("tensor_ndims", 1.0, gguf_tensor_ndims),
    ("tensor_dims", 1.5, gguf_tensor_dims),
    ("tensor_type", 1.5, gguf_tensor_type),
    ("tensor_offset", 1.0, gguf_tensor_offset),
    ("norm_int_type", 1.0, gguf_norm_retype_consistent),
    ("zero_size", 0.7, gguf_zero_size),
    ("alignment", 0.8, gguf_alignment),
    ("eps_special", 0.5, gguf_eps_special),
    ("arch", 0.6, gguf_arch),
    ("tensor_names", 0.6, gguf_tensor_names),
    ("many_tensors", 0.3, gguf_many_tensors),
    ("duplicate", 0.5, gguf_duplicate),
]


def mutate_gguf(c: MutCtx, name: str, fn: Callable) -> str:
    return fn(c, GGUFLayout(c.read()))


# ================================================================================================
# ONNX
# ================================================================================================

_ONNX_CACHE: dict[str, bytes] = {}


def _onnx_model(src: Path):
    import onnx

    key = str(src)
    if key not in _ONNX_CACHE:
        _ONNX_CACHE[key] = src.read_bytes()
    return onnx.ModelProto.FromString(_ONNX_CACHE[key])


def _onnx_save(c: MutCtx, m: Any, replace: dict[bytes, bytes] | None = None) -> None:
    data = m.SerializeToString()
    for old, new in (replace or {}).items():
        data = data.replace(old, new)
    c.write(data)


def _norm_inits(m: Any, c: MutCtx) -> list[Any]:
    """Norm weights mostly; any initializer (conv weights a BatchNorm was folded into...) a quarter of the time."""
    if c.rng.random() < 0.25 and len(m.graph.initializer):
        return list(m.graph.initializer)
    names = set(norm_tensor_names(c.src))
    inits = [t for t in m.graph.initializer if t.name in names]
    return inits or [t for t in m.graph.initializer if len(t.dims) == 1] or list(m.graph.initializer)


def _norm_nodes(m: Any, c: MutCtx) -> list[Any]:
    names = set(norm_node_names(c.src))
    nodes = [n for n in m.graph.node if n.name in names or (n.output and n.output[0] in names)]
    return nodes or [n for n in m.graph.node if "Norm" in n.op_type] or list(m.graph.node)


def _nbytes(t: Any) -> int:
    return len(t.raw_data) if t.HasField("raw_data") else 4 * max(int(np.prod(list(t.dims) or [1])), 1)


def _set_external(t: Any, location: str, offset: Any = None, length: Any = None, extra: dict | None = None) -> None:
    from onnx import TensorProto

    for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "string_data", "uint64_data"):
        t.ClearField(f)
    del t.external_data[:]
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location}
    if offset is not None:
        entries["offset"] = str(offset)
    if length is not None:
        entries["length"] = str(length)
    entries.update(extra or {})
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v


def _external_variant(c: MutCtx, t: Any, cwd_relative: bool = False) -> str:
    """Point tensor ``t`` at external data somewhere (inside, outside, odd files); returns the variant."""
    rng = c.rng
    nbytes = _nbytes(t)
    raw = bytes(t.raw_data) if t.HasField("raw_data") else np.zeros(nbytes // 4, np.float32).tobytes()
    planted = c.planted_bin()
    md = c.model_dir
    variants = ["inside_ok", "dotdot", "abs", "symlink", "symlink_dir", "fifo", "symlink_fifo", "nul", "dir",
                "empty", "self", "offset_beyond", "length_beyond", "offset_neg", "offset_text", "length_huge",
                "devzero", "long", "unknown_keys", "basepath", "cwd"]
    v = "cwd" if cwd_relative and rng.random() < 0.5 else rng.choice(variants)
    if v == "inside_ok":
        (md / "weights.bin").write_bytes(raw)
        _set_external(t, "weights.bin", 0, len(raw))
    elif v == "dotdot":
        _set_external(t, "../outside/planted.bin", 0, nbytes)
    elif v == "abs":
        _set_external(t, str(planted), 0, nbytes)
    elif v == "symlink":
        os.symlink(planted, md / "link.bin")
        _set_external(t, "link.bin", 0, nbytes)
    elif v == "symlink_dir":
        os.symlink(c.outside, md / "sub")
        _set_external(t, "sub/planted.bin", 0, nbytes)
    elif v == "fifo":
        os.mkfifo(md / "fifo.bin")
        _set_external(t, "fifo.bin", 0, nbytes)
    elif v == "symlink_fifo":
        os.mkfifo(c.outside / "fifo.bin")
        os.symlink(c.outside / "fifo.bin", md / "ff.bin")
        _set_external(t, "ff.bin")
    elif v == "nul":
        (md / "w").write_bytes(raw)
        _set_external(t, rng.choice(["w\x00.bin", "w\x00", "\x00"]), 0, nbytes)
    elif v == "dir":
        (md / "sub").mkdir(exist_ok=True)
        _set_external(t, rng.choice([".", "sub", "sub/"]))
    elif v == "empty":
        _set_external(t, "")
    elif v == "self":
        _set_external(t, c.target.name, rng.choice([0, 16, 4096]), nbytes)
    elif v in ("offset_beyond", "length_beyond", "offset_neg", "offset_text", "length_huge"):
        (md / "weights.bin").write_bytes(raw)
        off, ln = {"offset_beyond": (len(raw) + 100, nbytes), "length_beyond": (0, len(raw) * 10 + 4),
                   "offset_neg": (-4, nbytes), "offset_text": (rng.choice(["abc", "1e3", "0x10", " 1", ""]), nbytes),
                   "length_huge": (0, rng.choice([2**62, 2**40, 2**31]))}[v]
        _set_external(t, "weights.bin", off, ln)
    elif v == "devzero":
        os.symlink("/dev/zero", md / "zero.bin")
        _set_external(t, rng.choice(["zero.bin", "/dev/zero"]), 0, nbytes)
    elif v == "long":
        _set_external(t, "a" * rng.choice([255, 256, 5000, 100000]) + ".bin")
    elif v == "unknown_keys":
        (md / "weights.bin").write_bytes(raw)
        _set_external(t, "weights.bin", 0, len(raw), {f"k{i}": "v" * 50 for i in range(rng.choice([1, 20, 2000]))})
    elif v == "basepath":
        (md / "weights.bin").write_bytes(raw)
        _set_external(t, "weights.bin", 0, len(raw), {"basepath": str(c.outside)})
    else:  # cwd: a relative location, resolved against the current directory by readers without a base dir
        _set_external(t, "planted.bin", 0, nbytes)
    return v


def _to_constant_node(m: Any, name: str) -> Any | None:
    """Move initializer ``name`` into a Constant node; returns the Constant's value TensorProto."""
    from onnx import helper

    for i, t in enumerate(m.graph.initializer):
        if t.name == name:
            node = helper.make_node("Constant", [], [name], name=f"fuzz_const_{i}", value=t)
            del m.graph.initializer[i]
            m.graph.node.insert(0, node)
            return node.attribute[0].t
    return None


def _eps_constants(m: Any, c: MutCtx) -> list[Any]:
    """Constant nodes (or initializers) feeding the Add(eps) of decomposed norms."""
    producers = {o: n for n in m.graph.node for o in n.output}
    inits = {t.name: t for t in m.graph.initializer}
    out = []
    for node in _norm_nodes(m, c):
        if node.op_type != "Add":
            continue
        for inp in node.input:
            p = producers.get(inp)
            if p is not None and p.op_type == "Constant":
                out.append(("node", p))
            elif inp in inits and int(np.prod(list(inits[inp].dims) or [1])) == 1:
                out.append(("init", inits[inp]))
    return out


def onnx_external(c: MutCtx) -> str:
    m = _onnx_model(c.src)
    t = c.rng.choice(_norm_inits(m, c))
    v = _external_variant(c, t)
    _onnx_save(c, m)
    return f"initializer {t.name}: {v}"


def onnx_constant_external(c: MutCtx) -> str:
    """External data on a Constant node's value tensor (a norm weight or an eps constant)."""
    m = _onnx_model(c.src)
    eps = _eps_constants(m, c)
    if eps and c.rng.random() < 0.5:
        kind, obj = c.rng.choice(eps)
        if kind == "node":
            t = next(a.t for a in obj.attribute if a.name == "value") if any(
                a.name == "value" for a in obj.attribute) else None
            what = f"eps Constant {obj.name or obj.output[0]}"
        else:
            t = _to_constant_node(m, obj.name)
            what = f"eps initializer {obj.name} as Constant"
    else:
        name = c.rng.choice(_norm_inits(m, c)).name
        t = _to_constant_node(m, name)
        what = f"norm weight {name} as Constant"
    if t is None:
        return onnx_external(c)
    v = _external_variant(c, t, cwd_relative=True)
    _onnx_save(c, m)
    return f"{what}: {v}"


def onnx_init_dims(c: MutCtx) -> str:
    m = _onnx_model(c.src)
    t = c.rng.choice(_norm_inits(m, c))
    dims = list(t.dims)
    n = dims[0] if dims else 1
    new = c.rng.choice([[n * 2], [n + 1], [0], [-1], [2**40], [2**31, 2**31], [n, 1], [], [1] * 100, [n, -1],
                        [-n], [2**63 - 1]])
    del t.dims[:]
    t.dims.extend(new)
    _onnx_save(c, m)
    return f"{t.name} dims {dims}->{new}"


def onnx_init_dtype(c: MutCtx) -> str:
    m = _onnx_model(c.src)
    t = c.rng.choice(_norm_inits(m, c))
    v = c.rng.choice([0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
                      99, 2**31 - 1])
    old = t.data_type
    t.data_type = v
    _onnx_save(c, m)
    return f"{t.name} data_type {old}->{v}"


def onnx_init_payload(c: MutCtx) -> str:
    m = _onnx_model(c.src)
    t = c.rng.choice(_norm_inits(m, c))
    raw = bytes(t.raw_data)
    v = c.rng.choice(["truncate", "extend", "odd", "float_data", "both", "empty", "segment", "string_data"])
    if v == "truncate":
        t.raw_data = raw[:c.rng.randrange(max(len(raw), 1))]
    elif v == "extend":
        t.raw_data = raw + raw
    elif v == "odd":
        t.raw_data = raw[:-1] if raw else b"\x01"
    elif v == "float_data":
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * c.rng.choice([0, 1, 3, 1000]))
    elif v == "both":
        t.float_data.extend([1.0] * 4)
    elif v == "empty":
        t.ClearField("raw_data")
    elif v == "segment":
        t.segment.begin, t.segment.end = 0, 1
    else:
        t.string_data.extend([b"\xff\xfe", b"1.0"])
    _onnx_save(c, m)
    return f"{t.name}: {v}"


def onnx_sparse(c: MutCtx) -> str:
    """A norm weight as a sparse initializer, or as a Constant with sparse_value."""
    from onnx import helper, numpy_helper

    m = _onnx_model(c.src)
    t = c.rng.choice(_norm_inits(m, c))
    dims = list(t.dims) or [1]
    n = int(np.prod(dims))
    idx_n = c.rng.choice([1, n, n + 5])
    values = numpy_helper.from_array(np.ones(min(idx_n, max(n, 1)), np.float32), t.name)
    indices = numpy_helper.from_array(np.asarray(
        c.rng.choice([list(range(idx_n)), [2**40] * idx_n, [-1] * idx_n]), np.int64)[:idx_n])
    sp = helper.make_sparse_tensor(values, indices, c.rng.choice([dims, [2**40], []]))
    if c.rng.random() < 0.5:
        for i, x in enumerate(m.graph.initializer):
            if x.name == t.name:
                del m.graph.initializer[i]
                break
        m.graph.sparse_initializer.append(sp)
        what = "sparse_initializer"
    else:
        for i, x in enumerate(m.graph.initializer):
            if x.name == t.name:
                del m.graph.initializer[i]
                break
        m.graph.node.insert(0, helper.make_node("Constant", [], [t.name], name="fuzz_sparse", sparse_value=sp))
        what = "Constant sparse_value"
    _onnx_save(c, m)
    return f"{t.name} as {what}"


def onnx_constant_attr(c: MutCtx) -> str:
    """Odd Constant attributes: value_* lists, strings, wrong attribute types, huge lists."""
    from onnx import AttributeProto, helper

    m = _onnx_model(c.src)
    name = c.rng.choice(_norm_inits(m, c)).name
    eps = _eps_constants(m, c)
    if eps and c.rng.random() < 0.5:
        kind, obj = c.rng.choice(eps)
        if kind == "node":
            name = obj.output[0]
            m.graph.node.remove(obj)
        else:
            name = obj.name
            m.graph.initializer.remove(obj)
    else:
        for i, x in enumerate(m.graph.initializer):
            if x.name == name:
                del m.graph.initializer[i]
                break
    rng = c.rng
    v = rng.choice(["value_float", "value_floats", "value_floats_huge", "value_int", "value_ints", "value_string",
                    "value_strings", "none", "two", "wrong_type", "nan", "graph"])
    if v == "value_float":
        node = helper.make_node("Constant", [], [name], value_float=rng.choice([1e-6, float("nan"), 3.4e38]))
    elif v == "value_floats":
        node = helper.make_node("Constant", [], [name], value_floats=[1.0] * rng.choice([0, 1, 3, 64]))
    elif v == "value_floats_huge":
        node = helper.make_node("Constant", [], [name], value_floats=[1.0] * rng.choice([10**5, 10**6]))
    elif v == "value_int":
        node = helper.make_node("Constant", [], [name], value_int=interesting_int(rng, 64, signed=True))
    elif v == "value_ints":
        node = helper.make_node("Constant", [], [name], value_ints=[2**62, -1, 0])
    elif v == "value_string":
        node = helper.make_node("Constant", [], [name], value_string="1e-6")
    elif v == "value_strings":
        node = helper.make_node("Constant", [], [name], value_strings=["a", "b"])
    elif v == "none":
        node = helper.make_node("Constant", [], [name])
    elif v == "two":
        node = helper.make_node("Constant", [], [name], value_float=1.0, value_ints=[1, 2])
    elif v == "graph":
        node = helper.make_node("Constant", [], [name])
        a = node.attribute.add()
        a.name, a.type = "value", AttributeProto.GRAPH
        a.g.name = "sub"
    else:
        node = helper.make_node("Constant", [], [name], value_float=1.0)
        node.attribute[0].type = rng.choice([AttributeProto.TENSOR, AttributeProto.STRING, AttributeProto.INTS,
                                             AttributeProto.UNDEFINED])
        if v == "nan":
            node.attribute[0].name = "value"
    node.name = "fuzz_const"
    m.graph.node.insert(0, node)
    _onnx_save(c, m)
    return f"{name}: Constant {v}"


def onnx_norm_attr(c: MutCtx) -> str:
    """epsilon / axis / num_groups attributes of norm nodes: other types, odd values."""
    from onnx import AttributeProto, helper

    m = _onnx_model(c.src)
    fused = [n for n in m.graph.node if "Norm" in n.op_type] or _norm_nodes(m, c)
    node = c.rng.choice(fused)
    rng = c.rng
    attr = rng.choice(["epsilon", "epsilon", "axis", "num_groups", "stash_type", "momentum"])
    keep = [a for a in node.attribute if a.name != attr]
    del node.attribute[:]
    node.attribute.extend(keep)
    v = rng.choice(["float_odd", "int", "ints", "string", "tensor", "graph", "floats", "bad_type", "dup"])
    if v == "float_odd":
        a = helper.make_attribute(attr, rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e38, 1e-45]))
    elif v == "int":
        a = helper.make_attribute(attr, interesting_int(rng, 64, signed=True))
    elif v == "ints":
        a = helper.make_attribute(attr, [1, 2, 3])
    elif v == "string":
        a = helper.make_attribute(attr, rng.choice(["1e-5", "", "x" * 1000]))
    elif v == "tensor":
        from onnx import numpy_helper

        a = helper.make_attribute(attr, numpy_helper.from_array(np.array([1e-5, 2e-5], np.float32)))
    elif v == "graph":
        a = AttributeProto(name=attr, type=AttributeProto.GRAPH)
        a.g.name = "g"
    elif v == "floats":
        a = AttributeProto(name=attr, type=AttributeProto.FLOATS)
    elif v == "bad_type":
        a = helper.make_attribute(attr, 1e-5)
        a.type = rng.choice([AttributeProto.UNDEFINED, AttributeProto.SPARSE_TENSOR, AttributeProto.TENSOR])
    else:
        a = helper.make_attribute(attr, 1e-5)
        node.attribute.append(helper.make_attribute(attr, 2))
    node.attribute.append(a)
    _onnx_save(c, m)
    return f"{node.op_type} {node.name}: {attr} {v}"


def onnx_dequantize(c: MutCtx) -> str:
    """A norm weight through DequantizeLinear with scales / zero points / axis of the wrong shape."""
    from onnx import helper, numpy_helper

    m = _onnx_model(c.src)
    t = c.rng.choice(_norm_inits(m, c))
    try:
        w = numpy_helper.to_array(t).astype(np.float32)
    except Exception:
        w = np.ones(list(t.dims) or [4], np.float32)
    rng = c.rng
    n = int(w.shape[0]) if w.ndim else 1
    q = np.clip(np.round(w * 100), -127, 127).astype(np.int8)
    scale_shape = rng.choice([(), (n,), (3,), (n + 1,), (2, n), (0,), (1,), (n, 1)])
    scale = np.full(scale_shape, 0.01, np.float32)
    inputs = [t.name + "_q", t.name + "_scale"]
    inits = [numpy_helper.from_array(q, inputs[0]), numpy_helper.from_array(scale, inputs[1])]
    zp = rng.choice([None, (), (n,), (5,), "f32"])
    if zp is not None:
        zarr = np.zeros(4, np.float32) if zp == "f32" else np.zeros(zp, np.int8)
        inputs.append(t.name + "_zp")
        inits.append(numpy_helper.from_array(zarr, inputs[2]))
    kwargs = {}
    axis = rng.choice([None, 0, 1, 5, -3, 2**40])
    if axis is not None:
        kwargs["axis"] = axis
    if rng.random() < 0.2:
        kwargs["block_size"] = rng.choice([0, 3, -1])
    for i, x in enumerate(m.graph.initializer):
        if x.name == t.name:
            del m.graph.initializer[i]
            break
    m.graph.initializer.extend(inits)
    m.graph.node.insert(0, helper.make_node("DequantizeLinear", inputs, [t.name], name="fuzz_dql", **kwargs))
    _onnx_save(c, m)
    return f"{t.name}: scale {scale_shape} zp {zp} axis {axis}"


def onnx_identity(c: MutCtx) -> str:
    """Identity cycles and long Identity chains in front of a norm weight."""
    from onnx import helper

    m = _onnx_model(c.src)
    t = c.rng.choice(_norm_inits(m, c))
    consumers = [n for n in m.graph.node if t.name in n.input]
    if not consumers:
        return onnx_blind(c)
    node = c.rng.choice(consumers)
    v = c.rng.choice(["cycle", "self", "chain"])
    if v == "cycle":
        new = [helper.make_node("Identity", ["fz_b"], ["fz_a"], name="fz_i1"),
               helper.make_node("Identity", ["fz_a"], ["fz_b"], name="fz_i2")]
        head = "fz_a"
    elif v == "self":
        new = [helper.make_node("Identity", ["fz_a"], ["fz_a"], name="fz_i")]
        head = "fz_a"
    else:
        k = c.rng.choice([100, 2000, 30000])
        new = [helper.make_node("Identity", [t.name if i == 0 else f"fz_{i - 1}"], [f"fz_{i}"], name=f"fz_i{i}")
               for i in range(k)]
        head = f"fz_{k - 1}"
        v += str(k)
    for i, x in enumerate(node.input):
        if x == t.name:
            node.input[i] = head
    for n in reversed(new):
        m.graph.node.insert(0, n)
    _onnx_save(c, m)
    return f"{t.name} -> {node.op_type}: {v}"


def onnx_huge(c: MutCtx) -> str:
    from onnx import helper

    m = _onnx_model(c.src)
    v = c.rng.choice(["norms", "nodes", "inputs", "names"])
    if v == "norms":
        t = c.rng.choice(_norm_inits(m, c))
        k = c.rng.choice([1000, 10000, 50000])
        proto = helper.make_node("LayerNormalization", ["x", t.name], ["y"], epsilon=1e-5)
        for i in range(k):
            n = m.graph.node.add()
            n.CopyFrom(proto)
            n.output[0] = f"fz_y{i}"
            n.name = f"fz_ln{i}"
        v += str(k)
    elif v == "nodes":
        k = c.rng.choice([10000, 100000])
        proto = helper.make_node("Relu", ["x"], ["y"])
        for i in range(k):
            n = m.graph.node.add()
            n.CopyFrom(proto)
            n.output[0] = f"fz_{i}"
        v += str(k)
    elif v == "inputs":
        node = c.rng.choice(_norm_nodes(m, c))
        node.input.extend([""] * c.rng.choice([1000, 100000]))
    else:
        node = c.rng.choice(_norm_nodes(m, c))
        node.name = "/" + "/".join(["m"] * c.rng.choice([10000, 200000])) + "/x"
    _onnx_save(c, m)
    return v


def onnx_metadata(c: MutCtx) -> str:
    """pkg.torch.onnx.name_scopes / class_hierarchy metadata that literal_eval chokes on."""
    m = _onnx_model(c.src)
    node = c.rng.choice(_norm_nodes(m, c))
    key = c.rng.choice(["pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy"])
    v = c.rng.choice(["[" * 5000, "[" * 100 + "]" * 100, "(" * 300 + ")" * 300, "1e999", "[None, None]",
                      "['a', " + "'b', " * 200000 + "]", "[1, 2]", "{'a': 1}", "'x'", "[[], []]", "-" * 100000 + "1",
                      "[" + ",".join(["[1]"] * 1000) + "]", "b'\\xff'", "[1j, 2j]", ""])
    for p in list(node.metadata_props):
        if p.key == key:
            node.metadata_props.remove(p)
    p = node.metadata_props.add()
    p.key, p.value = key, v
    if c.rng.random() < 0.5:  # the same on every node
        for n in m.graph.node[:60]:
            q = n.metadata_props.add()
            q.key, q.value = key, v
    _onnx_save(c, m)
    return f"{key}={v[:30]!r}"


def onnx_bad_utf8(c: MutCtx) -> str:
    """Invalid UTF-8 in a string field, written as raw protobuf bytes."""
    m = _onnx_model(c.src)
    rng = c.rng
    where = rng.choice(["node.name", "node.name", "tensor", "metadata", "op_type", "domain", "producer", "doc",
                        "graph.name", "opset_domain"])
    ph = "FZPH" + "".join(rng.choice("ABCDEFGHJK") for _ in range(8))  # 12 ASCII bytes, unique
    bad = rng.choice([b"\xff\xfe\xfd\xfc", b"\xc3\x28\xa0\xa1", b"\xed\xa0\x80\x80", b"\xf8\x88\x80\x80"]) * 3
    node = rng.choice(_norm_nodes(m, c))
    if where == "node.name":
        node.name = ph
    elif where == "tensor":
        t = rng.choice(_norm_inits(m, c))
        for n in m.graph.node:
            for i, x in enumerate(n.input):
                if x == t.name:
                    n.input[i] = ph
        t.name = ph
    elif where == "metadata":
        p = node.metadata_props.add()
        p.key, p.value = rng.choice(["pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy"]), ph
    elif where == "op_type":
        node.op_type = ph
    elif where == "domain":
        node.domain = ph
    elif where == "producer":
        m.producer_name = ph
    elif where == "doc":
        m.doc_string = ph
    elif where == "graph.name":
        m.graph.name = ph
    else:
        o = m.opset_import.add()
        o.domain, o.version = ph, 1
    _onnx_save(c, m, {ph.encode(): bad})
    return f"invalid UTF-8 in {where}"


def onnx_op_swap(c: MutCtx) -> str:
    m = _onnx_model(c.src)
    ops = [("", "LayerNormalization"), ("", "RMSNormalization"), ("", "BatchNormalization"),
           ("", "GroupNormalization"), ("", "InstanceNormalization"), ("com.microsoft", "SkipLayerNormalization"),
           ("com.microsoft", "SimplifiedLayerNormalization"), ("com.microsoft", "EmbedLayerNormalization"),
           ("com.microsoft", "GroupNorm"), ("com.microsoft", "SkipSimplifiedLayerNormalization"), ("", "Add"),
           ("", "ReduceMean"), ("", "DequantizeLinear"), ("", "Constant"), ("", "Identity"), ("", "Sqrt")]
    k = c.rng.choice([1, 3, 20])
    done = []
    for _ in range(k):
        node = c.rng.choice(list(m.graph.node))
        dom, op = c.rng.choice(ops)
        done.append(f"{node.op_type}->{op}")
        node.op_type, node.domain = op, dom
    _onnx_save(c, m)
    return ", ".join(done[:3])


def onnx_node_io(c: MutCtx) -> str:
    m = _onnx_model(c.src)
    node = c.rng.choice(_norm_nodes(m, c))
    v = c.rng.choice(["no_inputs", "no_outputs", "empty_inputs", "dup_output", "self_loop", "unknown_input"])
    if v == "no_inputs":
        del node.input[:]
    elif v == "no_outputs":
        del node.output[:]
    elif v == "empty_inputs":
        for i in range(len(node.input)):
            node.input[i] = ""
    elif v == "dup_output":
        other = c.rng.choice(list(m.graph.node))
        if other.output and node.output:
            node.output[0] = other.output[0]
    elif v == "self_loop":
        if node.output and node.input:
            node.input[0] = node.output[0]
    else:
        if node.input:
            node.input[-1] = "does_not_exist"
    _onnx_save(c, m)
    return f"{node.op_type} {node.name}: {v}"


def onnx_functions(c: MutCtx) -> str:
    """Local functions: a norm moved into a function body, recursive functions, odd bodies."""
    from onnx import helper

    m = _onnx_model(c.src)
    node = c.rng.choice(_norm_nodes(m, c))
    v = c.rng.choice(["moved", "recursive", "garbage"])
    if v == "moved":
        body = helper.make_node(node.op_type, [f"i{i}" for i in range(len(node.input))], ["o"],
                                domain=node.domain)
        body.attribute.extend(node.attribute)
        f = helper.make_function("fz", "NormF", [f"i{i}" for i in range(len(node.input))], ["o"], [body],
                                 [helper.make_opsetid("", 18)])
        m.functions.append(f)
        node.op_type, node.domain = "NormF", "fz"
        del node.attribute[:]
        del node.output[1:]
    elif v == "recursive":
        call = helper.make_node("Rec", ["x"], ["y"], domain="fz")
        m.functions.append(helper.make_function("fz", "Rec", ["x"], ["y"], [call], [helper.make_opsetid("", 18)]))
        node.op_type, node.domain = "Rec", "fz"
    else:
        f = helper.make_function("fz", "G", ["x"], ["y"], [node], [helper.make_opsetid("", 18)])
        f.node[0].input.extend(["nope"] * 10)
        m.functions.append(f)
    o = m.opset_import.add()
    o.domain, o.version = "fz", 1
    _onnx_save(c, m)
    return v


def onnx_proto_fields(c: MutCtx) -> str:
    """Generic: one scalar field somewhere in the ModelProto gets a boundary value."""
    from google.protobuf.descriptor import FieldDescriptor as FD

    m = _onnx_model(c.src)
    rng = c.rng
    cands: list[tuple[Any, Any]] = []
    stack = [m]
    seen = 0
    while stack and seen < 20000:
        msg = stack.pop()
        seen += 1
        for fd, val in msg.ListFields():
            if fd.type == FD.TYPE_MESSAGE:
                if _repeated(fd):
                    items = list(val)
                    stack.extend(rng.sample(items, min(len(items), 30)))
                else:
                    stack.append(val)
            else:
                cands.append((msg, fd))
    if not cands:
        return onnx_blind(c)
    msg, fd = rng.choice(cands)
    ints = (FD.TYPE_INT32, FD.TYPE_INT64, FD.TYPE_UINT64, FD.TYPE_UINT32, FD.TYPE_SINT64, FD.TYPE_SINT32)
    try:
        if _repeated(fd):
            rep = getattr(msg, fd.name)
            op = rng.choice(["clear", "dup", "set"])
            if op == "clear":
                del rep[:]
            elif op == "dup" and len(rep):
                rep.extend(list(rep)[: rng.choice([1, 100])])
            elif len(rep):
                i = rng.randrange(len(rep))
                if fd.type in ints:
                    rep[i] = _fit(interesting_int(rng, 64, signed=True), fd)
                elif fd.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
                    rep[i] = rng.choice([float("nan"), float("inf"), -1e38])
                elif fd.type == FD.TYPE_STRING:
                    rep[i] = rng.choice(["", "x" * 5000, "../x", "a\x00b"])
            desc = f"{type(msg).__name__}.{fd.name}[] {op}"
        else:
            if fd.type in ints:
                val: Any = _fit(interesting_int(rng, 64, signed=True), fd)
            elif fd.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
                val = rng.choice([float("nan"), float("inf"), -1e38, 0.0])
            elif fd.type == FD.TYPE_STRING:
                val = rng.choice(["", "x" * 5000, "../x", "a\x00b", "LayerNormalization"])
            elif fd.type == FD.TYPE_BYTES:
                cur = getattr(msg, fd.name)
                val = cur[: rng.randrange(len(cur) + 1)] if cur else b"\x00"
            elif fd.type == FD.TYPE_ENUM:
                val = rng.choice([v.number for v in fd.enum_type.values])
            elif fd.type == FD.TYPE_BOOL:
                val = not getattr(msg, fd.name)
            else:
                return onnx_blind(c)
            setattr(msg, fd.name, val)
            desc = f"{type(msg).__name__}.{fd.name}={str(val)[:24]!r}"
    except (ValueError, TypeError):
        return onnx_blind(c)
    _onnx_save(c, m)
    return desc


def _repeated(fd: Any) -> bool:
    rep = getattr(fd, "is_repeated", None)
    return bool(rep) if rep is not None else fd.label == fd.LABEL_REPEATED


def _fit(v: int, fd: Any) -> int:
    from google.protobuf.descriptor import FieldDescriptor as FD

    if fd.type in (FD.TYPE_INT32, FD.TYPE_SINT32):
        return max(-(2**31), min(2**31 - 1, v))
    if fd.type == FD.TYPE_UINT32:
        return v % 2**32
    if fd.type == FD.TYPE_UINT64:
        return v % 2**64
    return max(-(2**63), min(2**63 - 1, v))


def _pb_field(num: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    def varint(v: int) -> bytes:
        out = b""
        while True:
            b, v = v & 0x7F, v >> 7
            out += bytes([b | (0x80 if v else 0)])
            if not v:
                return out
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def onnx_nested(c: MutCtx) -> str:
    """Deeply nested subgraphs (If then_branch) written as raw protobuf, appended to the main graph."""
    depth = c.rng.choice([50, 99, 101, 200, 5000, 50000])
    graph = b""
    for _ in range(depth):
        attr = _pb_field(1, b"then_branch") + _pb_field(6, graph) + b"\xa0\x01\x05"  # name, g, type=GRAPH
        node = _pb_field(1, b"cond") + _pb_field(2, b"o") + _pb_field(4, b"If") + _pb_field(5, attr)
        graph = _pb_field(1, node)
    data = _onnx_model(c.src).SerializeToString() + _pb_field(7, graph)  # merged into ModelProto.graph
    c.write(data)
    return f"If nesting depth {depth}"


def onnx_blind(c: MutCtx) -> str:
    data = c.read()
    donor = c.rng.choice(sources("onnx")).read_bytes()
    out, desc = mutate_bytes(data, c.rng, None, donor)
    c.write(out)
    return desc


ONNX_MUTATIONS: list[tuple[str, float, Callable]] = [
    ("blind", 2.0, onnx_blind),
    ("external", 2.5, onnx_external),
    ("constant_external", 2.0, onnx_constant_external),
    ("init_dims", 1.0, onnx_init_dims),
    ("init_dtype", 1.0, onnx_init_dtype),
    ("init_payload", 1.0, onnx_init_payload),
    ("sparse", 0.6, onnx_sparse),
    ("constant_attr", 1.0, onnx_constant_attr),
    ("norm_attr", 1.0, onnx_norm_attr),
    ("dequantize", 1.0, onnx_dequantize),
    ("identity", 0.7, onnx_identity),
    ("huge", 0.3, onnx_huge),
    ("metadata", 0.7, onnx_metadata),
    ("bad_utf8", 1.0, onnx_bad_utf8),
    ("op_swap", 0.8, onnx_op_swap),
    ("node_io", 0.8, onnx_node_io),
    ("functions", 0.4, onnx_functions),
    ("proto_fields", 1.5, onnx_proto_fields),
    ("nested", 0.3, onnx_nested),
]


# ================================================================================================
# safetensors and Hugging Face folders
# ================================================================================================

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
              "BOOL": np.bool_}


def st_parse(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack_from("<Q", data, 0)[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def st_build(header: Any, body: bytes, n_override: int | None = None, raw_header: bytes | None = None) -> bytes:
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h) if n_override is None else n_override & (2**64 - 1)) + h + body


def _st_decode(dtype: str, raw: bytes) -> np.ndarray:
    if dtype == "BF16":
        u = np.frombuffer(raw[: len(raw) // 2 * 2], np.uint16).astype(np.uint32) << 16
        return u.view(np.float32)
    return np.frombuffer(raw, _ST_DTYPES.get(dtype, np.float32)).astype(np.float32)


def st_rewrite(tensors: list[tuple[str, str, list[int], bytes]], metadata: dict | None = None) -> bytes:
    """A consistent safetensors file (offsets computed) from (name, dtype, shape, bytes)."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    body = b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    return st_build(header, body)


def _st_tensors(data: bytes) -> tuple[list[tuple[str, str, list[int], bytes]], dict | None]:
    hdr, body = st_parse(data)
    out = []
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out.append((k, v["dtype"], list(v["shape"]), body[b:e]))
    return out, hdr.get("__metadata__")


def _st_norm_key(c: MutCtx, hdr: dict) -> str:
    names = [n for n in norm_tensor_names(c.src) if n in hdr]
    keys = [k for k in hdr if k != "__metadata__"]
    return c.rng.choice(names if names and c.rng.random() < 0.8 else keys)


def st_offsets(c: MutCtx, path: Path) -> str:
    data = path.read_bytes()
    hdr, body = st_parse(data)
    k = _st_norm_key(c, hdr)
    b, e = hdr[k]["data_offsets"]
    size = len(body)
    v = c.rng.choice([[b, size + 4], [e, b], [b, b], [0, e - b], [-4, e], [b, 2**64 - 1], [2**63, 2**63 + 4],
                      [b + 1, e + 1], [str(b), e], [b * 1.0 + 0.5, e], [b, e, 7], [], None, [b, size * 2]])
    hdr[k]["data_offsets"] = v
    path.write_bytes(st_build(hdr, body))
    return f"{k} data_offsets {[b, e]}->{v}"


def st_dtype(c: MutCtx, path: Path) -> str:
    data = path.read_bytes()
    hdr, body = st_parse(data)
    k = _st_norm_key(c, hdr)
    old = hdr[k]["dtype"]
    v = c.rng.choice(["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL",
                      "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64", "XX", "", 5, None])
    hdr[k]["dtype"] = v
    path.write_bytes(st_build(hdr, body))
    return f"{k} dtype {old}->{v} (bytes unchanged)"


def st_dtype_consistent(c: MutCtx, path: Path) -> str:
    """A norm tensor re-stored in another dtype, offsets recomputed: a valid file."""
    tensors, meta = _st_tensors(path.read_bytes())
    names = set(norm_tensor_names(c.src))
    idx = [i for i, t in enumerate(tensors) if t[0] in names] or list(range(len(tensors)))
    i = c.rng.choice(idx)
    name, dtype, shape, raw = tensors[i]
    vals = _st_decode(dtype, raw)
    v = c.rng.choice(["I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "F64", "BOOL", "F8_E4M3", "F8_E5M2"])
    if v.startswith("F8"):
        try:
            import ml_dtypes

            new = vals.astype(ml_dtypes.float8_e4m3fn if v == "F8_E4M3" else ml_dtypes.float8_e5m2).tobytes()
        except ImportError:
            v, new = "U8", vals.astype(np.uint8).tobytes()
    elif v == "BOOL":
        new = (vals != 0).astype(np.uint8).tobytes()
    else:
        new = (vals * c.rng.choice([1, 100])).astype(_ST_DTYPES[v]).tobytes()
    tensors[i] = (name, v, shape, new)
    path.write_bytes(st_rewrite(tensors, meta))
    return f"{name} stored as {v}"


def st_shape(c: MutCtx, path: Path) -> str:
    data = path.read_bytes()
    hdr, body = st_parse(data)
    k = _st_norm_key(c, hdr)
    old = hdr[k]["shape"]
    n = old[0] if old else 1
    v = c.rng.choice([[0], [n * 2], [], [n, 1], [2**40], [-1], [1.5], ["a"], [[n]], [n, 0], [2**32, 2**32],
                      None, {}, [n // 2], [2**64 - 1]])
    hdr[k]["shape"] = v
    path.write_bytes(st_build(hdr, body))
    return f"{k} shape {old}->{v}"


def st_zero_size(c: MutCtx, path: Path) -> str:
    """Valid file whose norm tensors have zero elements."""
    tensors, meta = _st_tensors(path.read_bytes())
    names = set(norm_tensor_names(c.src))
    k = c.rng.choice([1, 2, len(tensors)])
    hit = [i for i, t in enumerate(tensors) if t[0] in names][:k] or [0]
    for i in hit:
        name, dtype, shape, _ = tensors[i]
        tensors[i] = (name, dtype, c.rng.choice([[0], [0, 4]]), b"")
    path.write_bytes(st_rewrite(tensors, meta))
    return f"{len(hit)} norm tensors with zero elements"


def st_header_len(c: MutCtx, path: Path) -> str:
    data = path.read_bytes()
    n = struct.unpack_from("<Q", data, 0)[0]
    v = c.rng.choice([0, 1, 2, 7, n - 1, n + 1, n - 8, len(data) - 8, len(data), 2**32, 100 * 2**20 + 1,
                      2**63, 2**64 - 1])
    path.write_bytes(_patch(data, 0, "<Q", v))
    return f"header length {n}->{v}"


def st_json(c: MutCtx, path: Path) -> str:
    data = path.read_bytes()
    hdr, body = st_parse(data)
    rng = c.rng
    v = rng.choice(["list", "string", "number", "null", "garbage", "trailing", "nan", "dupkeys", "deep", "meta_huge",
                    "meta_types", "info_types", "bad_utf8", "many", "many_valid", "bom", "leading_space"])
    raw = None
    if v == "list":
        raw = b"[]"
    elif v == "string":
        raw = b'"x"'
    elif v == "number":
        raw = b"1"
    elif v == "null":
        raw = b"null"
    elif v == "garbage":
        raw = b"{" + rng.randbytes(64)
    elif v == "trailing":
        raw = json.dumps(hdr).encode() + b"}}]]"
    elif v == "nan":
        k = _st_norm_key(c, hdr)
        raw = json.dumps(hdr).encode().replace(json.dumps(hdr[k]["data_offsets"]).encode(), b"[NaN, Infinity]", 1)
    elif v == "dupkeys":
        k = _st_norm_key(c, hdr)
        raw = b"{" + json.dumps(k).encode() + b':{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' + \
            json.dumps(hdr).encode()[1:]
    elif v == "deep":
        d = rng.choice([200, 5000, 100000])
        raw = b'{"__metadata__":' + b'{"a":' * d + b"1" + b"}" * d + b"," + json.dumps(hdr).encode()[1:]
    elif v == "meta_huge":
        hdr["__metadata__"] = {"x": "y" * rng.choice([10**6, 20 * 10**6])}
    elif v == "meta_types":
        hdr["__metadata__"] = rng.choice([{"format": 1}, {"a": None}, [], "x", {"a": {"b": []}}])
    elif v == "info_types":
        k = _st_norm_key(c, hdr)
        hdr[k] = rng.choice([[], 1, "x", None, {}, {"dtype": "F32"}, {"dtype": "F32", "shape": [1]}])
    elif v == "bad_utf8":
        k = _st_norm_key(c, hdr)
        raw = json.dumps(hdr).encode().replace(json.dumps(k).encode(), b'"' + k.encode()[:-2] + b'\xff\xfe"', 1)
    elif v == "many":
        body_len = len(body)
        for i in range(rng.choice([1000, 100000])):
            hdr[f"model.layers.{i}.input_layernorm.weight"] = {"dtype": "F32", "shape": [0],
                                                                 "data_offsets": [body_len, body_len]}
    elif v == "many_valid":  # a consistent file with thousands of small norm tensors
        tensors, meta = _st_tensors(data)
        k = rng.choice([2000, 20000, 100000])
        one = np.ones(4, np.float32).tobytes()
        tensors += [(f"model.layers.{i}.input_layernorm.weight", "F32", [4], one) for i in range(k)]
        path.write_bytes(st_rewrite(tensors, meta))
        return f"{v} {k}"
    elif v == "bom":
        raw = b"\xef\xbb\xbf" + json.dumps(hdr).encode()
    else:
        raw = b" " * 8 + json.dumps(hdr).encode()
    path.write_bytes(st_build(hdr, body, raw_header=raw))
    return v


def st_names(c: MutCtx, path: Path) -> str:
    tensors, meta = _st_tensors(path.read_bytes())
    names = set(norm_tensor_names(c.src))
    idx = [i for i, t in enumerate(tensors) if t[0] in names] or [0]
    i = c.rng.choice(idx)
    name, dtype, shape, raw = tensors[i]
    v = c.rng.choice(["model.norm.weight", "x" * 100000 + ".norm.weight", "\u00e9.norm.weight", ".weight",
                      "layers.0.norm.running_var", "layers.0.norm.weight", "norm.weight\x00", "a.b.c.LayerNorm.gamma",
                      "model.layers.0.input_layernorm." + "weight" * 3])
    tensors[i] = (v, dtype, shape, raw)
    if c.rng.random() < 0.3:  # and a BatchNorm-looking sibling with mismatched shape
        tensors.append((v.rsplit(".", 1)[0] + ".running_var", "F32", [3], np.ones(3, np.float32).tobytes()))
    path.write_bytes(st_rewrite(tensors, meta))
    return f"{name} -> {v[:40]!r}"


def st_blind(c: MutCtx, path: Path) -> str:
    data = path.read_bytes()
    n = struct.unpack_from("<Q", data, 0)[0]
    out, desc = mutate_bytes(data, c.rng, (0, min(len(data), n + 8)), None)
    path.write_bytes(out)
    return desc


ST_MUTATIONS: list[tuple[str, float, Callable]] = [
    ("blind", 2.0, st_blind),
    ("offsets", 1.5, st_offsets),
    ("dtype", 1.5, st_dtype),
    ("dtype_consistent", 1.5, st_dtype_consistent),
    ("shape", 1.5, st_shape),
    ("zero_size", 1.0, st_zero_size),
    ("header_len", 1.0, st_header_len),
    ("json", 2.0, st_json),
    ("names", 1.0, st_names),
]


# -- config.json ----------------------------------------------------------------------------------

def config_mutation(c: MutCtx, path: Path) -> str:
    """config.json: wrong types, malformed, huge."""
    rng = c.rng
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        cfg = {}
    v = rng.choice(["types", "types", "types", "text_config", "malformed", "huge", "deep", "nonobject"])
    if v == "types":
        key = rng.choice(["rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "model_type",
                          "architectures", "num_hidden_layers", "hidden_size", "torch_dtype", "text_config",
                          "batch_norm_eps", "norm_epsilon"])
        val = rng.choice(["1e-6", None, True, [], [1e-6], {}, {"a": 1}, -1, 0, 10**400, 1e308, 2**64, "NaN",
                          "gemma3", ["gemma3"], [123], [[]], "x" * 100000])
        cfg[key] = val
        text = json.dumps(cfg)
        if rng.random() < 0.2:
            text = text.replace(json.dumps(cfg[key]), rng.choice(["NaN", "Infinity", "-Infinity", "1e400"]), 1)
        desc = f"{key}={str(val)[:30]!r}"
    elif v == "text_config":
        cfg["text_config"] = rng.choice([[], "x", {"model_type": 5, "rms_norm_eps": "x"},
                                         {"model_type": "gemma3_text", "rms_norm_eps": 10**400},
                                         {"text_config": {"text_config": {}}}, {"model_type": ["gemma3"]}])
        text = json.dumps(cfg)
        desc = f"text_config={str(cfg['text_config'])[:40]}"
    elif v == "malformed":
        base = json.dumps(cfg)
        text = rng.choice([base[: len(base) // 2], "", "{", base + "}", base.replace(":", "=", 1), "\ufeff" + base])
        if rng.random() < 0.3:
            path.write_bytes(base.encode()[:20] + b"\xff\xfe" + base.encode()[20:])
            return "config.json invalid UTF-8"
        desc = "malformed JSON"
    elif v == "huge":
        kind = rng.choice(["over_limit", "dicts", "string"])
        if kind == "over_limit":
            n = 65 * 2**20
            path.write_bytes(b'{"pad": "' + b"x" * n + b'"}')
        elif kind == "dicts":
            n = rng.choice([2 * 10**6, 16 * 10**6])
            path.write_bytes(b'{"pad": [' + b"{}," * n + b'{}], "rms_norm_eps": 1e-6}')
        else:
            path.write_bytes(b'{"pad": "' + b"x" * 30 * 2**20 + b'"}')
        return f"config.json huge ({kind})"
    elif v == "deep":
        d = rng.choice([1000, 100000])
        text = '{"a":' + "[" * d + "]" * d + "}"
        desc = f"nested {d}"
    else:
        text = rng.choice(["[]", "1", '"x"', "null", "[{}]"])
        desc = f"config.json = {text}"
    path.write_text(text)
    return f"config.json: {desc}"


# -- HF folders -------------------------------------------------------------------------------------

def _hf_safetensors(c: MutCtx) -> Path:
    return c.model_dir / "model.safetensors"


def _split_shards(c: MutCtx, names: list[str]) -> dict[str, str]:
    """Split model.safetensors into model-0000{1,2}-of-00002.safetensors; returns the weight_map."""
    p = _hf_safetensors(c)
    tensors, meta = _st_tensors(p.read_bytes())
    half = len(tensors) // 2
    parts = [tensors[:half], tensors[half:]]
    wm: dict[str, str] = {}
    for i, part in enumerate(parts):
        fname = names[i] if i < len(names) else f"model-0000{i + 1}-of-00002.safetensors"
        if "/" not in fname and "\x00" not in fname and not fname.startswith("."):
            (c.model_dir / fname).write_bytes(st_rewrite(part, meta))
        for t in part:
            wm[t[0]] = fname
    p.unlink()
    return wm


def hf_index(c: MutCtx) -> str:
    """A sharded folder whose index names shards outside the folder, through symlinks, FIFOs..."""
    rng = c.rng
    planted = c.planted_safetensors()
    v = rng.choice(["dotdot", "abs", "symlink_out", "symlink_dir", "fifo", "missing", "dir", "nul", "self", "ok",
                    "types", "hf_cache"])
    shard = "model-00002-of-00002.safetensors"
    wm = _split_shards(c, ["model-00001-of-00002.safetensors", shard])
    md = c.model_dir
    if v == "dotdot":
        wm = {k: ("../outside/planted.safetensors" if s == shard else s) for k, s in wm.items()}
    elif v == "abs":
        wm = {k: (str(planted) if s == shard else s) for k, s in wm.items()}
    elif v == "symlink_out":
        (md / shard).unlink()
        os.symlink(planted, md / shard)
    elif v == "symlink_dir":
        os.symlink(c.outside, md / "sub")
        wm = {k: ("sub/planted.safetensors" if s == shard else s) for k, s in wm.items()}
    elif v == "hf_cache":  # the Hugging Face cache layout: snapshot files are symlinks into ../../blobs
        blobs = c.outside / "blobs"
        blobs.mkdir(exist_ok=True)
        for f in list(md.glob("*.safetensors")):
            shutil.move(str(f), blobs / f.name)
            os.symlink(os.path.relpath(blobs / f.name, md), f)
    elif v == "fifo":
        (md / shard).unlink()
        os.mkfifo(md / shard)
    elif v == "missing":
        (md / shard).unlink()
    elif v == "dir":
        (md / shard).unlink()
        (md / shard).mkdir()
    elif v == "nul":
        wm = {k: ("model\x00.safetensors" if s == shard else s) for k, s in wm.items()}
    elif v == "self":
        wm = {k: ("model.safetensors.index.json" if s == shard else s) for k, s in wm.items()}
    elif v == "types":
        bad = rng.choice([[], "x", None, 5, {"a": 5}, {"a": None}, {"a": ["x"]}])
        (md / "model.safetensors.index.json").write_text(json.dumps({"weight_map": bad}))
        return f"index weight_map={bad!r}"
    index = {"metadata": {"total_size": 0}, "weight_map": wm}
    (md / "model.safetensors.index.json").write_text(json.dumps(index))
    return f"index shard: {v}"


def hf_glob(c: MutCtx) -> str:
    """No index: every *.safetensors in the folder is read (symlinks out, FIFOs, loops, directories)."""
    rng = c.rng
    md = c.model_dir
    v = rng.choice(["symlink_out", "symlink_extra", "fifo", "loop", "dir", "dangling", "many", "devzero"])
    if v == "symlink_out":
        _hf_safetensors(c).unlink()
        os.symlink(c.planted_safetensors(), md / "model.safetensors")
    elif v == "symlink_extra":
        os.symlink(c.planted_safetensors(), md / "z-extra.safetensors")
    elif v == "fifo":
        os.mkfifo(md / rng.choice(["a.safetensors", "model-00002-of-00002.safetensors", "zz.safetensors"]))
    elif v == "loop":
        os.symlink("loop.safetensors", md / "loop.safetensors")
    elif v == "dir":
        (md / "sub.safetensors").mkdir()
    elif v == "dangling":
        os.symlink("/nonexistent/x", md / "d.safetensors")
    elif v == "many":
        blob = st_rewrite([("x.norm.weight", "F32", [1], b"\0\0\x80?")])
        for i in range(rng.choice([500, 5000])):
            (md / f"m{i}.safetensors").write_bytes(blob)
    else:
        os.symlink("/dev/zero", md / "zero.safetensors")
    return f"folder: {v}"


def hf_pytorch_bin(c: MutCtx) -> str:
    """pytorch_model.bin instead of safetensors: pickles with payloads, symlinks out, FIFOs."""
    import torch

    md = c.model_dir
    for f in md.glob("*.safetensors"):
        f.unlink()
    v = c.rng.choice(["evil_zip", "evil_legacy", "symlink_out", "fifo", "ok", "not_dict"])
    target = md / "pytorch_model.bin"
    if v == "evil_zip":
        target.write_bytes(c.evil_torch_save())
    elif v == "evil_legacy":
        target.write_bytes(c.evil_pickle())
    elif v == "symlink_out":
        os.symlink(c.planted_state_dict(), target)
    elif v == "fifo":
        os.mkfifo(target)
    elif v == "ok":
        target.write_bytes(torch_save_bytes({n: torch.ones(8) for n in norm_tensor_names(c.src)[:8]}))
    else:
        target.write_bytes(torch_save_bytes([torch.ones(3)]))
    return f"pytorch_model.bin: {v}"


def hf_config(c: MutCtx) -> str:
    return config_mutation(c, c.model_dir / "config.json")


def hf_config_special(c: MutCtx) -> str:
    md = c.model_dir
    v = c.rng.choice(["fifo", "symlink_out", "dir", "missing"])
    (md / "config.json").unlink()
    if v == "fifo":
        os.mkfifo(md / "config.json")
    elif v == "symlink_out":
        (c.outside / "config.json").write_text(json.dumps({"model_type": "llama", "rms_norm_eps": float(PLANTED)}))
        os.symlink(c.outside / "config.json", md / "config.json")
    elif v == "dir":
        (md / "config.json").mkdir()
    return f"config.json: {v}"


def hf_safetensors(c: MutCtx) -> str:
    name, _, fn = _weighted(c.rng, ST_MUTATIONS)
    return f"model.safetensors {name}: " + fn(c, _hf_safetensors(c))


HF_MUTATIONS: list[tuple[str, float, Callable]] = [
    ("safetensors", 3.0, hf_safetensors),
    ("config", 2.5, hf_config),
    ("config_special", 0.7, hf_config_special),
    ("index", 2.0, hf_index),
    ("glob", 1.5, hf_glob),
    ("pytorch_bin", 1.0, hf_pytorch_bin),
]

SAFETENSORS_MUTATIONS: list[tuple[str, float, Callable]] = [
    (name, w, (lambda fn: (lambda c: fn(c, c.target)))(fn)) for name, w, fn in ST_MUTATIONS
] + [("config", 1.5, lambda c: config_mutation(c, c.model_dir / "config.json"))]


# ================================================================================================
# zip archives and pickles (.pt state_dicts, .pt2, TorchScript)
# ================================================================================================

def zip_members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, zf.read(i.filename)) for i in zf.infolist()]


def zip_write(path: Path, members: list[tuple[str, bytes]]) -> None:
    import warnings

    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        warnings.simplefilter("ignore")  # duplicate member names are one of the mutations
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)


def _zip_prefix(members: list[tuple[str, bytes]]) -> str:
    return members[0][0].split("/", 1)[0] + "/" if members and "/" in members[0][0] else ""


_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG", "LONG4"}
_STR_OPS = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "STRING"}
_GLOBALS = [("torch", "HalfStorage"), ("torch", "QInt8Storage"), ("torch", "ComplexFloatStorage"),
            ("torch", "BoolStorage"), ("torch", "ByteStorage"), ("torch._utils", "_rebuild_parameter"),
            ("torch._utils", "_rebuild_sparse_tensor"), ("torch._utils", "_rebuild_qtensor"),
            ("torch._utils", "_rebuild_wrapper_subclass"), ("torch._utils", "_rebuild_meta_tensor_no_storage"),
            ("torch._utils", "_rebuild_tensor_v2"), ("torch._tensor", "_rebuild_from_type_v2"),
            ("collections", "OrderedDict"), ("builtins", "dict"), ("builtins", "eval"), ("posix", "system"),
            ("torch", "Size"), ("torch.nn.parameter", "Parameter"), ("numpy.core.multiarray", "_reconstruct"),
            ("torch.storage", "_load_from_bytes"), ("torch", "float32"), ("torch", "bfloat16")]
_STRINGS = ["", "0", "999", "../../outside/planted.bin", "cuda:0", "meta", "mps", "cpu", "x" * 10000, "\x00",
            "data/0", "/etc/passwd", "weight", "running_var", "layers.0.norm.weight"]


def _op_spans(data: bytes) -> list[tuple[str, Any, int, int]]:
    ops = list(pickletools.genops(data))
    out = []
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        out.append((op.name, arg, pos, end))
    return out


def _enc_int(v: int) -> bytes:
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    enc = pickle.encode_long(v)
    return b"\x8a" + bytes([len(enc)]) + enc


def _enc_str(s: str) -> bytes:
    b = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(b)) + b


def pickle_mutate(data: bytes, rng: random.Random, ints: list[int] | None = None) -> tuple[bytes, str]:
    """Structure-aware pickle mutation: an int, a string or a GLOBAL replaced, an opcode dropped/duplicated."""
    try:
        spans = _op_spans(data)
    except Exception:
        return mutate_bytes(data, rng)
    kind = rng.choice(["int", "int", "int", "str", "global", "drop", "dup"])
    pick = [s for s in spans if (s[0] in _INT_OPS if kind == "int" else s[0] in _STR_OPS if kind == "str"
                                 else s[0] in ("GLOBAL", "STACK_GLOBAL") if kind == "global" else s[0] != "PROTO")]
    if ints and kind == "int":
        pick = [s for s in pick if s[1] in ints] or pick
    if not pick:
        return mutate_bytes(data, rng)
    name, arg, pos, end = rng.choice(pick)
    if kind == "int":
        v = rng.choice([0, -1, 1, 2**28, 2**31 - 1, 2**40, -(2**63), 2**63, 2**64, (arg or 0) * 2 + 1,
                        (arg or 0) + 1, 2**16])
        return data[:pos] + _enc_int(v) + data[end:], f"{name} {arg}->{v}"
    if kind == "str":
        v = rng.choice(_STRINGS)
        return data[:pos] + _enc_str(v) + data[end:], f"string {str(arg)[:20]!r}->{v[:20]!r}"
    if kind == "global":
        mod, attr = rng.choice(_GLOBALS)
        if name == "GLOBAL":
            return data[:pos] + b"c" + f"{mod}\n{attr}\n".encode() + data[end:], f"GLOBAL {arg}->{mod}.{attr}"
        return data[:pos] + _enc_str(mod) + _enc_str(attr) + b"\x93" + data[end:], f"STACK_GLOBAL->{mod}.{attr}"
    if kind == "drop":
        return data[:pos] + data[end:], f"drop {name}@{pos}"
    return data[:end] + data[pos:end] + data[end:], f"dup {name}@{pos}"


class _LoadFromBytes:
    """A pickle calling torch.storage._load_from_bytes (a full, unrestricted torch.load) on a payload."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __reduce__(self):
        import torch.storage

        return (torch.storage._load_from_bytes, (self.payload,))


def _payload_variant(c: MutCtx) -> tuple[bytes, str]:
    """Bytes of a pickle / torch.save archive whose loading would run the sentinel command."""
    import torch

    v = c.rng.choice(["torch_save", "legacy_p2", "raw_p5", "load_from_bytes", "plain_p2", "tensor_subclass"])
    if v == "torch_save":
        return c.evil_torch_save(), v
    if v == "legacy_p2":
        return torch_save_bytes({"norm.weight": torch.ones(4), "x": _Evil(str(c.sentinel))},
                                _use_new_zipfile_serialization=False), v
    if v == "raw_p5":
        return c.evil_pickle(5), v
    if v == "load_from_bytes":
        return pickle.dumps({"norm.weight": _LoadFromBytes(c.evil_pickle())}, protocol=2), v
    if v == "tensor_subclass":  # _rebuild_from_type_v2 with a callable "type"
        return pickle.dumps({"w": _RebuildFromType(str(c.sentinel))}, protocol=2), v
    return c.evil_pickle(2), v


class _RebuildFromType:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import torch._tensor

        import builtins

        return (torch._tensor._rebuild_from_type_v2, (builtins.exec, type(None), (payload_code(self.path),), {}))


# -- .pt (torch.save'd state_dict) ----------------------------------------------------------------

def pt_member_pickle(c: MutCtx) -> str:
    members = zip_members(c.target) if zipfile.is_zipfile(c.target) else None
    if members is None:
        out, desc = pickle_mutate(c.read(), c.rng)
        c.write(out)
        return desc
    i = next(i for i, (n, _) in enumerate(members) if n.endswith("data.pkl"))
    numels = [int(np.prod(s)) for s in _tensor_shapes(c)]
    out, desc = pickle_mutate(members[i][1], c.rng, ints=numels if c.rng.random() < 0.5 else None)
    members[i] = (members[i][0], out)
    zip_write(c.target, members)
    return desc


def _tensor_shapes(c: MutCtx) -> list[list[int]]:
    return [n.get("shape") or [1] for n in source_info(c.src).get("norms", [])]


def pt_member_bytes(c: MutCtx) -> str:
    members = zip_members(c.target)
    i = c.rng.randrange(len(members))
    if c.rng.random() < 0.5:
        i = next((j for j, (n, _) in enumerate(members) if n.endswith(("data.pkl", "constants.pkl"))), i)
    name, data = members[i]
    out, desc = mutate_bytes(data, c.rng)
    members[i] = (name, out)
    zip_write(c.target, members)
    return f"{name.split('/', 1)[-1]}: {desc}"


def pt_zip_structure(c: MutCtx) -> str:
    members = zip_members(c.target)
    pre = _zip_prefix(members)
    rng = c.rng
    v = rng.choice(["drop", "dup", "rename", "version", "byteorder", "extra", "no_prefix", "two_prefixes",
                    "storage_alignment", "format_version"])
    if v == "drop":
        i = rng.randrange(len(members))
        desc = members[i][0]
        del members[i]
    elif v == "dup":
        i = rng.randrange(len(members))
        members.insert(i, (members[i][0], members[i][1][: len(members[i][1]) // 2]))
        desc = members[i][0]
    elif v == "rename":
        i = rng.randrange(len(members))
        desc = members[i][0]
        members[i] = (rng.choice([pre + "data/9999", pre + "../x", pre + "data.pkl", "/abs", pre + "a" * 300]),
                      members[i][1])
    elif v in ("version", "byteorder", "storage_alignment", "format_version"):
        key = {"version": "version", "byteorder": "byteorder", "storage_alignment": ".storage_alignment",
               "format_version": ".format_version"}[v]
        val = rng.choice([b"99\n", b"0\n", b"-1", b"big", b"", b"\xff", b"1" * 100, b"3\n", b"64"])
        members = [(n, d) for n, d in members if n != pre + key] + [(pre + key, val)]
        desc = f"{key}={val[:10]!r}"
    elif v == "extra":
        members.append((pre + rng.choice(["data/weights/x.pt", "extra/../../x", "code/__torch__.py"]), b"x"))
        desc = members[-1][0]
    elif v == "no_prefix":
        members = [(n.split("/", 1)[-1], d) for n, d in members]
        desc = ""
    else:
        members = [(("other/" + n.split("/", 1)[-1]) if i % 2 else n, d) for i, (n, d) in enumerate(members)]
        desc = ""
    zip_write(c.target, members)
    return f"{v} {desc}"


def pt_payload(c: MutCtx) -> str:
    data, v = _payload_variant(c)
    if c.rng.random() < 0.4 and zipfile.is_zipfile(c.target) and v in ("raw_p5", "load_from_bytes",
                                                                         "tensor_subclass"):
        members = zip_members(c.target)  # the payload as data.pkl of an otherwise intact archive
        members = [(n, data if n.endswith("data.pkl") else d) for n, d in members]
        zip_write(c.target, members)
        return f"data.pkl = {v}"
    c.write(data)
    return v


def pt_legacy(c: MutCtx) -> str:
    import torch

    sd = torch.load(str(c.src), weights_only=True)
    legacy = torch_save_bytes(sd, _use_new_zipfile_serialization=False)
    out, desc = (pickle_mutate if c.rng.random() < 0.5 else mutate_bytes)(legacy, c.rng)
    c.write(out)
    return f"legacy format: {desc}"


def pt_blind(c: MutCtx) -> str:
    out, desc = mutate_bytes(c.read(), c.rng)
    c.write(out)
    return desc


PT_MUTATIONS: list[tuple[str, float, Callable]] = [
    ("member_pickle", 3.0, pt_member_pickle),
    ("member_bytes", 1.5, pt_member_bytes),
    ("zip_structure", 1.0, pt_zip_structure),
    ("payload", 1.5, pt_payload),
    ("legacy", 1.0, pt_legacy),
    ("blind", 1.5, pt_blind),
]


# -- .pt2 (torch.export) --------------------------------------------------------------------------

def _pt2(c: MutCtx) -> tuple[list[tuple[str, bytes]], str]:
    members = zip_members(c.target)
    return members, _zip_prefix(members)


def _get(members: list[tuple[str, bytes]], name: str) -> bytes | None:
    return next((d for n, d in members if n == name), None)


def _put(members: list[tuple[str, bytes]], name: str, data: bytes) -> list[tuple[str, bytes]]:
    out = [(n, d) for n, d in members if n != name]
    out.append((name, data))
    return out


def pt2_second_program(c: MutCtx) -> str:
    """A second program in the archive (models/<other>.json) whose weights or constants are pickles."""
    members, pre = _pt2(c)
    rng = c.rng
    other = rng.choice(["evil", "model2", "xmodel", "m"])
    model_json = _get(members, pre + "models/model.json") or b"{}"
    wcfg = json.loads(_get(members, pre + "data/weights/model_weights_config.json") or b'{"config": {}}')
    ccfg = {"config": {}}
    v = rng.choice(["weight_use_pickle", "opaque_obj", "custom_obj", "tensor_constant_pickle", "sample_inputs"])
    payload = c.evil_torch_save() if v in ("weight_use_pickle", "tensor_constant_pickle") else c.evil_pickle()
    sample = _get(members, pre + "data/sample_inputs/model.pt") or b""
    if v == "weight_use_pickle":
        fqn = next(iter(wcfg["config"]), "w")
        wcfg["config"][fqn] = {**wcfg["config"].get(fqn, {}), "use_pickle": True, "path_name": "weight_evil"}
        members.append((pre + "data/weights/weight_evil", payload))
    elif v in ("opaque_obj", "custom_obj"):
        ccfg["config"]["obj"] = {"path_name": f"{v}_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        members.append((pre + f"data/constants/{v}_0", payload))
    elif v == "tensor_constant_pickle":
        ccfg["config"]["c"] = {"path_name": "tensor_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        members.append((pre + "data/constants/tensor_0", payload))
    else:
        sample = c.evil_pickle()
    members += [(pre + f"models/{other}.json", model_json),
                (pre + f"data/weights/{other}_weights_config.json", json.dumps(wcfg).encode()),
                (pre + f"data/constants/{other}_constants_config.json", json.dumps(ccfg).encode()),
                (pre + f"data/sample_inputs/{other}.pt", sample)]
    zip_write(c.target, members)
    return f"second program {other!r}: {v}"


def pt2_own_program(c: MutCtx) -> str:
    """The same pickles in the archive's own program (the pre-load check should refuse these)."""
    members, pre = _pt2(c)
    rng = c.rng
    v = rng.choice(["opaque_obj", "custom_obj", "weight_use_pickle", "legacy_weights_pt", "legacy_constants_pt",
                    "sample_inputs", "use_pickle_string"])
    if v in ("opaque_obj", "custom_obj"):
        ccfg = {"config": {"obj": {"path_name": f"{v}_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}}
        members = _put(members, pre + "data/constants/model_constants_config.json", json.dumps(ccfg).encode())
        members.append((pre + f"data/constants/{v}_0", c.evil_pickle()))
    elif v in ("weight_use_pickle", "use_pickle_string"):
        wcfg = json.loads(_get(members, pre + "data/weights/model_weights_config.json"))
        fqn = rng.choice(list(wcfg["config"]))
        wcfg["config"][fqn]["use_pickle"] = True if v == "weight_use_pickle" else "yes"
        path = wcfg["config"][fqn]["path_name"]
        members = _put(members, pre + "data/weights/model_weights_config.json", json.dumps(wcfg).encode())
        members = _put(members, pre + "data/weights/" + path, c.evil_torch_save())
    elif v == "legacy_weights_pt":
        members.append((pre + "data/weights/model.pt", c.evil_torch_save()))
    elif v == "legacy_constants_pt":
        members.append((pre + "data/constants/model.pt", c.evil_torch_save()))
    else:
        members = _put(members, pre + "data/sample_inputs/model.pt", c.evil_pickle())
    zip_write(c.target, members)
    return v


def pt2_legacy_layout(c: MutCtx) -> str:
    """The torch 2.7 layout: version + serialized_exported_program.json + serialized_*.pt at the zip root."""
    import torch
    from torch._export.serde.schema import SCHEMA_VERSION

    members, pre = _pt2(c)
    rng = c.rng
    model_json = _get(members, pre + "models/model.json") or b"{}"
    clean_sd = torch_save_bytes({})
    inputs = torch_save_bytes(((torch.zeros(1),), {}))
    evil = c.evil_torch_save()
    which = rng.choice(["state_dict", "constants", "example_inputs", "none"])
    root = [("version", ".".join(map(str, SCHEMA_VERSION)).encode()),
            ("serialized_exported_program.json", model_json),
            ("serialized_state_dict.pt", evil if which == "state_dict" else clean_sd),
            ("serialized_constants.pt", evil if which == "constants" else clean_sd),
            ("serialized_example_inputs.pt", evil if which == "example_inputs" else inputs)]
    if rng.random() < 0.3:
        root.append(("extra_files/x", b"\xff\xfe"))
    if rng.random() < 0.3:  # also keep the new-layout files (a mixed archive)
        root = members + root
    zip_write(c.target, root)
    return f"legacy layout, payload in {which}"


def pt2_sizes(c: MutCtx) -> str:
    """tensor_meta of a norm weight claiming many elements (2^28 floats = 1 GiB), empty or short payload."""
    members, pre = _pt2(c)
    rng = c.rng
    cfg_name = pre + "data/weights/model_weights_config.json"
    wcfg = json.loads(_get(members, cfg_name))
    names = [n for n in norm_tensor_names(c.src) if n in wcfg["config"]] or list(wcfg["config"])
    fqn = rng.choice(names)
    meta = wcfg["config"][fqn]["tensor_meta"]
    v = rng.choice(["2^28_empty", "2^28", "2^31x2^31", "negative", "expr", "stride", "offset", "dtype", "2^26_empty"])
    if v.endswith("_empty"):
        n = 2**28 if v.startswith("2^28") else 2**26
        meta["sizes"] = [{"as_int": n}]
        meta["strides"] = [{"as_int": 1}]
        members = _put(members, pre + "data/weights/" + wcfg["config"][fqn]["path_name"], b"")
    elif v == "2^28":
        meta["sizes"] = [{"as_int": 2**28}]
        meta["strides"] = [{"as_int": 1}]
    elif v == "2^31x2^31":
        meta["sizes"] = [{"as_int": 2**31}, {"as_int": 2**31}]
        meta["strides"] = [{"as_int": 2**31}, {"as_int": 1}]
        members = _put(members, pre + "data/weights/" + wcfg["config"][fqn]["path_name"], b"")
    elif v == "negative":
        meta["sizes"] = [{"as_int": -1}]
    elif v == "expr":
        meta["sizes"] = [{"as_expr": {"expr_str": rng.choice(["s0", "2**40", "__import__('os')", "s0*s1"]),
                                      "hint": {"as_int": 4}}}]
    elif v == "stride":
        meta["strides"] = [{"as_int": rng.choice([2**40, -1, 0, 1000])}]
    elif v == "offset":
        meta["storage_offset"] = {"as_int": rng.choice([2**40, -1, 1000])}
    else:
        meta["dtype"] = rng.choice([0, 99, -1, "float", None, 12, 3])
    members = _put(members, cfg_name, json.dumps(wcfg).encode())
    zip_write(c.target, members)
    return f"{fqn}: {v}"


def json_mutate(obj: Any, rng: random.Random) -> tuple[Any, str]:
    """Replace / delete / duplicate one node of a JSON tree."""
    paths: list[tuple[Any, Any]] = []
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack and len(paths) < 20000:
        node, depth = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((node, k))
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            for i, v in enumerate(node[:200]):
                paths.append((node, i))
                stack.append((v, depth + 1))
    if not paths:
        return rng.choice([[], {}, None, 1]), "root replaced"
    parent, key = rng.choice(paths)
    op = rng.choice(["replace", "replace", "replace", "delete", "dup", "nest"])
    if op == "delete":
        del parent[key]
        return obj, f"delete {key!r}"
    if op == "dup" and isinstance(parent, list):
        parent.insert(key, parent[key])
        return obj, f"dup [{key}]"
    if op == "nest":
        v = parent[key]
        for _ in range(rng.choice([50, 1000, 100000])):
            v = [v]
        parent[key] = v
        return obj, f"nest {key!r}"
    val = rng.choice([None, -1, 0, 1, 2**31, 2**63, 2**64, 1e308, float("nan"), "", "x" * 1000, [], {}, True,
                      "torch.ops.aten.layer_norm.default", "builtins.eval", "torch.ops.aten.rms_norm.default",
                      "torch.ops.fz.evil.default", {"as_float": float("nan")}, {"as_int": 2**62}])
    parent[key] = val
    return obj, f"{key!r}={str(val)[:24]!r}"


def pt2_json(c: MutCtx) -> str:
    members, pre = _pt2(c)
    rng = c.rng
    which = rng.choice(["models/model.json", "models/model.json", "data/weights/model_weights_config.json",
                        "data/constants/model_constants_config.json"])
    data = _get(members, pre + which)
    if data is None:
        return pt2_member_bytes(c)
    doc = json.loads(data)
    if which == "models/model.json" and rng.random() < 0.5:
        desc = _pt2_norm_node_edit(doc, rng)
    else:
        doc, desc = json_mutate(doc, rng)
    try:
        out = json.dumps(doc).encode()
    except (RecursionError, ValueError):
        out = data[: len(data) // 2]
        desc += " (truncated)"
    zip_write(c.target, _put(members, pre + which, out))
    return f"{which}: {desc}"


def _pt2_norm_node_edit(doc: dict, rng: random.Random) -> str:
    nodes = doc.get("graph_module", {}).get("graph", {}).get("nodes", [])
    norm = [n for n in nodes if "norm" in str(n.get("target", ""))] or nodes
    if not norm:
        return "no nodes"
    node = rng.choice(norm)
    v = rng.choice(["eps", "target", "drop_input", "input_type"])
    if v == "eps":
        for inp in node.get("inputs", []):
            if inp.get("name") == "eps" or "as_float" in inp.get("arg", {}):
                inp["arg"] = rng.choice([{"as_float": float("nan")}, {"as_float": 1e308}, {"as_int": 2**62},
                                         {"as_string": "1e-5"}, {"as_none": True}, {"as_floats": [1.0, 2.0]},
                                         {"as_float": -1.0}, {}])
                return f"{node.get('target')} eps={inp['arg']}"
    if v == "target":
        old = node.get("target")
        node["target"] = rng.choice(["torch.ops.aten.rms_norm.default", "torch.ops.aten.batch_norm.default",
                                     "torch.ops.aten.group_norm.default", "torch.ops.aten.native_group_norm.default",
                                     "torch.ops.aten.layer_norm.default", "torch.ops.fz.evil.default",
                                     "builtins.eval", "torch.ops.aten.save.default", "operator.getitem"])
        return f"target {old}->{node['target']}"
    if v == "drop_input" and node.get("inputs"):
        node["inputs"].pop(rng.randrange(len(node["inputs"])))
        return f"{node.get('target')} input dropped"
    for inp in node.get("inputs", []):
        if "as_tensor" in inp.get("arg", {}):
            inp["arg"] = rng.choice([{"as_int": 3}, {"as_none": True}, {"as_tensor": {"name": "nope"}}])
            return f"{node.get('target')} tensor input -> {inp['arg']}"
    return "nothing"


def pt2_member_bytes(c: MutCtx) -> str:
    return pt_member_bytes(c)


def pt2_zip_structure(c: MutCtx) -> str:
    members, pre = _pt2(c)
    rng = c.rng
    v = rng.choice(["archive_version", "archive_format", "drop", "byteorder", "drop_models"])
    if v == "archive_version":
        members = _put(members, pre + "archive_version", rng.choice([b"1", b"", b"0\n", b"\xff"]))
    elif v == "archive_format":
        members = _put(members, pre + "archive_format", rng.choice([b"pt3", b""]))
    elif v == "byteorder":
        members = _put(members, pre + "byteorder", b"big")
    elif v == "drop_models":
        members = [(n, d) for n, d in members if "/models/" not in n] + [(pre + "serialized_exported_program.json", b"{}")]
    else:
        i = rng.randrange(len(members))
        v += " " + members[i][0]
        del members[i]
    zip_write(c.target, members)
    return v


PT2_MUTATIONS: list[tuple[str, float, Callable]] = [
    ("second_program", 2.0, pt2_second_program),
    ("own_program", 1.5, pt2_own_program),
    ("legacy_layout", 1.5, pt2_legacy_layout),
    ("sizes", 1.5, pt2_sizes),
    ("json", 3.0, pt2_json),
    ("member_bytes", 1.0, pt2_member_bytes),
    ("zip_structure", 0.8, pt2_zip_structure),
    ("blind", 0.7, pt_blind),
]


# -- TorchScript ----------------------------------------------------------------------------------

def _ts_code_member(members: list[tuple[str, bytes]], rng: random.Random, main: bool = True) -> int:
    code = [i for i, (n, _) in enumerate(members) if "/code/" in n and n.endswith(".py")]
    if main:
        top = [i for i in code if members[i][0].endswith("code/__torch__.py")]
        if top and rng.random() < 0.6:
            return top[0]
    return rng.choice(code)


def ts_deep_nesting(c: MutCtx) -> str:
    """Deeply nested expressions in the code member (recursive-descent parser, C++ stack)."""
    members = zip_members(c.target)
    rng = c.rng
    i = _ts_code_member(members, rng)
    name, code = members[i]
    d = rng.choice([500, 5000, 20000, 100000])
    kind = rng.choice(["parens", "parens", "lists", "unary", "subscript", "calls"])
    expr = {"parens": "(" * d + "1" + ")" * d, "lists": "[" * d + "1" + "]" * d, "unary": "-" * d + "1",
            "subscript": "x" + "[0]" * d, "calls": "f(" * d + ")" * d}[kind]
    text = code.decode()
    lines = text.split("\n")
    idx = [j for j, ln in enumerate(lines) if ln.startswith("    ") and "=" in ln and "def " not in ln]
    if idx:
        j = rng.choice(idx)
        indent = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
        lines.insert(j, f"{indent}_fz = {expr}")
    else:
        lines.append(f"_fz = {expr}")
    members[i] = (name, "\n".join(lines).encode())
    zip_write(c.target, members)
    return f"{name.split('/code/', 1)[-1]}: {kind} depth {d}"


def ts_code_edit(c: MutCtx) -> str:
    members = zip_members(c.target)
    rng = c.rng
    i = _ts_code_member(members, rng, main=False)
    name, code = members[i]
    lines = code.decode().split("\n")
    v = rng.choice(["numbers", "numbers", "drop_line", "dup_line", "swap_lines", "token", "long_ident", "indent",
                    "final_attr"])
    j = rng.randrange(len(lines))
    if v == "numbers":
        nums = [(k, m) for k, ln in enumerate(lines) for m in re.finditer(r"\b\d+(\.\d+)?(e-?\d+)?\b", ln)]
        if nums:
            k, m = rng.choice(nums)
            new = rng.choice(["0", "-1", "1e999", "nan", "99999999999999999999999", "4294967296", "0.0", "1e-400"])
            lines[k] = lines[k][: m.start()] + new + lines[k][m.end():]
            v += f" {m.group()}->{new}"
    elif v == "drop_line":
        del lines[j]
    elif v == "dup_line":
        lines.insert(j, lines[j])
    elif v == "swap_lines" and len(lines) > 1:
        k = rng.randrange(len(lines))
        lines[j], lines[k] = lines[k], lines[j]
    elif v == "token":
        lines[j] = lines[j] + rng.choice([":", "(", ")", "\\", "'", '"""', "\x00", "\xff", " ops.prim.RaiseException('x')"])
    elif v == "long_ident":
        lines.insert(j, "  " + "a" * rng.choice([10**4, 10**6]) + " : int")
    elif v == "indent":
        lines[j] = " " * rng.choice([1, 3, 1000]) + lines[j]
    else:
        lines.insert(min(j, len(lines)), "  " + rng.choice(["num_groups : Final[int] = 0", "eps : Final[float] = 1e999",
                                                            "eps : Final[str] = 'x'", "__parameters__ = [\"nope\", ]",
                                                            "num_features : Final[int] = -1"]))
    members[i] = (name, "\n".join(lines).encode("utf-8", "surrogateescape"))
    zip_write(c.target, members)
    return f"{name.split('/code/', 1)[-1]}: {v}"


def ts_pickles(c: MutCtx) -> str:
    members = zip_members(c.target)
    rng = c.rng
    cands = [i for i, (n, _) in enumerate(members) if n.endswith((".pkl", "debug_pkl"))]
    if rng.random() < 0.7:
        cands = [i for i in cands if members[i][0].endswith(("/data.pkl", "constants.pkl"))] or cands
    i = rng.choice(cands)
    name, data = members[i]
    out, desc = pickle_mutate(data, rng)
    members[i] = (name, out)
    zip_write(c.target, members)
    return f"{name.rsplit('/', 1)[-1]}: {desc}"


def ts_structure(c: MutCtx) -> str:
    return pt_zip_structure(c)


TS_MUTATIONS: list[tuple[str, float, Callable]] = [
    ("deep_nesting", 1.5, ts_deep_nesting),
    ("code_edit", 2.5, ts_code_edit),
    ("pickles", 2.5, ts_pickles),
    ("member_bytes", 1.5, pt_member_bytes),
    ("zip_structure", 1.0, ts_structure),
    ("blind", 1.0, pt_blind),
]


# ================================================================================================
# cases
# ================================================================================================

MUTATIONS: dict[str, list[tuple[str, float, Callable]]] = {
    "gguf": GGUF_MUTATIONS,
    "onnx": ONNX_MUTATIONS,
    "safetensors": SAFETENSORS_MUTATIONS,
    "hf": HF_MUTATIONS,
    "pt": PT_MUTATIONS,
    "pt2": PT2_MUTATIONS,
    "torchscript": TS_MUTATIONS,
}
COMPARE_SHARE = 0.25  # share of cases run as ``compare GOOD MUTATED`` instead of ``inspect MUTATED``


def _weighted(rng: random.Random, table: list[tuple[str, float, Callable]]) -> tuple[str, float, Callable]:
    total = sum(w for _, w, _ in table)
    x = rng.random() * total
    for entry in table:
        x -= entry[1]
        if x <= 0:
            return entry
    return table[-1]


def case_seed(base_seed: int, fmt: str, index: int) -> int:
    """The seed of case ``index`` of a run: stable across Python versions and hash seeds."""
    return random.Random(f"normaudit-fuzz:{base_seed}:{fmt}:{index}").getrandbits(40)


@dataclass
class Case:
    fmt: str
    seed: int
    mutation: str
    detail: str
    argv: list[str]
    case_dir: Path
    target: Path
    good: Path
    outside: Path
    sentinel: Path

    def label(self) -> str:
        return f"{self.fmt} seed={self.seed} {self.argv[0]} {self.mutation} [{self.detail[:120]}]"

    def replay_cmd(self) -> str:
        return f"python -m tests.fuzzing replay {self.fmt} {self.seed} --debug"


def make_case(fmt: str, seed: int, root: Path) -> Case:
    """Build case ``seed`` of format ``fmt`` under ``root`` (deterministic: the seed is the whole recipe)."""
    rng = random.Random(seed)
    src = rng.choice(sources(fmt))
    case_dir = root / f"{fmt}-{seed}"
    if case_dir.exists() or case_dir.is_symlink():
        shutil.rmtree(case_dir)
    model_dir, outside = case_dir / "model", case_dir / "outside"
    model_dir.mkdir(parents=True)
    outside.mkdir()
    if fmt == "hf":
        shutil.copytree(src, model_dir, dirs_exist_ok=True)
        target = model_dir
    elif fmt == "safetensors":
        target = model_dir / "model.safetensors"
        shutil.copyfile(src, target)
        if (src.parent / "config.json").is_file():
            shutil.copyfile(src.parent / "config.json", model_dir / "config.json")
    else:
        target = model_dir / src.name
        shutil.copyfile(src, target)
    ctx = MutCtx(fmt, rng, src, case_dir, model_dir, outside, target, case_dir / SENTINEL_NAME)
    ctx.planted_bin()
    name, _, fn = _weighted(rng, MUTATIONS[fmt])
    try:
        detail = mutate_gguf(ctx, name, fn) if fmt == "gguf" else fn(ctx)
    except Exception as exc:  # a mutation that does not apply to this source: fall back to a blind one
        detail = f"{name} not applicable ({type(exc).__name__}: {str(exc)[:60]}); blind instead"
        name += "->blind"
        if target.is_file():
            target.write_bytes(mutate_bytes(target.read_bytes(), rng)[0])
    if rng.random() < COMPARE_SHARE:
        # the good side: the source itself, or the same model in another format (alignment across formats,
        # BatchNorm fold checks); the mutated file is B (converted) or A (source)
        others = [p for p in partners(src) if p != src]
        good = rng.choice(others) if others and rng.random() < 0.4 else src
        pair = [str(good), str(target)] if rng.random() < 0.7 else [str(target), str(good)]
        argv = ["compare", *pair, "--json", "-"]
    else:
        argv = ["inspect", str(target), "--json", "-"]
    return Case(fmt, seed, name, str(detail), argv, case_dir, target, src, outside, ctx.sentinel)


def baseline_case(fmt: str, src: Path, root: Path, compare: bool = False) -> Case:
    """An unmutated source as a case (the harness's own control: these must pass)."""
    tag = re.sub(r"[^\w.-]", "_", str(src.relative_to(TM)) if src.is_relative_to(TM) else src.name)
    case_dir = root / f"{fmt}-baseline-{tag}{'-cmp' if compare else ''}"
    if case_dir.exists():
        shutil.rmtree(case_dir)
    (case_dir / "outside").mkdir(parents=True)
    (case_dir / "outside" / "planted.bin").write_bytes(np.full(16, PLANTED, np.float32).tobytes())
    argv = ["compare", str(src), str(src), "--json", "-"] if compare else ["inspect", str(src), "--json", "-"]
    return Case(fmt, 0, "none", "unmutated", argv, case_dir, src, src, case_dir / "outside",
                case_dir / SENTINEL_NAME)


# ================================================================================================
# runner: one forked child per case
# ================================================================================================

class _Inotify:
    """Watches each case's outside folder: any file opened there by the child is an outside read."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self) -> None:
        self.fd = -1
        try:
            self.libc = ctypes.CDLL(None, use_errno=True)
            self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            self.fd = -1
        self.events: dict[int, list[str]] = {}

    def add(self, path: Path) -> int:
        if self.fd < 0:
            return -1
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_OPEN | self.IN_ACCESS)
        if wd >= 0:
            self.events[wd] = []
        return wd

    def drain(self) -> None:
        if self.fd < 0:
            return
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                return
            pos = 0
            while pos + 16 <= len(buf):
                wd, mask, _cookie, ln = struct.unpack_from("iIII", buf, pos)
                name = buf[pos + 16:pos + 16 + ln].split(b"\0", 1)[0].decode(errors="replace")
                pos += 16 + ln
                if wd in self.events and name:
                    self.events[wd].append(name)

    def take(self, wd: int) -> list[str]:
        if wd < 0:
            return []
        self.drain()
        events = self.events.pop(wd, [])
        self.libc.inotify_rm_watch(self.fd, wd)
        return sorted(set(events))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _statm_rss(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _vmsize() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError):
        return 0


def _child_main(case: Case, out_path: Path, err_path: Path, meta_path: Path, debug: bool,
                as_limit: int, entry: Callable[[], None] | None) -> None:
    """Runs in the forked child; never returns."""
    code = 121
    try:
        os.setpgrp()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        fo = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fe = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fo, 1)
        os.dup2(fe, 2)
        for fd in (null, fo, fe):
            os.close(fd)
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="strict")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", line_buffering=True)
        orig_out = sys.__stdout__
        sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
        import faulthandler
        import logging
        import warnings

        faulthandler.enable(file=sys.stderr, all_threads=True)
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=False)
        # a pristine Python for the CLI: no test-runner log handlers or warning capture
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.setLevel(logging.WARNING)
        # libraries' own stream handlers (torch installs one at import) hold the stream of that moment
        for lg in list(logging.Logger.manager.loggerDict.values()):
            for h in getattr(lg, "handlers", []):
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    h.setStream(sys.stdout if h.stream in (old_out, orig_out) else sys.stderr)
        warnings.resetwarnings()
        for cat in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", cat)
        warnings.showwarning = getattr(warnings, "_showwarning_orig", warnings.showwarning)

        def _show(msg: Any) -> None:
            sys.stderr.write(warnings.formatwarning(msg.message, msg.category, msg.filename, msg.lineno, msg.line))

        warnings._showwarnmsg_impl = _show  # type: ignore[attr-defined]
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if as_limit:
            resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
        _install_outside_hook(case.outside)
        os.chdir(case.outside)
        if debug:
            os.environ["NORMAUDIT_DEBUG"] = "1"
        else:
            os.environ.pop("NORMAUDIT_DEBUG", None)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
        meta_path.write_text(f"{_statm_rss()} {time.monotonic()}")
        sys.argv = ["normaudit"] + list(case.argv)
        code = 0
        try:
            if entry is not None:
                entry()
            else:
                import normaudit.cli

                normaudit.cli.run()
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code & 0xFF
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # what the interpreter would do with an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
    except BaseException as exc:  # the harness itself failed in the child
        try:
            os.write(2, f"\nfuzzing harness error in child: {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass
        code = 121
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        try:
            with open(meta_path, "a") as fh:
                fh.write(f" {time.monotonic()}")
        except BaseException:
            pass
        os._exit(code)


OUTSIDE_HEADER = "normaudit-fuzz: opened outside the model folder"


def _install_outside_hook(outside: Path) -> None:
    """An audit hook printing the Python stack the first time a file in ``outside`` is opened from Python.

    (Opens from native code, e.g. safetensors' Rust reader, are seen by the parent's inotify watch instead.)"""
    import traceback

    prefix = os.path.realpath(outside) + os.sep
    state = {"busy": False, "done": False}

    def hook(event: str, args: tuple) -> None:
        if event != "open" or state["busy"] or state["done"] or not args:
            return
        path = args[0]
        if not isinstance(path, (str, bytes, os.PathLike)):
            return
        state["busy"] = True
        try:
            real = os.path.realpath(os.fsdecode(path))
            if real.startswith(prefix) and os.path.isfile(real):
                state["done"] = True
                sys.stderr.write(f"{OUTSIDE_HEADER}: {real}; stack (most recent call last):\n")
                traceback.print_stack(file=sys.stderr)
                sys.stderr.flush()
        except Exception:
            pass
        finally:
            state["busy"] = False

    sys.addaudithook(hook)


@dataclass
class Result:
    case: Case
    outcome: str  # "ok" or the failure class
    reasons: list[str]
    exit_code: int | None
    signal: str | None
    wall: float
    peak_rss_mb: float  # peak RSS of the child above its RSS at the start of the case
    stdout: str
    stderr: str
    opened_outside: list[str] = field(default_factory=list)
    where: str = ""  # innermost normaudit frame (and the library frame below it) of the failure
    message: str = ""  # the failure's message (last stderr line, or the exception of the debug re-run)
    debug_trace: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def last_stderr_line(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""

    def summary(self) -> str:
        return (f"{self.case.label()} -> {self.outcome} ({'; '.join(self.reasons)[:200]}) "
                f"where={self.where or '?'} msg={self.message[:200]!r}  replay: {self.case.replay_cmd()}")


@dataclass
class Limits:
    timeout: float = 20.0
    mem_cap: int = 1 * GiB  # RSS growth of the child before it is killed (polled; peak RSS checked at exit)
    # RLIMIT_AS = address space at the fork + mem_cap + as_slack: only a safety net.  Requests beyond it fail
    # with a MemoryError that normaudit reports cleanly, which is also what an overcommitting kernel does
    # with absurd requests, so they are not counted; what counts is memory actually used (RSS).
    as_slack: int = 3 * GiB
    blocked: float = 3.0  # a child asleep in the kernel without CPU progress this long is hung (0: off)


@dataclass
class _Running:
    case: Case
    pid: int
    t0: float
    wd: int
    out: Path
    err: Path
    meta: Path
    killed: str = ""
    kill_at: float = 0.0
    max_rss: int = 0
    start_rss: int = 0
    cpu: int = -1  # CPU ticks at the last check
    cpu_t: float = 0.0  # when the CPU time last advanced
    checked: float = 0.0
    wchan: str = ""


def run_cases(cases: Iterable[Case | Callable[[], Case]], *, jobs: int = 1, limits: Limits | None = None,
              debug: bool = False, rerun_debug: bool = True, keep: bool = False,
              entry: Callable[[], None] | None = None,
              on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run every case in a forked child (``jobs`` at a time) and classify it.

    ``cases`` may hold factories, called in this process right before the case is forked (so case files are
    built lazily).  Failures of the Python kind are re-run with NORMAUDIT_DEBUG=1 to find the normaudit
    function that raised (``Result.where``).  ``entry`` replaces ``normaudit.cli.run`` (harness self-tests).
    """
    limits = limits or Limits()
    notify = _Inotify()
    results: list[Result] = []
    pending = iter(cases)
    running: dict[int, _Running] = {}
    base_rss = _statm_rss()
    as_limit = _vmsize() + limits.mem_cap + limits.as_slack
    exhausted = False
    try:
        while running or not exhausted:
            while not exhausted and len(running) < max(jobs, 1):
                try:
                    item = next(pending)
                except StopIteration:
                    exhausted = True
                    break
                case = item() if callable(item) else item
                running_entry = _start(case, notify, debug, as_limit, entry)
                running[running_entry.pid] = running_entry
            if not running:
                break
            time.sleep(0.004)
            now = time.monotonic()
            for pid, r in list(running.items()):
                try:
                    wpid, status, ru = os.wait4(pid, os.WNOHANG)
                except ChildProcessError:
                    wpid, status, ru = pid, 0, None
                if wpid == 0:
                    rss = _statm_rss(pid)
                    r.max_rss = max(r.max_rss, rss)
                    if not r.start_rss:
                        r.start_rss = _meta(r.meta)[0]
                    base = r.start_rss or base_rss
                    if not r.killed and now - r.t0 > limits.timeout:
                        r.killed, r.kill_at = "timeout", now + 0.3
                        _signal_group(pid, signal.SIGUSR1)
                    elif not r.killed and limits.blocked and _blocked(r, now, limits):
                        r.killed, r.kill_at = f"blocked:{r.wchan or '?'}", now + 0.3
                        _signal_group(pid, signal.SIGUSR1)
                    elif not r.killed and rss - base > limits.mem_cap:
                        r.killed = f"memory cap: RSS +{(rss - base) / 2**20:.0f} MiB"
                        r.kill_at = now + 0.3
                        _signal_group(pid, signal.SIGUSR1)
                    elif r.killed and r.kill_at and now >= r.kill_at:
                        _signal_group(pid, signal.SIGKILL)
                        r.kill_at = 0.0
                    continue
                del running[pid]
                _signal_group(pid, signal.SIGKILL)  # grandchildren (a payload's shell) go too
                res = _finish(r, status, ru, now, notify, limits)
                if rerun_debug and not debug and _wants_rerun(res):
                    _debug_rerun(res, limits, as_limit, entry)
                results.append(res)
                if on_result is not None:
                    on_result(res)
                if not keep:
                    shutil.rmtree(r.case.case_dir, ignore_errors=True)
                    shutil.rmtree(r.out.parent, ignore_errors=True)
    finally:
        for pid in list(running):
            _signal_group(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        notify.close()
    return results


def _blocked(r: "_Running", now: float, limits: "Limits") -> bool:
    """True when the child sleeps in the kernel (a FIFO, a lock...) with no CPU progress for ``limits.blocked`` s.

    Tells a blocked child from a slow one whatever the machine's load, so blocking hangs cost seconds."""
    if now - r.checked < 0.25:
        return False
    r.checked = now
    try:
        with open(f"/proc/{r.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        state, cpu = fields[0], int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    except (OSError, ValueError, IndexError):
        return False
    cpu += _descendants_cpu(r.pid)  # a child waiting on its own child (normaudit's sandbox) is not blocked
    if cpu != r.cpu or state not in ("S", "D"):
        r.cpu, r.cpu_t = cpu, now
        return False
    if now - r.cpu_t < limits.blocked:
        return False
    try:
        r.wchan = Path(f"/proc/{r.pid}/wchan").read_text().strip()
    except OSError:
        r.wchan = ""
    return True


def _descendants_cpu(pid: int, depth: int = 0) -> int:
    """CPU ticks used so far by the live descendants of ``pid``."""
    total = 0
    if depth > 4:
        return 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            try:
                with open(f"/proc/{kid}/stat") as fh:
                    f = fh.read().rsplit(")", 1)[1].split()
                total += int(f[11]) + int(f[12]) + _descendants_cpu(int(kid), depth + 1)
            except (OSError, ValueError, IndexError):
                continue
    return total


def _signal_group(pid: int, sig: int) -> None:
    for fn in (os.killpg, os.kill):
        try:
            fn(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _start(case: Case, notify: _Inotify, debug: bool, as_limit: int, entry: Callable[[], None] | None) -> _Running:
    io_dir = Path(tempfile.mkdtemp(prefix="fz-io-"))
    out, err, meta = io_dir / "stdout", io_dir / "stderr", io_dir / "meta"
    wd = notify.add(case.outside)
    notify.drain()
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child_main(case, out, err, meta, debug, as_limit, entry)
    return _Running(case, pid, t0, wd, out, err, meta, cpu_t=t0)


def _read(path: Path, limit: int = 64 * 2**20) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _meta(path: Path) -> tuple[int, float, float]:
    """(RSS at the start, start time, end time) as the child wrote them; zeros when missing."""
    try:
        parts = path.read_text().split()
    except OSError:
        return 0, 0.0, 0.0
    try:
        return int(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0, float(parts[2]) if len(parts) > 2 else 0.0
    except (ValueError, IndexError):
        return 0, 0.0, 0.0


def _finish(r: _Running, status: int, ru: Any, now: float, notify: _Inotify, limits: Limits) -> Result:
    start_rss, t_start, t_end = _meta(r.meta)
    # the child's own clock (the parent may have been busy building the next case when the child ended)
    wall = (t_end - t_start) if t_start and t_end and not r.killed else now - r.t0
    peak = (ru.ru_maxrss * 1024 if ru is not None else r.max_rss)
    peak_mb = max(peak - start_rss, 0) / 2**20 if start_rss else 0.0
    exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None
    opened = notify.take(r.wd)
    stdout, stderr = _read(r.out), _read(r.err)
    res = Result(r.case, "ok", [], exit_code, sig, wall, peak_mb, stdout, stderr, opened)
    classify(res, r.killed, limits)
    return res


# ================================================================================================
# oracle
# ================================================================================================

#: failure classes, most severe first (a case gets the first that applies; all reasons are kept)
CLASSES = ("sentinel", "outside_read", "outside_open", "signal", "timeout", "memory", "traceback", "internal_error",
           "bad_exit", "bad_stderr", "bad_json", "harness_error")
def _wants_rerun(res: "Result") -> bool:
    """Python-level failures whose traceback (NORMAUDIT_DEBUG=1 re-raises) names the failing function."""
    if res.outcome in ("internal_error", "bad_exit", "bad_json"):
        return True
    if res.outcome == "memory" and not res.where.startswith("normaudit/"):
        return True
    return res.outcome == "traceback" and not res.where.startswith("stderr noise")




def classify(res: Result, killed: str = "", limits: Limits | None = None) -> Result:
    """The oracle: fills ``res.outcome`` / ``res.reasons`` / ``res.message``."""
    limits = limits or Limits()
    reasons: dict[str, str] = {}
    text = res.stdout + res.stderr
    err_lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if res.case.sentinel.exists():
        reasons["sentinel"] = "the pickle payload ran (sentinel file created)"
    if any(m in text for m in PLANTED_MARKERS):
        reasons["outside_read"] = "a value of the planted file outside the model folder is in the output"
    if res.opened_outside:
        reasons["outside_open"] = "opened outside the model folder: " + ", ".join(res.opened_outside[:5])
    if killed == "timeout":
        reasons["timeout"] = f"killed after {limits.timeout:g} s"
    elif killed.startswith("blocked:"):
        reasons["timeout"] = (f"blocked in the kernel ({killed.split(':', 1)[1]}) without CPU progress for "
                              f"{limits.blocked:g} s")
    elif killed:
        reasons["memory"] = killed
    elif res.signal:
        reasons["signal"] = f"killed by {res.signal}"
    if "memory" not in reasons and res.peak_rss_mb * 2**20 > limits.mem_cap:
        reasons["memory"] = f"peak RSS +{res.peak_rss_mb:.0f} MiB"
    if "Traceback" in text:
        reasons["traceback"] = "a traceback was printed"
    if res.exit_code == 121 and "fuzzing harness error" in res.stderr:
        reasons["harness_error"] = err_lines[-1] if err_lines else ""
    elif res.exit_code is not None and res.exit_code not in (0, 1, 2):
        reasons["bad_exit"] = f"exit code {res.exit_code}"
    if res.exit_code == 2:
        if any("internal error" in ln for ln in err_lines):
            reasons["internal_error"] = "internal error"
        if len(err_lines) != 1 or not err_lines[0].startswith("normaudit: error:"):
            reasons["bad_stderr"] = f"{len(err_lines)} stderr lines, not one 'normaudit: error:' line"
    if res.exit_code in (0, 1):
        try:
            json.loads(res.stdout)
        except ValueError:
            reasons["bad_json"] = f"exit {res.exit_code} but stdout is not one JSON document"
    res.reasons = [f"{k}: {v}" for k, v in reasons.items()]
    res.outcome = next((k for k in CLASSES if k in reasons), "ok")
    if res.outcome == "ok":
        return res
    res.message = _message(res)
    noise = stderr_noise(res.stderr)
    header = PAYLOAD_HEADER if res.outcome == "sentinel" else OUTSIDE_HEADER
    if res.outcome in ("sentinel", "outside_read", "outside_open") and header in res.stderr:
        block = res.stderr.split(header, 1)[1]
        lines = []
        for ln in block.splitlines()[1:]:
            if not ln.startswith(" "):
                break
            lines.append(ln)
        res.where = where_from("Traceback (most recent call last):\n" + "\n".join(lines))
    elif res.outcome in ("traceback", "bad_stderr") and noise and any(
            ln.startswith("normaudit: error:") for ln in res.stderr.splitlines()):
        # normaudit handled the error; a library logged / warned on stderr on the way
        res.where, res.message = f"stderr noise: {noise[0]}", noise[1]
    else:
        res.where = res.where or where_from(res.stderr)
    return res


_GLOG = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)")
_PYWARN = re.compile(r"^(\S+?\.py):(\d+): (\w+): ?(.*)")


def stderr_noise(stderr: str) -> tuple[str, str] | None:
    """(source, text) of the first stderr line that is not normaudit's own: a library's log record or warning."""
    for ln in stderr.splitlines():
        if not ln.strip() or ln.startswith("normaudit: error:"):
            continue
        m = _GLOG.match(ln)
        if m:
            return f"log record from {_short(m.group(1))}", m.group(2)[:200]
        m = _PYWARN.match(ln)
        if m:
            return f"{m.group(3)} from {_short(m.group(1))}:{m.group(2)}", m.group(4)[:200]
        if ln.startswith("--- Logging error ---"):
            return "logging error", ln
        return "stderr line", ln[:200]
    return None


def _message(res: Result) -> str:
    err_lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    norm = [ln for ln in err_lines if ln.startswith("normaudit: error:")]
    if res.outcome in ("timeout", "memory", "signal", "sentinel", "outside_read", "outside_open"):
        own = next((r for r in res.reasons if r.startswith(res.outcome)), res.outcome)
        return own + (f" | {norm[-1]}" if norm and norm[-1][:60] not in own else "")
    if norm:
        return norm[-1]
    tb_last = [ln for ln in err_lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Warning)\b", ln)]
    return (tb_last or err_lines or [res.outcome])[-1][:300]


_FRAME = re.compile(r'File "([^"]+)", line (\d+),? in (\S+)')


def frames(text: str) -> list[tuple[str, int, str]]:
    """Frames of the last traceback in ``text``, outermost first (Python and faulthandler formats)."""
    blocks = re.split(r"(Traceback \(most recent call last\):|; stack \(most recent call last\):|"
                      r"\(most recent call first\):)", text)
    if len(blocks) < 3:
        return []
    header, body = blocks[-2], blocks[-1]
    if "first" in header:  # faulthandler: innermost first, one block per thread; take the current thread's
        for i in range(1, len(blocks), 2):
            if "first" in blocks[i] and "Current thread" in blocks[i - 1][-80:]:
                body = blocks[i + 1]
                break
        fr = [(f, int(n), fn) for f, n, fn in _FRAME.findall(body.split("\n\n")[0])]
        return fr[::-1]
    return [(f, int(n), fn) for f, n, fn in _FRAME.findall(body)]


def _short(path: str) -> str:
    if "/normaudit/" in path and "/site-packages/" not in path:
        return "normaudit/" + path.rsplit("/normaudit/", 1)[1]
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", path)


def where_from(text: str) -> str:
    """``normaudit/x.py:LINE func -> lib/y.py:LINE func``: the innermost normaudit frame and the frame it called."""
    fr = frames(text)
    if not fr:
        return ""
    # exec'd payload code, <frozen ...>, the harness's own hook
    fr = [x for x in fr if not x[0].startswith("<") and not x[0].endswith(("/fuzzing.py", "/traceback.py"))] or fr
    idx = [i for i, (f, _, _) in enumerate(fr) if "/normaudit/" in f and "/tests/" not in f]
    if not idx:
        f, n, fn = fr[-1]
        return f"{_short(f)}:{n} {fn}"
    i = idx[-1]
    f, n, fn = fr[i]
    out = f"{_short(f)}:{n} {fn}"
    if i + 1 < len(fr):
        g, m, gn = fr[-1]
        out += f" -> {_short(g)}:{m} {gn}"
    return out


def _debug_rerun(res: Result, limits: Limits, as_limit: int, entry: Callable[[], None] | None) -> None:
    """Re-run a failed case with NORMAUDIT_DEBUG=1 (normaudit re-raises) to get the traceback."""
    case = res.case
    rebuilt = case
    if case.seed and not case.case_dir.exists():
        rebuilt = make_case(case.fmt, case.seed, case.case_dir.parent)
    if case.case_dir.exists():
        case.sentinel.unlink(missing_ok=True)
    if res.outcome == "memory":  # a lower cap, so the poller stops it mid-allocation and faulthandler shows where
        limits = Limits(timeout=limits.timeout, mem_cap=limits.mem_cap // 2, as_slack=limits.as_slack)
    inner = run_cases([rebuilt], limits=limits, debug=True, rerun_debug=False, keep=True, entry=entry)
    if inner:
        r = inner[0]
        res.debug_trace = r.stderr[-6000:]
        w = where_from(r.stderr)
        if w:
            res.where = w
        exc = [ln for ln in r.stderr.splitlines() if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln)]
        if exc and res.outcome != "memory":
            res.message = exc[-1][:300] if res.outcome != "internal_error" else res.message


def normalize_message(msg: str, case: Case | None = None) -> str:
    """Group key of a message: paths, numbers and hex ids removed."""
    if case is not None:
        msg = msg.replace(str(case.case_dir), "<case>").replace(str(case.good), "<src>")
    msg = msg.replace(str(ROOT), "<repo>")
    msg = re.sub(r"/tmp/\S+", "<tmp>", msg)
    msg = re.sub(r"0x[0-9a-fA-F]+", "0x_", msg)
    msg = re.sub(r"'[^']{40,}'", "'…'", msg)
    msg = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", msg)
    msg = re.sub(r"\(set NORMAUDIT_DEBUG=N for the traceback\)", "", msg)
    return re.sub(r"\s+", " ", msg).strip()[:220]


def where_function(where: str) -> str:
    """``normaudit/x.py func`` of a ``where`` (line numbers and the library frame below dropped)."""
    if not where:
        return "? (no Python frame: read from native code, or no stack)"
    head = where.split(" -> ", 1)[0] if where.startswith("normaudit/") else where
    return re.sub(r":\d+ ", " ", re.sub(r":\d+ (\S+)$", r" \1", head))


_BY_WHERE = {"sentinel", "outside_read", "outside_open", "signal", "timeout", "memory"}


def group_failures(results: Iterable[Result]) -> dict[tuple[str, str, str, str], list[Result]]:
    """Failures by (format, class, where, normalized message)."""
    groups: dict[tuple[str, str, str, str], list[Result]] = {}
    for r in results:
        if r.ok:
            continue
        if r.outcome in _BY_WHERE:  # where it hung / allocated / read: the normaudit function, not the line
            key = (r.case.fmt, r.outcome, where_function(r.where), "")
        else:
            key = (r.case.fmt, r.outcome, r.where, normalize_message(r.message, r.case))
        groups.setdefault(key, []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], CLASSES.index(kv[0][1]) if kv[0][1] in CLASSES
                                                       else 99, -len(kv[1]))))


# ================================================================================================
# running a format
# ================================================================================================

def prepare(formats: Iterable[str]) -> None:
    """Import what the readers import lazily and cache the sources' inspect output, before forking."""
    import torch

    for fmt in formats:
        for src in sources(fmt):
            source_info(src)
    torch.set_num_threads(max(torch.get_num_threads(), 1))


def fuzz_format(fmt: str, n_cases: int, base_seed: int = 0, *, start: int = 0, jobs: int = 1,
                limits: Limits | None = None, root: Path | None = None, keep: bool = False,
                on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run cases ``start .. start + n_cases - 1`` of format ``fmt`` for ``base_seed``."""
    prepare([fmt])
    own = root is None
    root = Path(tempfile.mkdtemp(prefix=f"normaudit-fuzz-{fmt}-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    try:
        factories = [(lambda i=i: make_case(fmt, case_seed(base_seed, fmt, i), root))
                     for i in range(start, start + n_cases)]
        return run_cases(factories, jobs=jobs, limits=limits, keep=keep, on_result=on_result)
    finally:
        if own and not keep:
            shutil.rmtree(root, ignore_errors=True)


def replay(fmt: str, seed: int, *, debug: bool = False, keep: Path | None = None,
           limits: Limits | None = None) -> Result:
    """Build and run the one case ``seed`` of ``fmt`` (what a failure message names)."""
    prepare([fmt])
    root = keep or Path(tempfile.mkdtemp(prefix="normaudit-replay-"))
    root.mkdir(parents=True, exist_ok=True)
    case = make_case(fmt, seed, root)
    res = run_cases([case], limits=limits, debug=debug, rerun_debug=not debug, keep=True)[0]
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return res


def describe(res: Result) -> str:
    c = res.case
    lines = [f"case      {c.fmt} seed={c.seed}", f"mutation  {c.mutation}: {c.detail}",
             f"command   normaudit {' '.join(c.argv)}", f"outcome   {res.outcome}",
             f"exit      {res.exit_code} signal={res.signal} wall={res.wall:.2f}s peak_rss=+{res.peak_rss_mb:.0f}MiB"]
    lines += [f"reason    {r}" for r in res.reasons]
    if res.where:
        lines.append(f"where     {res.where}")
    if res.message:
        lines.append(f"message   {res.message}")
    lines.append("--- stderr (tail) ---")
    lines.append(res.stderr[-4000:])
    if res.debug_trace:
        lines.append("--- NORMAUDIT_DEBUG=1 re-run stderr (tail) ---")
        lines.append(res.debug_trace[-4000:])
    lines.append(f"--- stdout ({len(res.stdout)} chars, head) ---")
    lines.append(res.stdout[:1500])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.fuzzing", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("replay", help="run one case by its seed and show everything about it")
    rp.add_argument("fmt", choices=FORMATS)
    rp.add_argument("seed", type=int)
    rp.add_argument("--debug", action="store_true", help="run the case with NORMAUDIT_DEBUG=1 (tracebacks)")
    rp.add_argument("--keep", type=Path, help="build the case under this folder and keep it")
    rp.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args(argv)
    res = replay(args.fmt, args.seed, debug=args.debug, keep=args.keep, limits=Limits(timeout=args.timeout))
    print(describe(res))
    if args.keep:
        print(f"\ncase files kept in {res.case.case_dir}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
