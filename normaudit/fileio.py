"""Reading bytes of untrusted files: positioned reads of exactly the bytes needed, never beyond the file.

Model files are read in a few small pieces far apart (headers, kilobyte-sized norm tensors in a multi-GB
file): every file is opened with ``POSIX_FADV_RANDOM``, so the kernel reads what is asked and no readahead
window (8 MiB on some disks) around it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

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
