"""Tensors of PyTorch-side files, read lazily: safetensors (validated by the safetensors library, values read
with positioned reads, no torch needed) and torch tensors of already loaded objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ...errors import CorruptFile, reading
from ...fileio import open_random
from ...model import TensorRef, dtype_name
from ..decode import read_float32

MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def _np_dtypes() -> dict[str, Any]:
    import ml_dtypes  # bf16 / fp8 for numpy (a dependency of onnx)

    return {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
            "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
            "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16,
            "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_}


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header of a safetensors file (name -> dtype, shape, data_offsets) and where the data starts.

    Bounded: the header length is checked against the file size before it is read."""
    if not path.is_file():
        raise CorruptFile(f"{path}: not a regular file")
    size = path.stat().st_size
    with open_random(path) as fh:
        head = fh.read(9)
        if len(head) < 9:
            raise CorruptFile(f"{path}: truncated safetensors file ({size} bytes)")
        n = int.from_bytes(head[:8], "little")
        if n > size - 8 or n > MAX_HEADER or head[8:9] != b"{":
            raise CorruptFile(f"{path}: corrupt safetensors header (claims {n} header bytes in a {size}-byte file)")
        fh.seek(8)
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CorruptFile(f"{path}: corrupt safetensors header ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise CorruptFile(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    return header, 8 + n


def safetensors_refs(files: Iterable[Path]) -> dict[str, TensorRef]:
    """Lazy refs over one or more safetensors files: headers read and validated now, tensors on demand."""
    from safetensors import safe_open

    dtypes = _np_dtypes()
    refs: dict[str, TensorRef] = {}
    for path in files:
        header, data_start = read_safetensors_header(path)
        with reading(path, "corrupt safetensors file"):
            with safe_open(str(path), framework="numpy") as fh:  # the library validates offsets and dtypes
                keys = list(fh.keys())
        for key in keys:
            info = header.get(key)
            if not isinstance(info, dict) or info.get("dtype") not in dtypes:
                raise CorruptFile(f"{path}: tensor {key} has an unsupported dtype {info and info.get('dtype')!r}")
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
            refs[key] = TensorRef(key, shape, str(info["dtype"]),
                                  _pread_loader(path, data_start + begin, end - begin, dtypes[info["dtype"]], shape),
                                  source=str(path), fills=True)
    return refs


def _pread_loader(path: Path, offset: int, nbytes: int, dtype: Any, shape: tuple[int, ...]) -> Any:
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1

    def load(out: np.ndarray | None = None) -> np.ndarray:
        """float32 values: into ``out`` when it is a float32 array of this shape (then ``out`` is returned)."""
        if count * np.dtype(dtype).itemsize != nbytes:
            raise CorruptFile(f"{path}: tensor of shape {list(shape)} has {nbytes} bytes of data")
        if out is not None and out.shape == shape and out.dtype == np.float32 and out.flags.c_contiguous:
            return read_float32(path, offset, count, dtype, out)
        return read_float32(path, offset, count, dtype).reshape(shape)

    return load


def torch_ref(name: str, tensor: Any, source: str | Path | None = None) -> TensorRef:
    """A TensorRef over a torch tensor already in memory (``source``: the file it came from, for errors)."""
    shape = tuple(int(d) for d in tensor.shape)

    def load(t: Any = tensor) -> np.ndarray:
        import torch

        try:
            if getattr(t, "is_quantized", False):
                t = t.dequantize()
            return t.detach().to(dtype=torch.float32).cpu().numpy()
        except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
            # a tensor torch itself cannot read (e.g. a quantized tensor whose storage type was swapped)
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            where = f"{source}: " if source is not None else ""
            raise CorruptFile(f"{where}tensor {name} ({dtype_name(t.dtype)}) cannot be read as float32: {why}") from None

    return TensorRef(name, shape, dtype_name(tensor.dtype), load)
