"""What may be unpickled, and what not.

Untrusted input is normal: a state_dict is read with ``torch.load(weights_only=True)`` (torch's restricted
unpickler: tensors and plain containers only) and a file that needs more is refused unless the user passes
``--trust-pickle``.  ``.pt2`` archives are checked before anything would unpickle their content.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from ...errors import CorruptFile, NormauditError, UntrustedPickle, brief
from ...model import TensorRef
from .tensors import torch_ref

PICKLE_HINT = ("pass --trust-pickle only if you trust where this file came from (unpickling can run arbitrary "
               "code); or re-save it as a state_dict / safetensors")


def require_trust(path: Path, trust_pickle: bool, what: str = "loading a pickled module runs code from the file"
                  ) -> None:
    if not trust_pickle:
        raise UntrustedPickle(f"{path}: {what}", hint=PICKLE_HINT)


def state_dict_refs(path: Path) -> dict[str, TensorRef]:
    import torch

    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UntrustedPickle(
            f"{path}: refused to unpickle: the file holds more than tensors "
            f"({brief(exc, 160)}) and loading it could run arbitrary code",
            hint=PICKLE_HINT) from None
    except Exception as exc:
        raise CorruptFile(f"{path}: corrupt or truncated PyTorch file ({brief(exc)})") from None
    return flatten_state(obj, path)


def flatten_state(obj: Any, path: Path) -> dict[str, TensorRef]:
    import torch

    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # training checkpoints
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict) and not any(
            isinstance(v, torch.Tensor) for v in obj.values()):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise NormauditError(f"{path}: not a state_dict (found {type(obj).__name__})")
    return {str(k): torch_ref(str(k), v) for k, v in obj.items() if isinstance(v, torch.Tensor)}


def check_pt2_archive(path: Path) -> None:
    """Refuse .pt2 archives whose loading would unpickle arbitrary objects.

    torch.export.load unpickles (weights_only=False) any weight or constant marked ``use_pickle``, custom and
    opaque object constants, legacy ``.pt`` payloads, and falls back to a full unpickle of sample inputs that
    a weights_only load rejects.  Archives written by torch.export.save for plain tensors use none of these.
    """
    import torch

    reasons: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for name in names:
                if name.endswith(("data/weights/model_weights_config.json",
                                  "data/constants/model_constants_config.json")):
                    info = zf.getinfo(name)
                    if info.file_size > 64 * 2**20:
                        reasons.append(f"{name} is {info.file_size} bytes")
                        continue
                    config = json.loads(zf.read(name)).get("config", {})
                    for fqn, meta in (config.items() if isinstance(config, dict) else []):
                        path_name = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
                        if not isinstance(meta, dict) or meta.get("use_pickle"):
                            reasons.append(f"{fqn} is stored as a pickle")
                        elif path_name.startswith(("custom_obj", "opaque_obj")):
                            reasons.append(f"{fqn} is a pickled {path_name.split('_', 1)[0]} object")
                elif "/data/weights/" in name and name.endswith(".pt") or \
                        "/data/constants/" in name and name.endswith(".pt"):
                    reasons.append(f"{name} is a legacy pickled payload")
            for name in names:
                if "/data/sample_inputs/" in name and name.endswith(".pt"):
                    try:
                        torch.load(io.BytesIO(zf.read(name)), weights_only=True)
                    except Exception:
                        reasons.append(f"{name} needs a full unpickle")
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        raise CorruptFile(f"{path}: corrupt .pt2 archive ({brief(exc)})") from None
    if reasons:
        raise UntrustedPickle(f"{path}: refused to load: {reasons[0]}" +
                              (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "") +
                              "; torch.export.load would unpickle it, which can run arbitrary code",
                              hint=PICKLE_HINT)


