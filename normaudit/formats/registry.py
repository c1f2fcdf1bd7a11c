"""The one list of formats: detection (content first, extension only to break ties) and loading."""

from __future__ import annotations

from pathlib import Path

from ..errors import CorruptFile, NoNorms, NormauditError, UnsupportedFormat
from ..model import NormModel
from .base import Format, LoadOptions, Probe
from .gguf import GgufFormat
from .onnx import OnnxFormat
from .torch import (HfDirFormat, PickleFormat, Pt2Format, SafetensorsFormat, StateDictFormat,
                    TorchScriptFormat)

#: every format, in detection order (the first whose sniff() accepts a file wins)
REGISTRY: list[Format] = [
    GgufFormat(),
    Pt2Format(),
    TorchScriptFormat(),
    StateDictFormat(),
    SafetensorsFormat(),
    HfDirFormat(),
    OnnxFormat(),
    PickleFormat(),  # never detected: pickled modules are opened only with --format pickle or --trust-pickle
]

#: format name -> user-facing description (``--format`` choices)
FORMATS: dict[str, str] = {f.name: f.description for f in REGISTRY}


def get(name: str) -> Format:
    for f in REGISTRY:
        if f.name == name:
            return f
    raise UnsupportedFormat(f"unknown --format {name!r}", hint="one of: " + ", ".join(FORMATS))


def register(fmt: Format, *, before: str | None = None) -> None:
    """Add a format (plugins, tests); detection tries it before ``before`` (default: before ONNX's fallback)."""
    names = [f.name for f in REGISTRY]
    at = names.index(before or "onnx") if (before or "onnx") in names else len(REGISTRY)
    REGISTRY.insert(at, fmt)
    FORMATS[fmt.name] = fmt.description


def unregister(name: str) -> None:
    REGISTRY[:] = [f for f in REGISTRY if f.name != name]
    FORMATS.pop(name, None)


def detect(path: Path) -> str:
    """Detect the format from the file's content (extension only breaks ties)."""
    path = Path(path)
    if not path.exists():
        raise NormauditError(f"{path}: no such file or directory")
    if not path.is_dir() and not path.is_file():
        raise UnsupportedFormat(f"{path}: not a regular file")
    try:
        probe = Probe(path)
    except OSError as exc:
        raise NormauditError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not probe.is_dir and not probe.head:
        raise CorruptFile(f"{path}: file is empty")
    for fmt in REGISTRY:
        if fmt.sniff(probe):
            return fmt.name
    if probe.is_zip:
        raise UnsupportedFormat(f"{path}: a zip archive that is not a PyTorch save, .pt2 or TorchScript file")
    raise UnsupportedFormat(
        f"{path}: unknown model format",
        hint="normaudit reads GGUF, ONNX, safetensors, HF folders, .pt/.pth/.bin state_dicts, .pt2 and TorchScript; "
             "use --format to force one")


def load(path: str | Path, format: str | None = None, *, trust_pickle: bool = False,
         config: str | Path | None = None, revision: str | None = None, allow_empty: bool = False) -> NormModel:
    """Load every norm layer of a model file or HF directory.

    ``format`` overrides detection (one of :data:`FORMATS`); ``config`` is an HF config.json for a bare
    state_dict or safetensors file; ``revision`` picks the snapshot of a Hugging Face cache folder
    (``models--org--name``); ``trust_pickle`` allows unpickling full modules (runs code!).
    Raises :class:`NormauditError` subclasses with a one-line message on any problem with the file; any
    other exception is a bug in normaudit.
    """
    p = Path(path)
    fmt = get(format) if format is not None else None
    if not p.exists():
        raise NormauditError(f"{p}: no such file or directory")
    fmt = fmt or get(detect(p))
    if revision is not None and fmt.name != "hf":
        raise NormauditError(f"{p}: --revision applies to a Hugging Face cache folder (models--org--name), "
                             f"not to a {fmt.description}")
    options = LoadOptions(trust_pickle=trust_pickle, config=Path(config) if config else None, revision=revision)
    try:
        model = fmt.load(p, options)
    except MemoryError:
        raise CorruptFile(f"{p}: ran out of memory reading the file (corrupt header?)") from None
    except RecursionError:
        raise CorruptFile(f"{p}: file is nested too deeply to read (corrupt or hostile)") from None
    model.format_name = fmt.name
    if not model.norms and not allow_empty:
        raise NoNorms(f"{p}: no normalization layers found in this {fmt.description}",
                      hint="is this the right file? BatchNorms folded into convs only show up in `compare`")
    return model
