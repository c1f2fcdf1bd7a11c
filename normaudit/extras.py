"""Optional dependencies: which extra brings each one, and one clear line when it is missing.

The core (numpy, gguf, onnx, safetensors, ml_dtypes, typer, rich) reads GGUF, ONNX, safetensors, Hugging Face
folders and .pt2 archives.  torch, transformers and onnxruntime are imported only inside the functions that
need them, through :func:`require` (or :func:`check` for work done in a child process), so a missing one is
``normaudit: error: ... needs torch, which is not installed (hint: pip install 'normaudit[torch]')``.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import NormauditError

#: top-level module -> the extra that installs it
EXTRA_OF: dict[str, str] = {
    "torch": "torch",
    "transformers": "activations",
    "onnxruntime": "activations",
    "sentencepiece": "activations",
    "llama_cpp": "llamacpp",  # llama-cpp-python: the llama.cpp runtime backend
}


class MissingExtra(NormauditError):
    """An optional dependency is not installed; ``hint`` is the pip command that installs it."""

    def __init__(self, module: str, what: str, extra: str | None = None) -> None:
        root = module.split(".")[0]
        self.module, self.extra = root, extra or EXTRA_OF.get(root, "all")
        super().__init__(f"{what} needs {root}, which is not installed",
                         hint=f"pip install 'normaudit[{self.extra}]'")


def require(module: str, what: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``"torch"``) for ``what`` (``"reading a state_dict"``), or raise MissingExtra
    naming ``extra`` (default: the extra that installs ``module``; activation runs name ``activations``).

    Only a missing ``module`` itself is translated: an ImportError from inside an installed package (a broken
    install) propagates as it is."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingExtra(module, what, extra) from None


def check(module: str, what: str, extra: str | None = None) -> None:
    """Raise MissingExtra if ``module`` is not installed, without importing it (for work a child process does)."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise MissingExtra(module, what, extra)


def from_import_error(exc: ImportError, what: str) -> MissingExtra | None:
    """The MissingExtra an ImportError of an optional module amounts to (None for anything else)."""
    name = getattr(exc, "name", None)
    if isinstance(exc, ModuleNotFoundError) and name and name.split(".")[0] in EXTRA_OF:
        return MissingExtra(name, what)
    return None
