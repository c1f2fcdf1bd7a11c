"""Reading bytes of untrusted files: positioned reads of exactly the bytes needed, never beyond the file.

Model files are read in a few small pieces far apart (headers, kilobyte-sized norm tensors in a multi-GB
file): every file is opened with ``POSIX_FADV_RANDOM``, so the kernel reads what is asked and no readahead
window (8 MiB on some disks) around it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from .errors import CorruptFile


def _no_readahead(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):  # Linux and most Unixes; elsewhere reads just keep the OS default
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        except OSError:
            pass


def open_random(path: Path) -> BinaryIO:
    """``open(path, "rb")`` for reads here and there (a header walk): readahead disabled."""
    fh = open(path, "rb")
    _no_readahead(fh.fileno())
    return fh


def pread_exact(path: Path, offset: int, nbytes: int) -> bytes:
    """``nbytes`` at ``offset`` of a regular file, in one positioned read (no memory map, no readahead window
    around a small tensor); a file shorter than promised is a one-line CorruptFile."""
    if offset < 0 or nbytes < 0:
        raise CorruptFile(f"{path}: read of {nbytes} bytes at {offset} is out of range")
    fd = os.open(path, os.O_RDONLY)
    try:
        _no_readahead(fd)
        data = os.pread(fd, nbytes, offset)
    finally:
        os.close(fd)
    if len(data) != nbytes:
        raise CorruptFile(f"{path}: file is shorter than its header says ({len(data)} of {nbytes} bytes at "
                          f"offset {offset})")
    return data


#: bytes per positioned read when a large tensor is streamed through a staging buffer
CHUNK_BYTES = 16 * 2**20
_staging = threading.local()


def _stage(nbytes: int) -> np.ndarray:
    """This thread's reusable staging buffer (a fresh multi-MB buffer per read costs more in page faults than
    the copy itself); a piece larger than CHUNK_BYTES (one huge row) gets a buffer of its own, not kept."""
    if nbytes > CHUNK_BYTES:
        return np.empty(nbytes, dtype=np.uint8)
    buf = getattr(_staging, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = _staging.buf = np.empty(max(nbytes, 1), dtype=np.uint8)
    return buf[:nbytes]


def pread_chunks(path: Path, offset: int, nbytes: int, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """``nbytes`` at ``offset`` in pieces of at most ``step`` bytes (callers pass a multiple of their element or
    row size), each read into this thread's staging buffer: yields (position, bytes view), the view valid until
    the next piece.  A file shorter than promised is a one-line CorruptFile."""
    if offset < 0 or nbytes < 0 or step <= 0:
        raise CorruptFile(f"{path}: read of {nbytes} bytes at {offset} is out of range")
    fd = os.open(path, os.O_RDONLY)
    try:
        _no_readahead(fd)
        pos = 0
        while pos < nbytes:
            n = min(step, nbytes - pos)
            view = _stage(n)
            got = os.preadv(fd, [view], offset + pos)
            if got != n:
                raise CorruptFile(f"{path}: file is shorter than its header says ({pos + got} of {nbytes} bytes "
                                  f"at offset {offset})")
            yield pos, view
            pos += n
    finally:
        os.close(fd)
