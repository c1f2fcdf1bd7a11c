"""Reading bytes of untrusted files: positioned reads of exactly the bytes needed, never beyond the file."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CorruptFile


def pread_exact(path: Path, offset: int, nbytes: int) -> bytes:
    """``nbytes`` at ``offset`` of a regular file, in one positioned read (no memory map, no readahead window
    around a small tensor); a file shorter than promised is a one-line CorruptFile."""
    if offset < 0 or nbytes < 0:
        raise CorruptFile(f"{path}: read of {nbytes} bytes at {offset} is out of range")
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, nbytes, offset)
    finally:
        os.close(fd)
    if len(data) != nbytes:
        raise CorruptFile(f"{path}: file is shorter than its header says ({len(data)} of {nbytes} bytes at "
                          f"offset {offset})")
    return data
