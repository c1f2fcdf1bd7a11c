"""What may be unpickled, and what not.

Untrusted input is normal: a state_dict is read with ``torch.load(weights_only=True)`` (torch's restricted
unpickler: tensors and plain containers only) and a file that needs more is refused unless the user passes
``--trust-pickle``.  ``.pt2`` archives are checked before anything would unpickle their content.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ...errors import CorruptFile, NormauditError, UntrustedPickle, brief
from ...extras import require
from ...model import TensorRef
from .tensors import torch_ref

PICKLE_HINT = ("pass --trust-pickle only if you trust where this file came from (unpickling can run arbitrary "
               "code); or re-save it as a state_dict / safetensors")


def require_trust(path: Path, trust_pickle: bool, what: str = "loading a pickled module runs code from the file"
                  ) -> None:
    if not trust_pickle:
        raise UntrustedPickle(f"{path}: {what}", hint=PICKLE_HINT)


def state_dict_refs(path: Path) -> dict[str, TensorRef]:
    torch = require("torch", f"{path}: reading a torch.save'd file")

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
    return {str(k): torch_ref(str(k), v, path) for k, v in obj.items() if isinstance(v, torch.Tensor)}
