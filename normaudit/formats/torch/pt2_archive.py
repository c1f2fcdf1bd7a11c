"""Read torch.export ``.pt2`` archives without torch and without unpickling anything.

A ``.pt2`` written by ``torch.export.save`` is a zip whose members all sit under one folder
(``<archive>/``)::

    models/<name>.json                           one JSON-serialized ExportedProgram per program
    data/weights/<name>_weights_config.json      fqn -> {path_name, is_param, use_pickle, tensor_meta}
    data/weights/weight_N                        raw little-endian storage bytes
    data/constants/<name>_constants_config.json  the same for tensor constants / non-persistent buffers
    data/constants/tensor_N                      (custom_obj_N / opaque_obj_N are pickles)
    data/sample_inputs/<name>.pt                 torch.save'd example inputs (a pickle)
    archive_format, archive_version, byteorder, .data/version, ...

This module rebuilds fx-like nodes (:class:`Pt2Node`) from the JSON and lazy :class:`TensorRef` weights
from the raw bytes.  Nothing is ever unpickled: :func:`unsafe_reasons` reads the archive the way
``torch.export.load`` would and lists what it would unpickle (or load as compiled code), so that a
caller can refuse before ever handing the file to torch.

Every problem is a one-line :class:`CorruptFile` / :class:`UntrustedPickle` naming the file, the
member or key and what is wrong; sizes are checked before anything is allocated.
"""

from __future__ import annotations

import json
import keyword
import os
import pickletools
import struct
import threading
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from ...errors import CorruptFile, NormauditError, UnsupportedFormat, UntrustedPickle, brief
from ...model import TensorRef

try:  # optional: float8 weights (bf16 is decoded with numpy alone)
    import ml_dtypes as _ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    _ml_dtypes = None

PICKLE_HINT = ("pass --trust-pickle only if you trust where this file came from (unpickling can run arbitrary "
               "code); or re-export it with plain tensor weights")

# -- caps (module constants so tests and callers can tighten them) ------------------------------------

MAX_MEMBERS = 100_000  # zip entries
MAX_CENTRAL_DIRECTORY = 8 * 2**20  # zip central directory bytes (torch's entries are ~72 bytes each)
MAX_JSON_BYTES = 256 * 2**20  # one JSON member (claimed size, checked before reading)
MAX_JSON_DEPTH = 160  # torch's own programs nest ~20 deep (+~8 per nested higher-order-op subgraph)
MAX_SAMPLE_INPUTS_BYTES = 256 * 2**20  # data/sample_inputs/<name>.pt scanned for its pickle
MAX_PICKLE_BYTES = 16 * 2**20  # the data.pkl inside it
MAX_EXPANDED_BYTES = 16 * 2**20  # a broadcast (stride 0) view may materialise up to this beyond its storage
MAX_NDIM = 64  # numpy's limit

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"

# -- schema facts (torch/_export/serde/schema.py, schema version 8) -----------------------------------


@dataclass(frozen=True)
class _DType:
    torch_name: str  # str(torch dtype) without "torch."
    name: str  # normaudit dtype string (what model.dtype_name gives for the torch dtype)
    itemsize: int
    storage: str | None  # numpy dtype of the stored bytes (little-endian), None: no numpy equivalent


# ScalarType enum value -> dtype
_DTYPES: dict[int, _DType] = {
    1: _DType("uint8", "U8", 1, "u1"),
    2: _DType("int8", "I8", 1, "i1"),
    3: _DType("int16", "INT16", 2, "<i2"),
    4: _DType("int32", "I32", 4, "<i4"),
    5: _DType("int64", "I64", 8, "<i8"),
    6: _DType("float16", "F16", 2, "<f2"),
    7: _DType("float32", "F32", 4, "<f4"),
    8: _DType("float64", "F64", 8, "<f8"),
    9: _DType("complex32", "COMPLEX32", 4, None),
    10: _DType("complex64", "COMPLEX64", 8, None),
    11: _DType("complex128", "COMPLEX128", 16, None),
    12: _DType("bool", "BOOL", 1, "?"),
    13: _DType("bfloat16", "BF16", 2, "<u2"),  # decoded to float32 (ml_dtypes not needed)
    28: _DType("uint16", "UINT16", 2, "<u2"),
    29: _DType("float8_e4m3fn", "FLOAT8_E4M3FN", 1, "float8_e4m3fn"),
    30: _DType("float8_e5m2", "FLOAT8_E5M2", 1, "float8_e5m2"),
    31: _DType("float8_e4m3fnuz", "FLOAT8_E4M3FNUZ", 1, "float8_e4m3fnuz"),
    32: _DType("float8_e5m2fnuz", "FLOAT8_E5M2FNUZ", 1, "float8_e5m2fnuz"),
    33: _DType("float8_e8m0fnu", "FLOAT8_E8M0FNU", 1, "float8_e8m0fnu"),
    34: _DType("uint32", "UINT32", 4, "<u4"),
    35: _DType("uint64", "UINT64", 8, "<u8"),
}
_LAYOUT_STRIDED = 7
_LAYOUTS = {1: "sparse_coo", 2: "sparse_csr", 3: "sparse_csc", 4: "sparse_bsr", 5: "sparse_bsc", 6: "_mkldnn",
            7: "strided"}
_MEMORY_FORMATS = {1: "contiguous_format", 2: "channels_last", 3: "channels_last_3d", 4: "preserve_format"}
_POSITIONAL, _KEYWORD = 1, 2  # ArgumentKind

# serialized targets of the python-level symbolic ops (serialize.py _SYM_OPS): inputs are all positional
_SYM_OPS = frozenset(
    [f"_operator.{n}" for n in ("eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add", "sub", "floordiv",
                                "mod", "pow", "truediv", "and_", "or_", "lshift", "rshift")]
    + ["math.trunc"]
    + [f"torch.{n}" for n in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt")]
    + ["torch.ops.aten.item.default"])

# globals a plain torch.save'd tuple/dict of tensors uses; all accepted by torch's weights_only unpickler
_PICKLE_GLOBALS = frozenset(
    [("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")]
    + [("torch", f"{t}Storage") for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                           "Byte", "Bool", "ComplexFloat", "ComplexDouble")])
_STRING_OPS = frozenset(["SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"])
# members a torch.save zip may hold besides data.pkl and data/<n>; anything else (constants.pkl: TorchScript, ...)
# makes torch.load take another path
_SAVE_ZIP_MEMBERS = frozenset(["data.pkl", "version", ".data/version", "byteorder", ".data/serialization_id",
                               ".format_version", ".storage_alignment"])


# -- public data model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pt2TensorMeta:
    """``node.meta["val"]`` of a tensor value: what fx holds as a FakeTensor."""

    shape: tuple[int | str, ...]  # str: a symbolic size's expression
    dtype: str  # F32, F16, BF16, I64, ... (normaudit names)


@dataclass(eq=False, repr=False)
class Pt2Node:
    """One graph node, with the torch.fx.Node attributes normaudit's matchers read.

    ``target`` is ``str(fx_node.target)`` (``aten.layer_norm.default``, ``<built-in function getitem>``,
    ``wrap_with_set_grad_enabled``); ``args`` holds Pt2Node for values, python scalars, lists of those;
    dtypes / layouts / memory formats / devices are their ``str()`` (``torch.float32``, ``cpu``).
    """

    name: str
    op: str  # placeholder | call_function | get_attr | output
    target: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    users: dict = field(default_factory=dict)  # Pt2Node -> None, in the order the users were created

    def __repr__(self) -> str:  # like fx: the name (args/users are cyclic)
        return self.name

    @property
    def all_input_nodes(self) -> list[Pt2Node]:
        return list(_input_nodes(self.args, self.kwargs))


@dataclass(eq=False)
class Pt2Program:
    """One exported program of the archive (``models/<name>.json``) with its weights."""

    name: str
    nodes: list[Pt2Node]  # graph order, placeholders first, output last
    inputs_to_parameters: dict[str, str]  # placeholder name -> fqn
    inputs_to_buffers: dict[str, str]
    inputs_to_lifted_tensor_constants: dict[str, str]
    user_inputs: tuple
    user_outputs: tuple
    state: dict[str, TensorRef]  # fqn -> tensor: parameters, buffers and tensor constants
    pickled: dict[str, str] = field(default_factory=dict)  # fqn -> member; only with trust_pickle (never read)
    subgraphs: dict[str, list[Pt2Node]] = field(default_factory=dict)  # get_attr target -> nodes (HOP bodies)
    torch_version: str = ""
    schema_version: tuple[int, int] = (0, 0)

    def node(self, name: str) -> Pt2Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


@dataclass(eq=False)
class Pt2Archive:
    path: Path
    programs: dict[str, Pt2Program]
    _source: _Source | None = field(default=None, repr=False)

    @property
    def main(self) -> Pt2Program:
        """The program ``torch.export.load`` returns: ``model`` (or the only one)."""
        if "model" in self.programs:
            return self.programs["model"]
        if len(self.programs) == 1:
            return next(iter(self.programs.values()))
        raise CorruptFile(f"{self.path}: no program named 'model' among {sorted(self.programs)}")

    def close(self) -> None:
        """Close the file handle tensor loads keep open (a later load reopens it)."""
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> Pt2Archive:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_pt2(path: Path, *, trust_pickle: bool = False) -> Pt2Archive:
    """Parse every program of a ``.pt2`` archive; tensors are read lazily (``TensorRef.load``).

    Unless ``trust_pickle``, refuses (:class:`UntrustedPickle`) any archive ``torch.export.load`` would
    unpickle anything from (or load compiled code from).  With ``trust_pickle`` those archives are read
    all the same, but pickled payloads are only listed in ``Pt2Program.pickled``: they are never read.
    """
    path = Path(path)
    with _Zip(path) as arc:
        if not trust_pickle:
            _refuse(path, _unsafe_reasons(arc))
        if arc.legacy:
            raise UnsupportedFormat(
                f"{path}: older .pt2 layout (a root 'version' record with serialized_*.pt members): its weights "
                "are pickles, which normaudit never reads; re-export it with torch.export.save")
        arc.check_header()
        source = _Source(path, arc)
        names = arc.program_names()
        if not names:
            raise CorruptFile(f"{path}: no exported program (no {arc.prefix}models/<name>.json member)")
        programs = {name: _ProgramReader(arc, name, source).read() for name in names}
    return Pt2Archive(path, programs, source)


def unsafe_reasons(path: Path) -> list[str]:
    """What ``torch.export.load`` would unpickle (or load as compiled code) from this archive; [] if nothing.

    Raises CorruptFile for an archive too broken to tell."""
    with _Zip(Path(path)) as arc:
        return _unsafe_reasons(arc)


def refuse_unsafe(path: Path) -> None:
    """Raise UntrustedPickle if ``torch.export.load`` would unpickle anything from this archive."""
    _refuse(Path(path), unsafe_reasons(path))


# -- zip container ---------------------------------------------------------------------------------------


def _check_central_directory(fh: BinaryIO, size: int, label: str) -> None:
    """Cap the central directory zipfile will parse (one ZipInfo per entry) before it parses it.

    Finds the end records the way zipfile does (``_EndRecData``): a comment-less record in the last 22
    bytes, else the last signature in the final 64 KiB; a zip64 record right before its locator wins."""
    rec = b""
    if size >= 22:
        fh.seek(size - 22)
        rec = fh.read(22)
    if rec[:4] == _EOCD and rec[-2:] == b"\0\0":
        eocd = size - 22
    else:
        start = max(size - 65536 - 22, 0)
        fh.seek(start)
        tail = fh.read()
        pos = tail.rfind(_EOCD)
        if pos < 0 or len(tail) - pos < 22:
            raise CorruptFile(f"{label}: not a zip archive or truncated (no end-of-central-directory record)")
        eocd, rec = start + pos, tail[pos:pos + 22]
    entries, cd_size = struct.unpack_from("<HI", rec, 10)
    if eocd >= 76:
        fh.seek(eocd - 20)
        if fh.read(4) == _ZIP64_LOCATOR:
            fh.seek(eocd - 76)
            rec64 = fh.read(56)
            if rec64[:4] == _ZIP64_EOCD:
                entries, cd_size = struct.unpack_from("<QQ", rec64, 32)
    if entries > MAX_MEMBERS:
        raise CorruptFile(f"{label}: zip claims {entries} members (limit {MAX_MEMBERS})")
    if cd_size > MAX_CENTRAL_DIRECTORY:
        raise CorruptFile(f"{label}: zip central directory is {cd_size} bytes (limit {MAX_CENTRAL_DIRECTORY})")


def _bad_name(name: str) -> str | None:
    if "\x00" in name:
        return "contains a NUL byte"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if "\\" in name:
        return "contains a backslash"
    if any(part == ".." for part in name.split("/")):
        return "contains '..'"
    return None


class _Zip:
    """An opened, validated zip: entry names checked, layout (prefix / older layout) determined."""

    def __init__(self, path: Path, fh: BinaryIO | None = None, label: str | None = None) -> None:
        self.path = path
        self.label = label or str(path)
        self._own = fh is None
        try:
            self.fh = fh if fh is not None else open(path, "rb")
        except OSError as exc:
            raise CorruptFile(f"{self.label}: cannot open ({brief(exc)})") from None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        try:
            size = self.fh.seek(0, os.SEEK_END)
            _check_central_directory(self.fh, size, self.label)
            self.zf = zipfile.ZipFile(self.fh)
            infos = self.zf.infolist()
        except NormauditError:
            raise
        except Exception as exc:
            raise CorruptFile(f"{self.label}: corrupt or truncated zip archive ({brief(exc)})") from None
        if len(infos) > MAX_MEMBERS:
            raise CorruptFile(f"{self.label}: {len(infos)} zip members (limit {MAX_MEMBERS})")
        self.size = size
        self.configs: dict[str, dict[str, Any]] = {}  # parsed payload configs, by record name
        self.infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            why = _bad_name(info.orig_filename)
            if why:
                raise CorruptFile(f"{self.label}: member name {info.orig_filename!r} {why}")
            if info.filename in self.infos:
                raise CorruptFile(f"{self.label}: member {info.filename!r} appears twice")
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise CorruptFile(f"{self.label}: member {info.filename!r}: stored member claims {info.file_size} "
                                  f"bytes but holds {info.compress_size}")
            if info.header_offset + 30 + len(info.orig_filename) + info.compress_size > size:
                raise CorruptFile(f"{self.label}: member {info.filename!r} runs past the end of the file "
                                  "(truncated archive?)")
            self.infos[info.filename] = info
        names = list(self.infos)
        # torch.export.load falls back to the older layout (whole-program pickles) when it finds a root 'version'
        self.legacy = "version" in self.infos
        self.prefix = ""
        self.records: dict[str, zipfile.ZipInfo] = {}
        if self.legacy or not names:
            return
        first = names[0]
        if "/" not in first:
            raise CorruptFile(f"{self.label}: member {first!r} is not inside the archive's folder")
        self.prefix = first.split("/", 1)[0] + "/"
        for name in names:
            if not name.startswith(self.prefix):
                raise CorruptFile(f"{self.label}: member {name!r} is outside the archive folder {self.prefix!r}")
            if not name.endswith("/"):  # directory entries hold nothing
                self.records[name[len(self.prefix):]] = self.infos[name]

    def close(self) -> None:
        zf = getattr(self, "zf", None)
        if zf is not None:
            zf.close()
        if self._own and getattr(self, "fh", None) is not None:
            self.fh.close()

    def __enter__(self) -> _Zip:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # reading ------------------------------------------------------------------------------------------

    def where(self, rel: str) -> str:
        return f"{self.label}: {self.prefix}{rel}"

    def read_range(self, rel: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` of a member; never inflates more than ``start + length`` bytes."""
        info = self.records[rel]
        try:
            with self.zf.open(info) as f:
                if start:
                    f.seek(start)
                data = f.read(length)
        except Exception as exc:
            raise CorruptFile(f"{self.where(rel)}: cannot read ({brief(exc)})") from None
        if len(data) != length:
            raise CorruptFile(f"{self.where(rel)}: truncated member ({len(data)} of {length} bytes)")
        return data

    def read_all(self, rel: str, cap: int, what: str) -> bytes:
        info = self.records[rel]
        if info.file_size > cap:
            raise CorruptFile(f"{self.where(rel)}: {info.file_size} bytes is too large for {what} (limit {cap})")
        return self.read_range(rel, 0, info.file_size)  # reads to the end: zipfile checks the CRC

    def read_json(self, rel: str) -> Any:
        data = self.read_all(rel, MAX_JSON_BYTES, "a JSON member")
        try:
            obj = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise CorruptFile(f"{self.where(rel)}: JSON nested too deeply") from None
        except ValueError as exc:
            raise CorruptFile(f"{self.where(rel)}: invalid JSON ({brief(exc, 120)})") from None
        if not _depth_ok(obj, MAX_JSON_DEPTH):
            raise CorruptFile(f"{self.where(rel)}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if not isinstance(obj, dict):
            raise CorruptFile(f"{self.where(rel)}: JSON is a {type(obj).__name__}, not an object")
        return obj

    # layout -------------------------------------------------------------------------------------------

    def program_names(self) -> list[str]:
        """Programs the way torch names them: every record under models/ is ``models/<name>.json``."""
        names = []
        for rel in self.records:
            if rel.startswith("models/"):
                if not rel.endswith(".json") or len(rel) <= len("models/.json"):
                    raise CorruptFile(f"{self.where(rel)}: not a models/<name>.json program")
                names.append(rel[len("models/"):-len(".json")])
        return names

    def check_header(self) -> None:
        if "archive_version" not in self.records:
            raise CorruptFile(f"{self.label}: no {self.prefix}archive_version record (not a torch.export archive)")
        version = self.read_all("archive_version", 64, "archive_version")
        if version != b"0":
            raise CorruptFile(f"{self.where('archive_version')}: unsupported .pt2 archive version {version[:16]!r}")
        if "byteorder" in self.records:
            order = self.read_all("byteorder", 64, "byteorder").strip()
            if order != b"little":
                raise UnsupportedFormat(f"{self.where('byteorder')}: {order[:16]!r} byte order is not supported")


def _depth_ok(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        x, depth = stack.pop()
        if isinstance(x, dict):
            if depth >= limit and x:
                return False
            stack.extend((v, depth + 1) for v in x.values())
        elif isinstance(x, list):
            if depth >= limit and x:
                return False
            stack.extend((v, depth + 1) for v in x)
    return True


class _Source:
    """Where lazy tensor loads read from: the archive, reopened on demand (closed by close() or GC)."""

    def __init__(self, path: Path, arc: _Zip) -> None:
        self.path = path
        self.expected = {rel: (i.file_size, i.CRC, i.header_offset) for rel, i in arc.records.items()}
        self._holder: list[_Zip | None] = [None]  # the open archive, shared with the GC finalizer
        self._lock = threading.Lock()
        weakref.finalize(self, _Source._close_holder, self._holder)

    @staticmethod
    def _close_holder(holder: list) -> None:
        if holder[0] is not None:
            holder[0].close()
            holder[0] = None

    def read_range(self, rel: str, start: int, length: int) -> bytes:
        with self._lock:
            arc = self._holder[0]
            if arc is None:
                arc = _Zip(self.path)
                self._holder[0] = arc
            info = arc.records.get(rel)
            if info is None or (info.file_size, info.CRC, info.header_offset) != self.expected.get(rel):
                raise CorruptFile(f"{self.path}: {arc.prefix}{rel} changed since the archive was read")
            return arc.read_range(rel, start, length)

    def close(self) -> None:
        with self._lock:
            _Source._close_holder(self._holder)


# -- what torch.export.load would unpickle -------------------------------------------------------------


def _refuse(path: Path, reasons: list[str]) -> None:
    if reasons:
        more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
        raise UntrustedPickle(f"{path}: refused to load: {reasons[0]}{more}; torch.export.load would unpickle it "
                              "(or load its compiled code), which can run arbitrary code", hint=PICKLE_HINT)


def _unsafe_reasons(arc: _Zip) -> list[str]:
    reasons: list[str] = []
    if arc.legacy:
        pickles = sorted(n for n in arc.infos if "/" not in n and n.endswith(".pt"))
        reasons.append("older .pt2 layout (a root 'version' record): torch.export.load unpickles its "
                       + (", ".join(pickles) if pickles else "serialized_*.pt members"))
        return reasons
    aoti = False
    for rel in arc.records:
        if rel.startswith("data/aotinductor/"):
            if not aoti:
                reasons.append(f"{arc.prefix}{rel}: AOTInductor package (torch.export.load loads its compiled "
                               "shared library)")
                aoti = True
        elif rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt"):
            reasons.append(f"{arc.prefix}{rel} is a legacy pickled payload")
        elif rel.startswith("data/weights/") and rel.endswith("_weights_config.json"):
            program = rel[len("data/weights/"):-len("_weights_config.json")]
            for fqn, meta in _payload_config(arc, rel).items():
                if isinstance(meta, dict) and meta.get("use_pickle"):
                    reasons.append(f"program {program!r}: {fqn} is stored as a pickle "
                                   f"({arc.prefix}data/weights/{meta.get('path_name')})")
        elif rel.startswith("data/constants/") and rel.endswith("_constants_config.json"):
            program = rel[len("data/constants/"):-len("_constants_config.json")]
            for fqn, meta in _payload_config(arc, rel).items():
                if not isinstance(meta, dict):
                    continue
                path_name = str(meta.get("path_name", ""))
                member = f"{arc.prefix}data/constants/{path_name}"
                if path_name.startswith("custom_obj_"):
                    reasons.append(f"program {program!r}: constant {fqn} is a pickled TorchScript object ({member})")
                elif path_name.startswith("opaque_obj_"):
                    reasons.append(f"program {program!r}: constant {fqn} is a pickled opaque object ({member})")
                elif meta.get("use_pickle"):
                    reasons.append(f"program {program!r}: constant {fqn} is stored as a pickle ({member})")
        elif rel.startswith("data/sample_inputs/") and rel.endswith(".pt"):
            why = _sample_inputs_reason(arc, rel)
            if why:
                reasons.append(f"{arc.prefix}{rel} {why}")
    return reasons


def _payload_config(arc: _Zip, rel: str) -> dict[str, Any]:
    if rel not in arc.configs:
        config = arc.read_json(rel).get("config")
        if not isinstance(config, dict):
            raise CorruptFile(f"{arc.where(rel)}: 'config' is not an object")
        arc.configs[rel] = config
    return arc.configs[rel]


def _sample_inputs_reason(arc: _Zip, rel: str) -> str | None:
    """Why torch.load of these sample inputs would not be a plain weights-only tensor load (None: it would)."""
    info = arc.records[rel]
    if info.file_size == 0:
        return None  # torch skips empty sample inputs
    if info.file_size > MAX_SAMPLE_INPUTS_BYTES:
        return f"is {info.file_size} bytes: too large to verify it holds only tensors"
    if arc.read_range(rel, 0, min(4, info.file_size)) != b"PK\x03\x04":
        return "is not a torch.save zip (a bare pickle: torch would fully unpickle it)"
    try:
        with arc.zf.open(info) as member, _Zip(arc.path, member, f"{arc.where(rel)}") as inner:
            if inner.legacy or not inner.records:
                return "is not a torch.save archive"
            for name in inner.records:
                if name not in _SAVE_ZIP_MEMBERS and not (name.startswith("data/") and name[5:].isdigit()):
                    return f"holds {inner.prefix}{name} (not a plain tensor save)"
            if "data.pkl" not in inner.records:
                return "has no data.pkl"
            pkl = inner.records["data.pkl"]
            if pkl.file_size > MAX_PICKLE_BYTES:
                return f"has a {pkl.file_size}-byte data.pkl: too large to verify"
            data = inner.read_range("data.pkl", 0, pkl.file_size)
    except CorruptFile as exc:
        return f"is not a readable torch.save zip ({str(exc).rsplit(': ', 1)[-1]})"
    return _pickle_reason(data)


def _pickle_reason(data: bytes) -> str | None:
    """Statically scan a pickle (never executed): every global it imports must be a plain-tensor one."""
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # last values pushed, as far as strings matter (STACK_GLOBAL reads two)
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if (module, attr) not in _PICKLE_GLOBALS:
                    return f"imports {module}.{attr} (not a plain tensor pickle)"
                pushed.append(None)
            elif name == "STACK_GLOBAL":
                if len(pushed) < 2 or not all(isinstance(v, str) for v in pushed[-2:]):
                    return "imports a global built at run time (not a plain tensor pickle)"
                module, attr = pushed[-2], pushed[-1]
                if (module, attr) not in _PICKLE_GLOBALS:
                    return f"imports {module}.{attr} (not a plain tensor pickle)"
                pushed.append(None)
            elif name in ("EXT1", "EXT2", "EXT4"):
                return "uses the copyreg extension registry (not a plain tensor pickle)"
            elif name in _STRING_OPS:
                pushed.append(arg if isinstance(arg, str) else None)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = pushed[-1] if pushed else None
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(arg)))
            else:
                pushed.append(None)
            if len(pushed) > 64:
                del pushed[:-2]
    except Exception as exc:  # genops only parses; anything odd means "not a plain tensor pickle"
        return f"holds an unparseable pickle ({brief(exc, 80)})"
    return None


# -- tensors ------------------------------------------------------------------------------------------------


def _int(value: Any, where: str, what: str) -> int:
    if type(value) is not int or value < 0:
        raise CorruptFile(f"{where}: {what} {value!r} is not a non-negative integer")
    return value


def _sym_int(value: Any, where: str, what: str) -> int:
    if not isinstance(value, dict) or len(value) != 1:
        raise CorruptFile(f"{where}: {what} is not a SymInt record")
    if "as_int" not in value:
        raise CorruptFile(f"{where}: {what} is symbolic ({str(value)[:80]}); a stored tensor needs concrete sizes")
    return _int(value["as_int"], where, what)


def _dtype(value: Any, where: str) -> _DType:
    dt = _DTYPES.get(value) if type(value) is int else None
    if dt is None:
        raise CorruptFile(f"{where}: unknown dtype enum {value!r}")
    return dt


class _TensorSpec:
    """A validated strided view of a stored member: sizes, strides and offset checked against its length."""

    def __init__(self, meta: Any, arc: _Zip, rel: str, where: str) -> None:
        if not isinstance(meta, dict):
            raise CorruptFile(f"{where}: tensor_meta is missing or not an object")
        self.dtype = _dtype(meta.get("dtype"), where)
        layout = meta.get("layout", _LAYOUT_STRIDED)
        if layout != _LAYOUT_STRIDED:
            raise CorruptFile(f"{where}: layout {layout!r} ({_LAYOUTS.get(layout, 'unknown')}) is not a strided "
                              "tensor")
        sizes, strides = meta.get("sizes"), meta.get("strides")
        if not isinstance(sizes, list) or not isinstance(strides, list) or len(sizes) != len(strides):
            raise CorruptFile(f"{where}: sizes / strides are not two lists of the same length")
        if len(sizes) > MAX_NDIM:
            raise CorruptFile(f"{where}: {len(sizes)} dimensions (limit {MAX_NDIM})")
        self.shape = tuple(_sym_int(s, where, "size") for s in sizes)
        self.strides = tuple(_sym_int(s, where, "stride") for s in strides)
        self.offset = _sym_int(meta.get("storage_offset", {"as_int": 0}), where, "storage_offset")
        info = arc.records.get(rel)
        if info is None:
            raise CorruptFile(f"{where}: member {arc.prefix}{rel} is missing from the archive")
        self.rel = rel
        nbytes, isz = info.file_size, self.dtype.itemsize
        if nbytes % isz:
            raise CorruptFile(f"{where}: member {arc.prefix}{rel} is {nbytes} bytes, not a multiple of the "
                              f"{self.dtype.torch_name} element size {isz}")
        self.numel = 1
        for s in self.shape:
            self.numel *= s
        if self.numel == 0:
            self.start = self.length = 0
            return
        extent = self.offset + sum((s - 1) * st for s, st in zip(self.shape, self.strides)) + 1  # elements
        if extent * isz > nbytes:
            raise CorruptFile(f"{where}: sizes {list(self.shape)} / strides {list(self.strides)} / offset "
                              f"{self.offset} need {extent * isz} bytes but member {arc.prefix}{rel} has {nbytes}")
        if self.numel * isz > max(nbytes, MAX_EXPANDED_BYTES):
            raise CorruptFile(f"{where}: a {self.numel}-element view of a {nbytes}-byte member is too large")
        self.start = self.offset * isz
        self.length = extent * isz - self.start

    def loader(self, source: _Source, where: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            return self.decode(source.read_range(self.rel, self.start, self.length) if self.length else b"", where)
        return load

    def decode(self, raw: bytes, where: str) -> np.ndarray:
        dt = self.dtype
        if dt.storage is None:
            raise UnsupportedFormat(f"{where}: {dt.torch_name} tensors are not supported")
        if dt.storage.startswith("float8"):
            if _ml_dtypes is None:
                raise UnsupportedFormat(f"{where}: reading {dt.torch_name} needs the ml_dtypes package")
            storage = np.dtype(getattr(_ml_dtypes, dt.storage))
        else:
            storage = np.dtype(dt.storage)
        if self.numel == 0:
            return np.zeros(self.shape, dtype=np.float32 if dt.name == "BF16" else storage)
        flat = np.frombuffer(raw, dtype=storage)
        isz = storage.itemsize
        view = np.lib.stride_tricks.as_strided(flat, shape=self.shape, strides=tuple(s * isz for s in self.strides),
                                               writeable=False)
        arr = np.array(view)  # own, contiguous copy
        if dt.name == "BF16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        if dt.storage.startswith("float8"):
            return arr.astype(np.float32)
        return arr.astype(arr.dtype.newbyteorder("="), copy=False)


# -- programs -----------------------------------------------------------------------------------------------


def _input_nodes(args: Any, kwargs: dict) -> dict[Pt2Node, None]:
    found: dict[Pt2Node, None] = {}

    def walk(x: Any) -> None:
        if isinstance(x, Pt2Node):
            found.setdefault(x, None)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)

    walk(args)
    walk(kwargs)
    return found


def _union(value: Any, where: str, what: str) -> tuple[str, Any]:
    if not isinstance(value, dict) or len(value) != 1:
        raise CorruptFile(f"{where}: {what} is not a one-key union record")
    key, val = next(iter(value.items()))
    return key, val


def _target_str(target: str) -> str:
    """``str(fx_node.target)`` for a serialized target."""
    if target.startswith("torch.ops.higher_order."):
        return target[len("torch.ops.higher_order."):]
    if target.startswith("torch.ops."):
        return target[len("torch.ops."):]
    if target.startswith(("_operator.", "math.")) and target.count(".") == 1:
        return f"<built-in function {target.split('.', 1)[1]}>"
    return target


def _snake_name(target: str) -> str:
    """A base name for a node the file left unnamed (fx derives one from the target)."""
    base = target.rsplit(".", 2)[-2] if target.startswith("torch.ops.") and target.count(".") >= 3 else \
        target.rsplit(".", 1)[-1]
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in base).strip("_") or "node"
    return f"_{base}" if base[0].isdigit() else base


class _Namespace:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def fresh(self, base: str) -> str:
        name, n = base, 0
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name


class _GraphReader:
    """Rebuild one graph's nodes the way torch's GraphModuleDeserializer does (same names, order, getitems)."""

    def __init__(self, program: _ProgramReader, graph: Any, where: str, input_specs: list | None) -> None:
        self.p = program
        self.where = where
        if not isinstance(graph, dict):
            raise CorruptFile(f"{where}: graph is not an object")
        self.graph = graph
        self.input_specs = input_specs or []
        self.nodes: list[Pt2Node] = []
        self.context = ""  # "node #i (name): " while a node is read, for messages
        self.values: dict[str, Pt2Node] = {}  # serialized value name -> node
        self.ns = _Namespace()
        tv = graph.get("tensor_values", {})
        self.tensor_values = tv if isinstance(tv, dict) else {}
        sym = {}
        for key in ("sym_int_values", "sym_float_values", "sym_bool_values"):
            if isinstance(graph.get(key), dict):
                sym.update(graph[key])
        self.sym_values = sym

    # values -----------------------------------------------------------------------------------------

    def val(self, name: str) -> Any:
        meta = self.tensor_values.get(name)
        if isinstance(meta, dict):
            where = f"{self.where}: tensor_values[{name!r}]"
            shape: list[int | str] = []
            for s in meta.get("sizes") or []:
                kind, v = _union(s, where, "size")
                if kind == "as_int" and type(v) is int:
                    shape.append(v)
                elif kind == "as_expr" and isinstance(v, dict):
                    shape.append(str(v.get("expr_str", "")))
                else:
                    raise CorruptFile(f"{where}: bad size {s!r}")
            return Pt2TensorMeta(tuple(shape), _dtype(meta.get("dtype"), where).name)
        sym = self.sym_values.get(name)
        if isinstance(sym, dict) and len(sym) == 1:
            kind, v = next(iter(sym.items()))
            if kind.startswith("as_") and kind != "as_expr":
                return v
            if kind == "as_expr" and isinstance(v, dict):
                hint = v.get("hint")
                return next(iter(hint.values())) if isinstance(hint, dict) and len(hint) == 1 else v.get("expr_str")
        return None

    def ref(self, name: Any) -> Pt2Node:
        if not isinstance(name, str):
            raise CorruptFile(f"{self.where}: value reference {name!r} is not a name")
        node = self.values.get(name)
        if node is None:
            raise CorruptFile(f"{self.where}: {self.context}reference to unknown value {name!r} (not defined by an "
                              "earlier node)")
        return node

    def define(self, name: Any, node: Pt2Node) -> None:
        """Give a node the exact serialized name of the value it holds (torch's sync_fx_node)."""
        if not isinstance(name, str) or not name:
            raise CorruptFile(f"{self.where}: value name {name!r} is not a string")
        if name in self.values or name in self.ns.used:
            raise CorruptFile(f"{self.where}: value {name!r} is defined twice")
        self.ns.used.add(name)
        node.name = name
        self.values[name] = node
        node.meta["val"] = self.val(name)

    def add(self, node: Pt2Node) -> Pt2Node:
        for inp in _input_nodes(node.args, node.kwargs):
            inp.users[node] = None
        self.nodes.append(node)
        return node

    # arguments --------------------------------------------------------------------------------------

    def arg(self, a: Any) -> Any:
        kind, v = _union(a, self.where, "argument")
        if kind == "as_none":
            return None
        if kind == "as_tensor":
            return self.ref(v.get("name") if isinstance(v, dict) else v)
        if kind in ("as_int", "as_bool", "as_string"):
            expected = {"as_int": int, "as_bool": bool, "as_string": str}[kind]
            if type(v) is not expected:
                raise CorruptFile(f"{self.where}: {kind} value {v!r} has the wrong type")
            return v
        if kind == "as_float":
            return self.float(v)
        if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
            return self.sym_arg(v)
        if kind == "as_scalar_type":
            return "torch." + _dtype(v, self.where).torch_name
        if kind == "as_layout":
            if v not in _LAYOUTS:
                raise CorruptFile(f"{self.where}: unknown layout enum {v!r}")
            return "torch." + _LAYOUTS[v]
        if kind == "as_memory_format":
            if v not in _MEMORY_FORMATS:
                raise CorruptFile(f"{self.where}: unknown memory format enum {v!r}")
            return "torch." + _MEMORY_FORMATS[v]
        if kind == "as_device":
            if not isinstance(v, dict) or not isinstance(v.get("type"), str):
                raise CorruptFile(f"{self.where}: bad device {v!r}")
            index = v.get("index")
            return v["type"] if index is None else f"{v['type']}:{index}"
        if kind == "as_complex":
            return complex(self.float(v.get("real")), self.float(v.get("imag")))
        if kind == "as_graph":
            return self.subgraph(v)
        if kind == "as_custom_obj":
            name = v.get("name") if isinstance(v, dict) else None
            return self.values[name] if name in self.values else f"<custom object {name}>"
        if kind == "as_operator":
            if not isinstance(v, str):
                raise CorruptFile(f"{self.where}: operator {v!r} is not a string")
            return _target_str(v)
        if kind == "as_optional_tensor":
            k2, v2 = _union(v, self.where, "optional tensor")
            return None if k2 == "as_none" else self.ref(v2.get("name") if isinstance(v2, dict) else v2)
        if kind == "as_string_to_argument":
            if not isinstance(v, dict):
                raise CorruptFile(f"{self.where}: as_string_to_argument is not an object")
            return {str(k): self.arg(x) for k, x in v.items()}
        if not isinstance(v, list):
            raise CorruptFile(f"{self.where}: unknown argument kind {kind!r}")
        if not v:
            return []
        if kind == "as_tensors":
            return [self.ref(x.get("name") if isinstance(x, dict) else x) for x in v]
        if kind in ("as_ints", "as_bools", "as_strings"):
            expected = {"as_ints": int, "as_bools": bool, "as_strings": str}[kind]
            if any(type(x) is not expected for x in v):
                raise CorruptFile(f"{self.where}: {kind} holds a value of the wrong type")
            return list(v)
        if kind == "as_floats":
            return [self.float(x) for x in v]
        if kind in ("as_sym_ints", "as_sym_floats", "as_sym_bools"):
            return [self.sym_arg(x) for x in v]
        if kind == "as_optional_tensors":
            out = []
            for x in v:
                k2, v2 = _union(x, self.where, "optional tensor")
                out.append(None if k2 == "as_none" else self.ref(v2.get("name") if isinstance(v2, dict) else v2))
            return out
        if kind == "as_int_lists":
            return [tuple(int(y) for y in x) for x in v]
        if kind == "as_float_lists":
            return [[self.float(y) for y in x] for x in v]
        if kind == "as_nested_tensors":
            return [[self.ref(y.get("name") if isinstance(y, dict) else y) for y in x] for x in v]
        raise CorruptFile(f"{self.where}: unknown argument kind {kind!r}")

    def float(self, v: Any) -> float:
        if type(v) not in (int, float):
            raise CorruptFile(f"{self.where}: float value {v!r} is not a number")
        return float(v)

    def sym_arg(self, v: Any) -> Any:
        kind, x = _union(v, self.where, "symbolic argument")
        if kind == "as_name":
            return self.ref(x)
        if kind in ("as_int", "as_float", "as_bool"):
            return float(x) if kind == "as_float" else x
        raise CorruptFile(f"{self.where}: unknown symbolic argument {kind!r}")

    def subgraph(self, v: Any) -> Pt2Node:
        """A higher-order op's body: fx puts a get_attr node in the outer graph, the body in a submodule."""
        if not isinstance(v, dict) or not isinstance(v.get("name"), str):
            raise CorruptFile(f"{self.where}: bad graph argument")
        name = v["name"]
        inner = _GraphReader(self.p, v.get("graph"), f"{self.where} > {name}", None)
        self.p.subgraphs[name] = inner.read()
        node = Pt2Node(self.ns.fresh(name), "get_attr", name)
        return self.add(node)

    # nodes ------------------------------------------------------------------------------------------

    def read(self) -> list[Pt2Node]:
        g = self.graph
        for key in ("inputs", "outputs", "nodes"):
            if not isinstance(g.get(key), list):
                raise CorruptFile(f"{self.where}: graph {key!r} is not a list")
        for i, inp in enumerate(g["inputs"]):
            self.placeholder(i, inp)
        for i, sn in enumerate(g["nodes"]):
            if not isinstance(sn, dict) or not isinstance(sn.get("target"), str):
                raise CorruptFile(f"{self.where}: node #{i} is not an object with a target")
            label = sn.get("name") if isinstance(sn.get("name"), str) and sn.get("name") else sn["target"]
            self.context = f"node #{i} ({str(label)[:80]}): "
            self.node(sn)
        self.context = "graph output: "
        outs = []
        for out in g["outputs"]:
            kind, v = _union(out, self.where, "graph output")
            if kind == "as_tensor":
                outs.append(self.ref(v.get("name") if isinstance(v, dict) else None))
            elif kind in ("as_sym_int", "as_sym_bool", "as_sym_float"):
                outs.append(self.ref(v.get("as_name") if isinstance(v, dict) else None))
            elif kind in ("as_int", "as_float", "as_bool", "as_none"):
                outs.append(self.arg(out))
            else:
                raise CorruptFile(f"{self.where}: unsupported graph output {kind!r}")
        if g.get("is_single_tensor_return"):
            if len(outs) != 1:
                raise CorruptFile(f"{self.where}: single-tensor return with {len(outs)} outputs")
            result: Any = outs[0]
            val = getattr(result, "meta", {}).get("val")
        else:
            result = tuple(outs)
            val = tuple(o.meta.get("val") if isinstance(o, Pt2Node) else o for o in outs)
        self.add(Pt2Node(self.ns.fresh("output"), "output", "output", (result,), {}, {"val": val}))
        return self.nodes

    def placeholder(self, i: int, inp: Any) -> None:
        kind, v = _union(inp, self.where, "graph input")
        if kind in ("as_tensor", "as_custom_obj"):
            name = v.get("name") if isinstance(v, dict) else None
        elif kind == "as_sym_int":
            k2, name = _union(v, self.where, "symbolic input")
            if k2 != "as_name":
                raise CorruptFile(f"{self.where}: constant symint {v!r} as a graph input")
        elif kind in ("as_int", "as_float", "as_bool", "as_none", "as_string"):
            spec = self.input_specs[i] if i < len(self.input_specs) else None
            body = spec.get("constant_input") if isinstance(spec, dict) else None
            name = body.get("name") if isinstance(body, dict) and isinstance(body.get("name"), str) else None
            name = name or f"arg{i}"
            node = self.add(Pt2Node(self.ns.fresh(name), "placeholder", name))
            node.meta["val"] = self.arg(inp)
            return
        else:
            raise CorruptFile(f"{self.where}: invalid graph input kind {kind!r}")
        if not isinstance(name, str) or not name:
            raise CorruptFile(f"{self.where}: graph input #{i} has no name")
        node = Pt2Node(name, "placeholder", name)
        self.define(name, node)
        self.add(node)

    def inputs(self, sn: dict, schema: bool) -> tuple[tuple, dict]:
        raw = sn.get("inputs")
        if not isinstance(raw, list):
            raise CorruptFile(f"{self.where}: node inputs are not a list")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for inp in raw:
            if not isinstance(inp, dict) or not isinstance(inp.get("name"), str) or "arg" not in inp:
                raise CorruptFile(f"{self.where}: node input {str(inp)[:80]} is not a named argument")
            value = self.arg(inp["arg"])
            name, kind = inp["name"], inp.get("kind")
            if schema:
                # torch walks the op schema in order: POSITIONAL -> args, KEYWORD -> kwargs (a python keyword
                # as name goes positional); inputs without a kind (older files) are taken positionally
                if kind == _KEYWORD and not keyword.iskeyword(name):
                    kwargs[name] = value
                else:
                    args.append(value)
            elif kind == _POSITIONAL or name == "":
                args.append(value)
            else:
                kwargs[name] = value
        return tuple(args), kwargs

    def node(self, sn: dict) -> None:
        serialized = sn["target"]
        target = _target_str(serialized)
        outputs = sn.get("outputs")
        if not isinstance(outputs, list):
            raise CorruptFile(f"{self.where}: node outputs are not a list")
        metadata = self.metadata(sn.get("metadata"))
        is_hop = serialized.startswith("torch.ops.higher_order.")
        if serialized in _SYM_OPS:
            if not isinstance(sn.get("inputs"), list):
                raise CorruptFile(f"{self.where}: node inputs are not a list")
            args = tuple(self.arg(i.get("arg") if isinstance(i, dict) else None) for i in sn["inputs"])
            kwargs: dict[str, Any] = {}
        elif serialized.startswith("torch.ops.") and not is_hop:
            args, kwargs = self.inputs(sn, schema=True)
        else:  # higher-order ops and other callables: no schema, the recorded kinds decide
            args, kwargs = self.inputs(sn, schema=False)
            if is_hop:
                for x in (*args, *kwargs.values()):
                    if isinstance(x, Pt2Node) and x.op == "get_attr":
                        x.meta.update(metadata)
        name = sn.get("name") if isinstance(sn.get("name"), str) and sn.get("name") else None
        if name is None:  # older files: fx derives a name
            name = (self.output_name(outputs[0]) if len(outputs) == 1 else None) or _snake_name(serialized)
        node = Pt2Node(name, "call_function", target, args, kwargs)
        self.place(sn, node, outputs, metadata, is_hop)
        node.meta.update(metadata)
        node.meta.setdefault("nn_module_stack", {})

    @staticmethod
    def output_name(out: Any) -> str | None:
        if isinstance(out, dict) and len(out) == 1:
            kind, v = next(iter(out.items()))
            if isinstance(v, dict):
                if kind == "as_tensor":
                    return v.get("name")
                if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
                    return v.get("as_name")
        return None

    def place(self, sn: dict, node: Pt2Node, outputs: list, metadata: dict, is_hop: bool) -> None:
        """Add the node and its getitem nodes, named the way torch.export.load names them."""
        if not outputs:
            node.name = self.ns.fresh(node.name)
            self.add(node)
            return
        first_kind = next(iter(outputs[0])) if isinstance(outputs[0], dict) and len(outputs[0]) == 1 else None
        if len(outputs) == 1 and is_hop and not sn.get("is_hop_single_tensor_return") and first_kind != "as_none":
            # a HOP returning a 1-tuple: the node, then getitem 0
            out_name = self.output_name(outputs[0])
            if out_name is None:
                raise CorruptFile(f"{self.where}: node {node.name}: unsupported output {str(outputs[0])[:80]}")
            node.name = self.ns.fresh(node.name)
            self.values[node.name] = node
            self.add(node)
            node.meta["val"] = (self.getitem(node, 0, metadata, out_name).meta.get("val"),)
            return
        if len(outputs) == 1 and first_kind in ("as_tensor", "as_sym_int", "as_sym_float", "as_sym_bool"):
            self.define(self.output_name(outputs[0]), node)  # the node is named after its one output
            self.add(node)
            return
        if len(outputs) == 1 and first_kind == "as_none":
            node.name = self.ns.fresh(f"{_snake_name(sn['target'])}_unused")
            node.meta["val"] = None
            self.add(node)
            return
        node.name = self.ns.fresh(node.name)  # several outputs: the node, then one getitem per output
        self.values[node.name] = node
        self.add(node)
        if len(outputs) == 1:
            kind, items = _union(outputs[0], self.where, "output")
            if kind != "as_tensors" or not isinstance(items, list) or not items:
                raise CorruptFile(f"{self.where}: node {node.name}: unsupported output {str(outputs[0])[:80]}")
            vals = self.getitems(node, [{"as_tensor": x} for x in items], metadata)
        else:
            vals = self.getitems(node, outputs, metadata)
        node.meta["val"] = tuple(vals)

    def getitem(self, parent: Pt2Node, idx: int, metadata: dict, name: str | None, base: str = "getitem") -> Pt2Node:
        item = Pt2Node(base, "call_function", "<built-in function getitem>", (parent, idx), {})
        if name is None:
            item.name = self.ns.fresh(base)
        else:
            self.define(name, item)
        item.meta.update(metadata)
        return self.add(item)

    def getitems(self, parent: Pt2Node, outputs: list, metadata: dict) -> list:
        vals: list[Any] = []
        for idx, out in enumerate(outputs):
            kind, v = _union(out, self.where, "output")
            if kind in ("as_tensor", "as_sym_int", "as_sym_float"):
                name = self.output_name(out)
                if name is None:
                    raise CorruptFile(f"{self.where}: node {parent.name}: output #{idx} has no name")
                vals.append(self.getitem(parent, idx, metadata, name).meta.get("val"))
            elif kind in ("as_tensors", "as_sym_ints", "as_sym_floats"):
                if not isinstance(v, list):
                    raise CorruptFile(f"{self.where}: node {parent.name}: output #{idx} is not a list")
                lst = self.getitem(parent, idx, metadata, None)
                inner_kind = "as_tensor" if kind == "as_tensors" else kind[:-1]
                inner = self.getitems(lst, [{inner_kind: x} for x in v], metadata)
                lst.meta["val"] = inner
                vals.append(inner)
            elif kind == "as_none":
                item = self.getitem(parent, idx, metadata, None, base="as_none")
                item.meta["val"] = None
                vals.append(None)
            else:
                raise CorruptFile(f"{self.where}: node {parent.name}: unsupported output kind {kind!r}")
        return vals

    def metadata(self, md: Any) -> dict[str, Any]:
        if md is None:
            return {}
        if not isinstance(md, dict):
            raise CorruptFile(f"{self.where}: node metadata is not an object")
        out: dict[str, Any] = {}
        if isinstance(md.get("stack_trace"), str) and md["stack_trace"]:
            out["stack_trace"] = md["stack_trace"]
        stack = md.get("nn_module_stack")
        if isinstance(stack, str) and stack:
            entries = {}
            for item in stack.split(";"):
                parts = _split_meta(item)
                if len(parts) != 3:
                    raise CorruptFile(f"{self.where}: nn_module_stack entry {item[:80]!r} is not key,path,type")
                entries[parts[0]] = (parts[1], parts[2])
            out["nn_module_stack"] = entries
        if isinstance(md.get("torch_fn"), str) and md["torch_fn"]:
            out["torch_fn"] = tuple(md["torch_fn"].split(";"))
        return out


def _split_meta(text: str) -> list[str]:
    """Split ``key,path,type`` on the commas outside brackets (paths like ``L['self'].layers[0]``)."""
    out, start, depth = [], 0, 0
    for i, c in enumerate(text):
        if c in "[(":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


class _ProgramReader:
    def __init__(self, arc: _Zip, name: str, source: _Source) -> None:
        self.arc = arc
        self.name = name
        self.source = source
        self.rel = f"models/{name}.json"
        self.where = arc.where(self.rel)
        self.subgraphs: dict[str, list[Pt2Node]] = {}

    def read(self) -> Pt2Program:
        doc = self.arc.read_json(self.rel)
        try:
            return self._read(doc)
        except RecursionError:
            raise CorruptFile(f"{self.where}: graph nested too deeply") from None
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
            raise CorruptFile(f"{self.where}: malformed program ({brief(exc, 120)})") from None

    def _read(self, doc: dict) -> Pt2Program:
        version = doc.get("schema_version")
        major = version.get("major") if isinstance(version, dict) else None
        minor = version.get("minor", 0) if isinstance(version, dict) else 0
        if type(major) is not int or major not in (0, 8) or type(minor) is not int:
            raise CorruptFile(f"{self.where}: unsupported schema_version {version!r} (this reader knows 8.x)")
        gm = doc.get("graph_module")
        if not isinstance(gm, dict):
            raise CorruptFile(f"{self.where}: no graph_module object")
        sig = gm.get("signature")
        if not isinstance(sig, dict) or not isinstance(sig.get("input_specs"), list) \
                or not isinstance(sig.get("output_specs"), list):
            raise CorruptFile(f"{self.where}: graph_module.signature is missing its input/output specs")
        nodes = _GraphReader(self, gm.get("graph"), self.where, sig["input_specs"]).read()
        placeholders = {n.name for n in nodes if n.op == "placeholder"}
        params: dict[str, str] = {}
        buffers: dict[str, str] = {}
        consts: dict[str, str] = {}
        user_inputs: list[Any] = []
        n_inputs = sum(1 for n in nodes if n.op == "placeholder")
        if len(sig["input_specs"]) != n_inputs:
            raise CorruptFile(f"{self.where}: signature lists {len(sig['input_specs'])} inputs but the graph has "
                              f"{n_inputs}")
        for spec in sig["input_specs"]:
            kind, body = _union(spec, self.where, "input spec")
            if not isinstance(body, dict):
                raise CorruptFile(f"{self.where}: input spec {kind!r} is not an object")
            arg = body.get("arg")
            if kind == "user_input":
                user_inputs.append(self._spec_arg(arg))
                continue
            if kind == "constant_input":  # torch: a user input whose value is baked in
                user_inputs.append(self._spec_arg(body.get("value")))
                continue
            pname = arg.get("name") if isinstance(arg, dict) else None
            if pname not in placeholders:
                raise CorruptFile(f"{self.where}: input spec {kind!r} names unknown placeholder {pname!r}")
            fqn_key = {"parameter": "parameter_name", "buffer": "buffer_name",
                       "tensor_constant": "tensor_constant_name", "custom_obj": "custom_obj_name"}.get(kind)
            if kind == "token":
                continue
            if fqn_key is None:
                raise CorruptFile(f"{self.where}: unknown input spec kind {kind!r}")
            fqn = body.get(fqn_key)
            if not isinstance(fqn, str):
                raise CorruptFile(f"{self.where}: input spec {kind!r} of {pname!r} has no {fqn_key}")
            {"parameter": params, "buffer": buffers, "tensor_constant": consts}.get(kind, {})[pname] = fqn
        user_outputs = []
        for spec in sig["output_specs"]:
            kind, body = _union(spec, self.where, "output spec")
            if kind == "user_output" and isinstance(body, dict):
                user_outputs.append(self._spec_arg(body.get("arg")))
        state, pickled = self._state()
        for pname, fqn in (*params.items(), *buffers.items(), *consts.items()):
            if fqn not in state and fqn not in pickled:
                raise CorruptFile(f"{self.where}: {pname} reads {fqn!r}, which the weights/constants configs lack")
        tv = doc.get("torch_version")
        return Pt2Program(
            name=self.name, nodes=nodes, inputs_to_parameters=params, inputs_to_buffers=buffers,
            inputs_to_lifted_tensor_constants=consts, user_inputs=tuple(user_inputs),
            user_outputs=tuple(user_outputs), state=state, pickled=pickled, subgraphs=self.subgraphs,
            torch_version=tv if isinstance(tv, str) else "", schema_version=(major, minor))

    def _spec_arg(self, arg: Any) -> Any:
        kind, v = _union(arg, self.where, "signature argument")
        if kind in ("as_tensor", "as_custom_obj", "as_token"):
            return v.get("name") if isinstance(v, dict) else None
        if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
            return v.get("as_name") if isinstance(v, dict) else v
        if kind == "as_float" and type(v) in (int, float):
            return float(v)
        return v if kind != "as_none" else None

    def _state(self) -> tuple[dict[str, TensorRef], dict[str, str]]:
        state: dict[str, TensorRef] = {}
        pickled: dict[str, str] = {}
        for folder, config_name in (("data/weights/", f"data/weights/{self.name}_weights_config.json"),
                                    ("data/constants/", f"data/constants/{self.name}_constants_config.json")):
            if config_name not in self.arc.records:
                raise CorruptFile(f"{self.arc.label}: program {self.name!r} has no {self.arc.prefix}{config_name}")
            for fqn, meta in _payload_config(self.arc, config_name).items():
                where = f"{self.arc.where(config_name)}: {fqn}"
                if not isinstance(meta, dict):
                    raise CorruptFile(f"{where}: entry is not an object")
                path_name = meta.get("path_name")
                if not isinstance(path_name, str) or not path_name or _bad_name(path_name) or "/" in path_name:
                    raise CorruptFile(f"{where}: bad path_name {path_name!r}")
                rel = folder + path_name
                is_object = folder == "data/constants/" and path_name.startswith(("custom_obj_", "opaque_obj_"))
                if meta.get("use_pickle") or is_object:
                    if rel not in self.arc.records:
                        raise CorruptFile(f"{where}: member {self.arc.prefix}{rel} is missing from the archive")
                    pickled[fqn] = self.arc.prefix + rel  # only reached with trust_pickle; never read
                    continue
                if meta.get("use_pickle") is not False:
                    raise CorruptFile(f"{where}: use_pickle is {meta.get('use_pickle')!r}, not a boolean")
                if folder == "data/constants/" and not path_name.startswith("tensor_"):
                    raise CorruptFile(f"{where}: unsupported constant payload {path_name!r}")
                spec = _TensorSpec(meta.get("tensor_meta"), self.arc, rel, where)
                state[fqn] = TensorRef(fqn, spec.shape, spec.dtype.name, spec.loader(self.source, where),
                                       source=str(self.arc.path))
        return state, pickled


__all__ = ["Pt2Archive", "Pt2Node", "Pt2Program", "Pt2TensorMeta", "read_pt2", "unsafe_reasons", "PICKLE_HINT"]
