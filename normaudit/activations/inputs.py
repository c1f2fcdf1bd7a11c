"""Inputs for activation diffs: an .npz, a report's recorded inputs (JSON), text through a local HF tokenizer,
or a seeded default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NormauditError
from ..extras import require

DEFAULT_SEQ_LEN = 16
DEFAULT_SEED = 0
#: inputs up to this many elements are recorded with their values in the report (so --input REPORT.json repeats
#: the run); larger ones by shape, dtype and seed
RECORD_VALUES_MAX = 4096
_MAX_JSON_BYTES = 256 * 1024 * 1024


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(str(path), allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise NormauditError(f"{path}: cannot read input .npz ({exc})",
                             hint="save inputs with numpy.savez(path, input_ids=...)") from None


def load_inputs(path: str | Path) -> tuple[dict[str, np.ndarray], str]:
    """Inputs from an ``.npz`` (name -> array), or from JSON: a compare report (its ``activations.inputs``)
    or that ``inputs`` object alone. Returns the arrays and the source label recorded in the report."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(64).lstrip()
    except OSError as exc:
        raise NormauditError(f"{path}: cannot read inputs ({exc.strerror or exc})") from None
    if not head.startswith(b"{"):
        return load_npz(p), f"npz:{path}"
    if p.stat().st_size > _MAX_JSON_BYTES:
        raise NormauditError(f"{path}: inputs JSON larger than {_MAX_JSON_BYTES >> 20} MiB")
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NormauditError(f"{path}: not valid JSON ({exc})") from None
    recorded = doc.get("activations", {}).get("inputs") if isinstance(doc.get("activations"), dict) else doc
    if not isinstance(recorded, dict) or "source" not in recorded:
        raise NormauditError(f"{path}: no recorded inputs (a compare --activations report, or its "
                             "activations.inputs object)", hint="or pass an .npz of name -> array")
    return from_record(recorded, str(path)), f"json:{path} (recorded: {recorded.get('source')})"


def from_record(recorded: dict[str, Any], where: str = "inputs") -> dict[str, np.ndarray]:
    """The arrays a report's ``inputs`` record describes (values, or shape + seed for a default image)."""
    out: dict[str, np.ndarray] = {}
    seed = recorded.get("seed")
    for name, entry in recorded.items():
        if not isinstance(entry, dict):
            continue  # source, seed
        shape, dtype = entry.get("shape"), entry.get("dtype")
        try:
            if "values" in entry:
                arr = np.asarray(entry["values"], dtype=np.dtype(dtype))
            elif str(recorded.get("source", "")).startswith("default seeded normal") and seed is not None:
                arr = default_image(tuple(shape), int(seed))["x"].astype(np.dtype(dtype))
            else:
                raise NormauditError(f"{where}: input {name!r} was recorded without its values (more than "
                                     f"{RECORD_VALUES_MAX} elements)",
                                     hint="write the inputs with --save-inputs FILE.npz and pass that with --input")
            if shape is not None and list(arr.shape) != list(shape):
                raise NormauditError(f"{where}: input {name!r} has shape {list(arr.shape)}, recorded {shape}")
        except (TypeError, ValueError) as exc:
            raise NormauditError(f"{where}: input {name!r} cannot be rebuilt ({exc})") from None
        out[name] = arr
    if not out:
        raise NormauditError(f"{where}: the recorded inputs hold no arrays")
    return out


def save_npz(inputs: dict[str, np.ndarray], path: str | Path) -> None:
    """Write inputs as an ``.npz`` that ``--input`` reads back."""
    try:
        with open(path, "wb") as fh:
            np.savez(fh, **inputs)
    except OSError as exc:
        raise NormauditError(f"{path}: cannot write inputs ({exc.strerror or exc})") from None


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


def default_tokens(vocab_size: int, seq_len: int = DEFAULT_SEQ_LEN, seed: int = DEFAULT_SEED,
                   batch: int = 1) -> dict[str, np.ndarray]:
    """Fixed, seeded, in-vocab token sequences (ids 3.. skip the usual special tokens)."""
    rng = np.random.default_rng(seed)
    low = 3 if vocab_size > 8 else 0
    return {"input_ids": rng.integers(low, vocab_size, size=(batch, seq_len), dtype=np.int64)}


def default_image(shape: tuple[int, ...], seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(shape).astype(np.float32)}


def describe(inputs: dict[str, np.ndarray], source: str) -> dict[str, Any]:
    """JSON record of the inputs used, so the run can be repeated."""
    out: dict[str, Any] = {"source": source, "seed": DEFAULT_SEED if source.startswith("default") else None}
    for k, v in inputs.items():
        entry: dict[str, Any] = {"shape": list(v.shape), "dtype": str(v.dtype)}
        if v.dtype.kind in "iufb" and v.size <= RECORD_VALUES_MAX:
            entry["values"] = v.tolist()
        out[k] = entry
    return out
