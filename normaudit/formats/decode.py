"""Stored tensor values to float32, written into a caller's buffer.

Streamed activation runs refill the same float32 buffers block after block (see ``activations.lazy``), so a
7B model's weights are decoded without a fresh multi-GB allocation per block.  float16 goes through torch when
torch is already loaded (the activation path): numpy's float16 conversion is ~15x slower than torch's
vectorised one.  Everything else is numpy's own cast.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

from ..fileio import CHUNK_BYTES, pread_chunks

_scratch = threading.local()


def scratch_float32(count: int) -> np.ndarray:
    """This thread's reusable float32 buffer of ``count`` values (valid until its next use; more than 64 MiB:
    a buffer of its own, not kept)."""
    if count > 16 * 2**20:
        return np.empty(count, dtype=np.float32)
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size < count:
        buf = _scratch.buf = np.empty(max(count, 1), dtype=np.float32)
    return buf[:count]


def fill_float32(out: np.ndarray, raw: np.ndarray, dtype: Any) -> None:
    """``out`` (float32, 1-D) <- the values in ``raw`` (bytes of ``len(out)`` elements of numpy ``dtype``)."""
    torch = sys.modules.get("torch")
    if torch is not None and np.dtype(dtype) == np.float16:
        torch.from_numpy(out).copy_(torch.from_numpy(raw).view(torch.float16))
    else:
        np.copyto(out, raw.view(dtype), casting="unsafe")


def read_float32(path: Any, offset: int, count: int, dtype: Any, out: np.ndarray | None = None) -> np.ndarray:
    """``count`` elements of ``dtype`` stored at ``offset`` of ``path`` as float32: into ``out`` when given (a
    contiguous float32 array of ``count`` elements, returned as is), else into a new 1-D array.  Read in
    staging-sized pieces."""
    dt = np.dtype(dtype)
    dest = np.empty(count, dtype=np.float32) if out is None else out.reshape(-1)
    if dest.size != count or dest.dtype != np.float32:
        raise ValueError(f"read_float32: buffer of {dest.size} {dest.dtype} for {count} float32 values")
    step = max(dt.itemsize, CHUNK_BYTES // dt.itemsize * dt.itemsize)
    for pos, raw in pread_chunks(path, offset, count * dt.itemsize, step):
        start = pos // dt.itemsize
        fill_float32(dest[start:start + raw.size // dt.itemsize], raw, dt)
    return dest if out is None else out
