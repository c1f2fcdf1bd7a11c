"""Format registry: detect a model file's format from its content and load its norm layers."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import CorruptFile, NoNorms, NormauditError, UnsupportedFormat, brief
from ..model import NormModel
from . import gguf_file, onnx_graph, pytorch

#: format name -> user-facing description (``--format`` choices)
FORMATS = {
    "gguf": "GGUF (llama.cpp)",
    "onnx": "ONNX protobuf",
    "safetensors": "safetensors file (config.json beside it is used)",
    "hf": "Hugging Face model directory",
    "state_dict": "torch.save'd state_dict (.pt/.pth/.bin)",
    "pt2": "torch.export program (.pt2)",
    "torchscript": "TorchScript archive",
    "pickle": "pickled nn.Module (needs --trust-pickle)",
}


def detect(path: Path) -> str:
    """Detect the format from the file's content (extension only breaks ties)."""
    if path.is_dir():
        return "hf"
    if not path.exists():
        raise NormauditError(f"{path}: no such file or directory")
    if not path.is_file():
        raise UnsupportedFormat(f"{path}: not a regular file")
    with path.open("rb") as fh:
        head = fh.read(16)
    if not head:
        raise CorruptFile(f"{path}: file is empty")
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:2] == b"PK":
        kind = pytorch.zip_kind(path)
        if kind == "torch_export":
            return "pt2"
        if kind == "torchscript":
            return "torchscript"
        if kind == "torch_save":
            return "state_dict"
        raise UnsupportedFormat(f"{path}: a zip archive that is not a PyTorch save, .pt2 or TorchScript file")
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "state_dict"  # legacy (non-zip) torch.save pickle
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if _looks_like_onnx(path, head):
        return "onnx"
    raise UnsupportedFormat(
        f"{path}: unknown model format",
        hint="normaudit reads GGUF, ONNX, safetensors, HF folders, .pt/.pth/.bin state_dicts, .pt2 and TorchScript; "
             "use --format to force one")


def _looks_like_onnx(path: Path, head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint: 0x08) in every exporter we know; fall back to suffix
    return head[:1] == b"\x08" or path.suffix.lower() == ".onnx"


_LOADERS: dict[str, Callable[..., NormModel]] = {
    "gguf": lambda p, **kw: gguf_file.load_gguf(p),
    "onnx": lambda p, **kw: onnx_graph.load_onnx(p),
    "safetensors": lambda p, config=None, **kw: pytorch.load_safetensors(p, config),
    "hf": lambda p, **kw: pytorch.load_hf_dir(p),
    "state_dict": lambda p, config=None, trust_pickle=False, **kw: pytorch.load_state_dict(p, config, trust_pickle),
    "pt2": lambda p, trust_pickle=False, **kw: pytorch.load_export(p, trust_pickle),
    "torchscript": lambda p, **kw: pytorch.load_torchscript(p),
    "pickle": lambda p, trust_pickle=False, **kw: _load_pickle(p, trust_pickle),
}


def _load_pickle(path: Path, trust_pickle: bool) -> NormModel:
    if not trust_pickle:
        raise pytorch.UntrustedPickle(f"{path}: loading a pickled module runs code from the file",
                                      hint=pytorch.PICKLE_HINT)
    return pytorch.load_pickled_module(path)


def load(path: str | Path, format: str | None = None, *, trust_pickle: bool = False,
         config: str | Path | None = None, allow_empty: bool = False) -> NormModel:
    """Load every norm layer of a model file or HF directory.

    ``format`` overrides detection (one of :data:`FORMATS`); ``config`` is an HF config.json for a bare
    state_dict or safetensors file; ``trust_pickle`` allows unpickling full modules (runs code!).
    Raises :class:`NormauditError` subclasses with a one-line message on any problem.
    """
    p = Path(path)
    if format is not None and format not in FORMATS:
        raise UnsupportedFormat(f"unknown --format {format!r}", hint="one of: " + ", ".join(FORMATS))
    if not p.exists():
        raise NormauditError(f"{p}: no such file or directory")
    fmt = format or detect(p)
    try:
        model = _LOADERS[fmt](p, trust_pickle=trust_pickle, config=Path(config) if config else None)
    except NormauditError:
        raise
    except MemoryError:
        raise CorruptFile(f"{p}: ran out of memory reading the file (corrupt header?)") from None
    except RecursionError:
        raise CorruptFile(f"{p}: file is nested too deeply to read (corrupt or hostile)") from None
    except Exception as exc:  # any loader failure on a bad file is one line, never a traceback
        raise CorruptFile(f"{p}: cannot read as {fmt} ({brief(exc)})") from None
    if not model.norms and not allow_empty:
        raise NoNorms(f"{p}: no normalization layers found in this {FORMATS[fmt]}",
                      hint="is this the right file? BatchNorms folded into convs only show up in `compare`")
    return model
