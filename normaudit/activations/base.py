"""The activation Runner protocol: every backend (transformers, torch.export, onnxruntime, GGUF replay, ...)
runs a model on inputs and hands each norm output and block output to a sink as soon as it exists.

A sink is ``sink(key, kind, output, norm_input, rerun=None)``: ``key`` is the norm id of the runner's
NormModel, ``block.N`` or ``output``; ``norm_input`` is the tensor the norm read (for local-error replays);
``rerun(x)`` re-runs that block of this model on another input.  The driver never asks which backend it holds:
it reads the attributes below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..formats.base import LoadOptions
    from ..model import LinearOp, NormModel

Sink = Callable[..., None]
BLOCK_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")


def block_key(module_path: str) -> str | None:
    """``block.N`` for a module path inside the N-th transformer block (HF, ONNX scopes, fx stacks)."""
    hits = BLOCK_RE.findall(module_path or "")
    return f"block.{hits[-1]}" if hits else None


@dataclass
class InputHints:
    """What a runner knows about the inputs it accepts (for default inputs)."""

    vocab: int | None = None
    seq_len: int | None = None  # fixed by an exported graph
    batch: int | None = None  # fixed by an exported graph
    image_shape: tuple[int, ...] | None = None
    tokenizer_dirs: list[Path] = field(default_factory=list)


@dataclass
class RunContext:
    """What a format needs to build its runner."""

    options: "LoadOptions"
    source_dir: Path | None = None  # HF directory of the source architecture (a GGUF is replayed through it)
    source_model: "NormModel | None" = None  # that directory's norm records, when already loaded
    progress: Any = None  # normaudit.progress.Progress for long builds (GGUF replay weights), or None
    backend_options: dict[str, Any] = field(default_factory=dict)  # e.g. the llama.cpp runtime's settings


@runtime_checkable
class Runner(Protocol):
    label: str  # what ran, for the report
    model: "NormModel"  # norm records under this runner's ids (alignment, local replays)
    hints: InputHints
    deferred_local: bool  # block local errors are expensive here: computed at the first divergence only
    replay: Any  # the GGUF tensors when weights come from a GGUF (sensitivity), else None

    def run(self, feeds: dict[str, np.ndarray], sink: Sink) -> None:
        """Run the model on ``feeds``, calling ``sink`` for every captured point in execution order."""

    def add_standin(self, conv: "LinearOp", key: str) -> bool:
        """Report the output of ``conv`` (a BatchNorm of the other side was folded into it) under ``key``."""


def as_numpy(t: Any) -> np.ndarray | None:
    """A captured torch value (tensor, tuple, HF output object) as float32 numpy, or None."""
    import torch

    if isinstance(t, (tuple, list)) and t:
        t = t[0]
    if hasattr(t, "last_hidden_state") and not isinstance(t, torch.Tensor):
        t = t.last_hidden_state
    if isinstance(t, torch.Tensor):
        return t.detach().to(torch.float32).cpu().numpy()
    return None
