"""What a model format is to normaudit: a name, a way to recognise a file, a loader, an activation runner.

Adding a format is one module implementing :class:`Format` plus one line in :mod:`.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..fileio import open_random

if TYPE_CHECKING:
    from ..model import NormModel


@dataclass(frozen=True)
class LoadOptions:
    """How to load one model."""

    trust_pickle: bool = False  # allow unpickling (runs code from the file)
    config: Path | None = None  # HF config.json for a bare state_dict / safetensors file
    trust_remote_code: bool = False  # let transformers run a checkpoint's own modeling code (auto_map)
    revision: str | None = None  # Hugging Face cache folder: ref name or commit to open (default refs/main)


class Probe:
    """What format detection looks at: the path, the first bytes and, for zip archives, the member names."""

    HEAD_BYTES = 64

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_dir = path.is_dir()
        self.head = b""
        if not self.is_dir:
            with open_random(path) as fh:
                self.head = fh.read(self.HEAD_BYTES)

    @cached_property
    def size(self) -> int:
        return 0 if self.is_dir else self.path.stat().st_size

    @property
    def is_zip(self) -> bool:
        return self.head[:2] == b"PK"

    @cached_property
    def zip_names(self) -> list[str]:
        """Member names of a zip archive (at most 10000), [] if it is not a readable zip."""
        if not self.is_zip:
            return []
        import zipfile

        try:
            with zipfile.ZipFile(self.path) as zf:
                return zf.namelist()[:10000]
        except Exception:  # any malformed zip (BadZipFile, NotImplementedError "zip file version"...): not a readable one
            return []


@runtime_checkable
class Format(Protocol):
    name: str  # the --format value
    family: str  # pytorch | onnx | gguf (NormModel.format)
    description: str  # one line for --help and errors

    def sniff(self, probe: Probe) -> bool:
        """True if the file (or directory) is in this format."""

    def load(self, path: Path, options: LoadOptions) -> "NormModel":
        """Every norm layer of the model, lazily (tensors read on demand)."""

    def runner(self, path: Path, model: "NormModel", ctx: Any) -> Any:
        """An activation runner (:class:`normaudit.activations.base.Runner`) for this file."""
