"""The one GGUF reader: a bounded walk over the header that validates as it goes, positioned reads of tensors.

gguf-py's ``GGUFReader`` builds an object for every metadata value (a 32000-entry tokenizer array becomes
~100K numpy slices) and trusts the counts a header claims.  normaudit needs a few keys and the tensor table,
and the file may be hostile, so this reader walks the header once, checks every count and length against
the bytes actually left in the file *before* it loops or allocates, keeps scalar values, and only records
where arrays are (read on demand).  The format knowledge it needs comes from gguf-py: value types
(``GGUFValueType``), quant block sizes (``GGML_QUANT_SIZES``), dequantization (``gguf.quants``, or ggml's
own C dequantizers when llama-cpp-python is installed: :mod:`.ggml`) and tensor names (``TensorNameMap`` /
``TENSOR_NAMES``, see :mod:`.names`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CorruptFile
from ...fileio import CHUNK_BYTES, open_random, pread_chunks, pread_exact

GGUF_MAGIC = b"GGUF"
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_KEYS = 1 << 20  # far above any real file (tens to a few hundred keys)
MAX_TENSORS = 1 << 22  # far above any real file (a 400B MoE has ~2-3K tensors)
MAX_STRING = 1 << 24  # a single key or string value
MAX_ELEMENTS = 1 << 40  # elements in one tensor

# scalar value types -> struct format (little endian), from gguf-py's GGUFValueType numbering
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}

# plain (non-block) GGML types read directly (gguf.quants cannot dequantize the integer ones and is slower on floats)
_PLAIN_TYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8, "I16": np.int16,
                "I32": np.int32, "I64": np.int64}
#: elements per gguf-py dequantize call (its temporaries: a few hundred kB, reused by the allocator)
_DEQUANT_ELEMENTS = 1 << 16


def _plain_dtype(type_name: str) -> Any:
    if type_name == "BF16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    dt = _PLAIN_TYPES.get(type_name)
    return None if dt is None else np.dtype(dt).newbyteorder("<")


@dataclass(frozen=True)
class ArrayRef:
    """Where a metadata array is: read on demand (tokenizer arrays never are)."""

    item_type: int
    count: int
    offset: int  # file offset of the first element
    nbytes: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # GGML order (ne0 first)
    type_id: int
    type_name: str  # F32, F16, Q4_K, ...
    offset: int  # absolute file offset of the data
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy (row-major) order."""
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) if self.dims else 1


class _Cursor:
    """Reads the header through a bounded buffer; every read is checked against the end of the file."""

    def __init__(self, fh: Any, path: Path, size: int) -> None:
        self.fh, self.path, self.size, self.pos = fh, path, size, 0
        self.buf, self.buf_start = b"", 0

    def _fail(self, what: str) -> CorruptFile:
        return CorruptFile(f"{self.path}: corrupt or truncated GGUF: {what} at byte {self.pos} "
                           f"(file is {self.size} bytes)")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self._fail(f"{what} needs {n} bytes beyond the end of the file")

    def read(self, n: int, what: str) -> bytes:
        self.need(n, what)
        end = self.pos + n
        if not (self.buf_start <= self.pos and end <= self.buf_start + len(self.buf)):
            self.fh.seek(self.pos)
            self.buf, self.buf_start = self.fh.read(max(n, 1 << 20)), self.pos
        out = self.buf[self.pos - self.buf_start:end - self.buf_start]
        self.pos = end
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.read(size, what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("Q", what + " length")
        if n > MAX_STRING:
            raise self._fail(f"{what} claims {n} bytes")
        raw = self.read(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(f"{what} is not valid UTF-8") from None

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n

    def skip_strings(self, count: int, what: str) -> None:
        """Skip ``count`` length-prefixed strings (a tokenizer array: 32000+ of them) in one tight loop over the
        buffer; every string must end inside the file."""
        unpack = _U64.unpack_from
        i = 0
        while i < count:
            if not (self.buf_start <= self.pos and self.pos + 8 <= self.buf_start + len(self.buf)):
                self.need(8, f"string #{i} of {what}")
                self.fh.seek(self.pos)
                self.buf, self.buf_start = self.fh.read(1 << 20), self.pos
            buf, base = self.buf, self.buf_start
            p, end = self.pos - base, len(buf)
            while i < count and p + 8 <= end:
                p += 8 + unpack(buf, p)[0]
                i += 1
                if p > end:  # this string runs past the buffer: check it against the file, then refill
                    break
            self.pos = base + p
            if self.pos > self.size:
                raise self._fail(f"string #{i - 1} of {what} runs beyond the end of the file")


class GgufFile:
    """A GGUF file's metadata and tensor table, read once and validated."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
            with open_random(self.path) as fh:
                self._parse(_Cursor(fh, self.path, self.size))
        except OSError as exc:
            raise CorruptFile(f"{path}: cannot read GGUF file ({exc.strerror or exc})") from None

    # -- header walk ---------------------------------------------------------------------------------
    def _parse(self, cur: _Cursor) -> None:
        if self.size < 24:
            raise CorruptFile(f"{self.path}: not a GGUF file or truncated header ({self.size} bytes)")
        if cur.read(4, "magic") != GGUF_MAGIC:
            raise CorruptFile(f"{self.path}: not a GGUF file (bad magic)")
        self.version = cur.unpack("I", "version")
        if self.version not in (2, 3):
            raise CorruptFile(f"{self.path}: unsupported GGUF version {self.version}",
                              hint="normaudit reads GGUF v2 and v3")
        n_tensors, n_kv = cur.unpack("Q", "tensor count"), cur.unpack("Q", "key count")
        # smallest encodings: a KV is 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8
        if n_kv > MAX_KEYS or n_tensors > MAX_TENSORS or n_kv * 14 + n_tensors * 33 > self.size - 24:
            raise CorruptFile(
                f"{self.path}: corrupt or truncated GGUF: header claims {n_kv} metadata keys and {n_tensors} "
                f"tensors, which cannot fit in {self.size} bytes")
        self.fields: dict[str, Any] = {}
        self.field_types: dict[str, int] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = cur.unpack("I", f"type of {key}")
            self.field_types[key] = vtype
            self.fields[key] = self._value(cur, vtype, key)
        align = self.fields.get("general.alignment", 32)
        if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1) or align > 1 << 16:
            raise CorruptFile(f"{self.path}: corrupt GGUF: general.alignment {align!r} is not a power of two")
        infos = []
        for i in range(n_tensors):
            name = cur.string(f"tensor #{i} name")
            n_dims = cur.unpack("I", f"tensor {name} n_dims")
            if n_dims > MAX_DIMS:
                raise CorruptFile(f"{self.path}: corrupt GGUF: tensor {name} claims {n_dims} dimensions")
            dims = tuple(cur.unpack("Q", f"tensor {name} dims") for _ in range(n_dims))
            type_id = cur.unpack("I", f"tensor {name} type")
            offset = cur.unpack("Q", f"tensor {name} offset")
            infos.append((name, dims, type_id, offset))
        self.data_offset = (cur.pos + align - 1) // align * align
        self.tensors: dict[str, TensorInfo] = {}
        for name, dims, type_id, offset in infos:
            info = self._tensor_info(name, dims, type_id, offset)
            if name in self.tensors:
                raise CorruptFile(f"{self.path}: corrupt GGUF: tensor {name} appears twice")
            self.tensors[name] = info

    def _value(self, cur: _Cursor, vtype: int, key: str) -> Any:
        if vtype in _SCALARS:
            return cur.unpack(_SCALARS[vtype], f"value of {key}")
        if vtype == _STRING:
            return cur.string(f"value of {key}")
        if vtype != _ARRAY:
            raise CorruptFile(f"{self.path}: corrupt GGUF: key {key} has unknown value type {vtype}")
        item_type = cur.unpack("I", f"array type of {key}")
        count = cur.unpack("Q", f"array length of {key}")
        start = cur.pos
        if item_type in _SCALARS:
            nbytes = count * struct.calcsize("<" + _SCALARS[item_type])
            cur.skip(nbytes, f"array {key} ({count} elements)")
        elif item_type == _STRING:
            cur.need(count * 8, f"array {key} ({count} strings)")  # each string has at least its length
            cur.skip_strings(count, key)
            nbytes = cur.pos - start
        else:  # arrays of arrays do not occur in GGUF files llama.cpp writes or reads
            raise CorruptFile(f"{self.path}: corrupt GGUF: array {key} has unsupported element type {item_type}")
        return ArrayRef(item_type, count, start, nbytes)

    def _tensor_info(self, name: str, dims: tuple[int, ...], type_id: int, offset: int) -> TensorInfo:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        try:
            qtype = GGMLQuantizationType(type_id)
        except ValueError:
            raise CorruptFile(f"{self.path}: corrupt GGUF: tensor {name} has unknown type {type_id}") from None
        block, type_size = GGML_QUANT_SIZES[qtype]
        n = 1
        for d in dims:
            n *= d
        if n > MAX_ELEMENTS:
            raise CorruptFile(f"{self.path}: corrupt GGUF: tensor {name} claims {n} elements")
        if dims and dims[0] % block:
            raise CorruptFile(f"{self.path}: corrupt GGUF: tensor {name} row of {dims[0]} is not a multiple of "
                              f"the {qtype.name} block size {block}")
        nbytes = n // block * type_size
        start = self.data_offset + offset
        if start + nbytes > self.size:
            raise CorruptFile(f"{self.path}: corrupt or truncated GGUF: tensor {name} ({nbytes} bytes at offset "
                              f"{offset}) extends beyond the end of the file")
        return TensorInfo(name, dims, type_id, qtype.name, start, nbytes)

    # -- metadata --------------------------------------------------------------------------------------
    def value(self, key: str) -> Any:
        """A scalar or string value as stored (arrays: see :meth:`array`); None when absent."""
        v = self.fields.get(key)
        return self.array(key) if isinstance(v, ArrayRef) else v

    def array(self, key: str, limit: int = 1 << 16) -> list[Any] | None:
        """A numeric/string array value, read now (refused beyond ``limit`` elements)."""
        ref = self.fields.get(key)
        if not isinstance(ref, ArrayRef):
            return None
        if ref.count > limit:
            raise CorruptFile(f"{self.path}: array {key} has {ref.count} elements, more than normaudit reads")
        raw = self._pread(ref.offset, ref.nbytes)
        if ref.item_type in _NUMPY:
            return np.frombuffer(raw, dtype=np.dtype(_NUMPY[ref.item_type]).newbyteorder("<")).tolist()
        out, pos = [], 0
        for _ in range(ref.count):
            (n,) = struct.unpack_from("<Q", raw, pos)
            out.append(raw[pos + 8:pos + 8 + n].decode("utf-8", "replace"))
            pos += 8 + n
        return out

    def float32(self, key: str) -> float | None:
        """A float metadata value exactly as a float32 holds it, widened to a Python float."""
        v = self.fields.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        return float(np.float32(v))

    def int_value(self, key: str) -> int | None:
        v = self.fields.get(key)
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else None

    @cached_property
    def architecture(self) -> str:
        arch = self.fields.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise CorruptFile(f"{self.path}: GGUF has no general.architecture key")
        return arch

    @cached_property
    def n_blocks(self) -> int:
        """Blocks actually present (``blk.N`` tensors); a ``block_count`` key claiming more is not trusted."""
        from .names import block_index

        present = [block_index(t) for t in self.tensors]
        return 1 + max((b for b in present if b is not None), default=-1)

    # -- tensors ----------------------------------------------------------------------------------------
    def _check_span(self, offset: int, nbytes: int) -> None:
        if offset + nbytes > self.size:
            raise CorruptFile(f"{self.path}: read of {nbytes} bytes at {offset} is beyond the end of the file")

    def _pread(self, offset: int, nbytes: int) -> bytes:
        self._check_span(offset, nbytes)
        return pread_exact(self.path, offset, nbytes)

    def read(self, name: str, out: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """A tensor dequantized to float32, in numpy (row-major) order: by ggml's C dequantizers when
        llama-cpp-python is installed (see :mod:`.ggml`), else by gguf-py; plain float and integer types by numpy
        / torch.  ``out``: a float32 buffer of the tensor's shape to fill and return (streamed runs reuse
        buffers); ``rows``: a row permutation applied while reading (stored row i goes to row rows[i]).

        Read in pieces of a few MB, each decoded straight into place (through a scratch buffer when rows move);
        gguf-py gets a few rows at a time, so its temporaries stay small (whole multi-GB tensors through it cost
        several times more in page faults than in arithmetic)."""
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize

        from ..decode import fill_float32, scratch_float32
        from . import ggml

        t = self.tensors[name]
        if t.n_elements == 0:
            raise CorruptFile(f"{self.path}: tensor {name} has no elements (shape {list(t.shape)})")
        self._check_span(t.offset, t.nbytes)
        row_len = t.dims[0] if t.dims else 1
        n_rows = t.n_elements // max(1, row_len)
        row_bytes = t.nbytes // max(1, n_rows)
        if row_bytes * n_rows != t.nbytes or row_len * n_rows != t.n_elements:
            raise CorruptFile(f"{self.path}: tensor {name} ({t.type_name}, {list(t.shape)}) has {t.nbytes} bytes")
        if rows is not None and (rows.shape != (n_rows,) or not np.array_equal(np.sort(rows), np.arange(n_rows))):
            raise ValueError(f"read({name}): rows is not a permutation of its {n_rows} rows")
        usable = out is not None and out.shape == t.shape and out.dtype == np.float32 and out.flags.c_contiguous
        dest = out if usable else np.empty(t.shape, dtype=np.float32)
        flat = dest.reshape(n_rows, row_len)
        plain = _plain_dtype(t.type_name)
        qtype = None if plain is not None else GGMLQuantizationType(t.type_id)
        fast = None if qtype is None else ggml.dequantizer(qtype)
        sub = max(1, _DEQUANT_ELEMENTS // max(1, row_len))  # rows per gguf-py call

        def decode(block: np.ndarray, target: np.ndarray) -> None:
            """target (k rows of float32) <- block (k stored rows of bytes)."""
            if plain is not None:
                fill_float32(target.reshape(-1), block.reshape(-1), plain)
            elif fast is not None:
                fast(block.reshape(-1), target.reshape(-1))
            else:
                for i in range(0, block.shape[0], sub):
                    try:
                        part = dequantize(block[i:i + sub], qtype)
                    except NotImplementedError:
                        raise CorruptFile(f"{self.path}: tensor {name} is stored as {t.type_name}, which gguf-py "
                                          "cannot dequantize") from None
                    target[i:i + sub] = part.reshape(-1, row_len)

        piece = max(1, CHUNK_BYTES // max(1, row_bytes)) // sub * sub or sub  # rows per positioned read
        for pos, raw in pread_chunks(self.path, t.offset, t.nbytes, piece * row_bytes):
            first, block = pos // row_bytes, raw.reshape(-1, row_bytes)
            k = block.shape[0]
            if rows is None:
                decode(block, flat[first:first + k])
            else:
                target = scratch_float32(k * row_len).reshape(k, row_len)
                decode(block, target)
                flat[rows[first:first + k]] = target
        return dest
