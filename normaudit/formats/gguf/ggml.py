"""ggml's own dequantizers, when llama-cpp-python (the ``llamacpp`` extra) is installed.

llama-cpp-python ships llama.cpp's ``libggml-base``, which exports ``dequantize_row_<type>(src, dst, k)`` for
every quant type: the C code llama.cpp itself runs.  On a 7B model's Q8_0 weights it is ~7x faster than
gguf-py's numpy dequantization (even read a few rows at a time), which is what a streamed activation diff
spends its time on.  It is used only for a type whose block size and byte size ggml reports exactly as
gguf-py's ``GGML_QUANT_SIZES`` does, and whose output on a probe of random blocks is bit-identical to
gguf-py's (checked once per type and process); anything else stays with gguf-py.

Only arithmetic runs in C: normaudit's reader has checked every tensor's size against the file, and the
buffers handed over hold exactly ``k`` values' blocks.  No file or header is parsed by the library.
``NORMAUDIT_DEQUANT=gguf-py`` turns it off.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: library file names of libggml-base by platform, inside llama_cpp/lib
_NAMES = ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll")
_PROBE_BLOCKS = 64

_lock = threading.Lock()
_lib: Any = None
_looked = False
_checked: dict[int, Callable[[np.ndarray, np.ndarray], None] | None] = {}


def _library() -> Any:
    """libggml-base of the installed llama-cpp-python (found without importing the package), or None."""
    global _lib, _looked
    if not _looked:
        _looked = True
        if os.environ.get("NORMAUDIT_DEQUANT", "").lower() in ("gguf-py", "gguf", "numpy"):
            return None
        try:
            spec = importlib.util.find_spec("llama_cpp")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin:
            for name in _NAMES:
                path = Path(spec.origin).parent / "lib" / name
                if path.is_file():
                    try:
                        _lib = ctypes.CDLL(str(path))
                    except OSError:
                        _lib = None
                    break
    return _lib


def _symbol(qtype: Any) -> str:
    """ggml's function name: dequantize_row_q8_0, dequantize_row_q4_K, dequantize_row_iq2_xxs, ..."""
    name = qtype.name.lower()
    return "dequantize_row_" + (name[:-2] + "_K" if name.endswith("_k") else name)


def _lookup(qtype: Any) -> Callable[[np.ndarray, np.ndarray], None] | None:
    from gguf.constants import GGML_QUANT_SIZES

    lib = _library()
    if lib is None or qtype not in GGML_QUANT_SIZES:
        return None
    try:
        fn = getattr(lib, _symbol(qtype))
        blck, tsize = lib.ggml_blck_size, lib.ggml_type_size
    except AttributeError:
        return None
    blck.argtypes, blck.restype = [ctypes.c_int], ctypes.c_int64
    tsize.argtypes, tsize.restype = [ctypes.c_int], ctypes.c_size_t
    block, type_size = GGML_QUANT_SIZES[qtype]
    if blck(int(qtype)) != block or tsize(int(qtype)) != type_size:
        return None  # a different block layout than gguf-py's tables: not the same type
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64], None

    def run(src: np.ndarray, dst: np.ndarray) -> None:
        """dst (contiguous float32) <- the values of the blocks in src (contiguous bytes of exactly dst's blocks)."""
        if not (src.flags.c_contiguous and dst.flags.c_contiguous and dst.dtype == np.float32
                and dst.size % block == 0 and src.nbytes == dst.size // block * type_size):
            raise ValueError(f"{_symbol(qtype)}: {src.nbytes} bytes for {dst.size} values")
        fn(src.ctypes.data, dst.ctypes.data, dst.size)

    return run


def _agrees(run: Callable[[np.ndarray, np.ndarray], None], qtype: Any) -> bool:
    """ggml and gguf-py give the same floats for random blocks (NaN where one gives NaN)."""
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    block, type_size = GGML_QUANT_SIZES[qtype]
    src = np.random.default_rng(int(qtype)).integers(0, 256, (_PROBE_BLOCKS, type_size), dtype=np.uint8)
    try:
        with np.errstate(all="ignore"):  # random scales include inf and NaN
            ref = np.asarray(dequantize(src, qtype), dtype=np.float32).reshape(-1)
    except NotImplementedError:
        return True  # gguf-py cannot read the type at all: ggml's matching sizes are all there is to check
    out = np.empty(_PROBE_BLOCKS * block, dtype=np.float32)
    run(src, out)
    return bool(np.array_equal(out, ref, equal_nan=True))


def dequantizer(qtype: Any) -> Callable[[np.ndarray, np.ndarray], None] | None:
    """``run(src_bytes, dst_float32)`` through ggml for this GGMLQuantizationType, or None (use gguf-py)."""
    key = int(qtype)
    if key not in _checked:
        with _lock:
            if key not in _checked:
                run = _lookup(qtype)
                _checked[key] = run if run is not None and _agrees(run, qtype) else None
    return _checked[key]
