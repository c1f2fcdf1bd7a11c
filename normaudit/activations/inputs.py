"""Inputs for activation diffs: an .npz, text through a local HF tokenizer, or a seeded default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NormauditError
from ..extras import require

DEFAULT_SEQ_LEN = 16
DEFAULT_SEED = 0


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(str(path), allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise NormauditError(f"{path}: cannot read input .npz ({exc})",
                             hint="save inputs with numpy.savez(path, input_ids=...)") from None


def tokenize(text: str, tokenizer_dirs: list[Path]) -> dict[str, np.ndarray]:
    """Tokenize with the first HF tokenizer found in ``tokenizer_dirs`` (local files only)."""
    for d in tokenizer_dirs:
        if d.is_dir() and any((d / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.txt",
                                                           "tokenizer_config.json")):
            transformers = require("transformers", f"{d}: tokenizing --text", extra="activations")
            try:
                tok = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
            except Exception as exc:  # transformers raises many types for a broken folder
                raise NormauditError(f"{d}: cannot load the tokenizer ({type(exc).__name__}: {exc})") from None
            ids = tok(text, return_tensors="np")["input_ids"].astype(np.int64)
            return {"input_ids": ids}
    raise NormauditError("--text needs a Hugging Face tokenizer next to one of the models",
                         hint="pass --model HF_DIR with tokenizer files, or --input FILE.npz with input_ids")


def default_tokens(vocab_size: int, seq_len: int = DEFAULT_SEQ_LEN, seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """A fixed, seeded, in-vocab token sequence (ids 3.. skip the usual special tokens)."""
    rng = np.random.default_rng(seed)
    low = 3 if vocab_size > 8 else 0
    return {"input_ids": rng.integers(low, vocab_size, size=(1, seq_len), dtype=np.int64)}


def default_image(shape: tuple[int, ...], seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(shape).astype(np.float32)}


def describe(inputs: dict[str, np.ndarray], source: str) -> dict[str, Any]:
    """JSON record of the inputs used, so the run can be repeated."""
    out: dict[str, Any] = {"source": source, "seed": DEFAULT_SEED if source.startswith("default") else None}
    for k, v in inputs.items():
        entry: dict[str, Any] = {"shape": list(v.shape), "dtype": str(v.dtype)}
        if v.dtype.kind in "iu" and v.size <= 4096:
            entry["values"] = v.tolist()
        out[k] = entry
    return out
