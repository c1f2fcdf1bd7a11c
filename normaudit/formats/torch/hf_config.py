"""Hugging Face config.json: bounded reads and the few lookups normaudit needs (eps keys, model_type)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ...errors import CorruptFile
from ...facts.hf import TEXT_CONFIG_KEYS, TOWER_CONFIGS

# Refuse absurd JSON before parsing: parsed JSON can take ~25x its size in memory (``[{},{},...]``), so the caps
# keep the worst case well under 1 GiB. Real configs are kilobytes (an ImageNet-21k id2label is ~1 MiB); the
# largest real shard indexes (~90k tensors) are ~9 MiB.
MAX_CONFIG_BYTES = 8 * 2**20
MAX_INDEX_BYTES = 32 * 2**20
MAX_JSON_BYTES = MAX_CONFIG_BYTES


def read_json(path: Path, limit: int = MAX_CONFIG_BYTES) -> Any:
    """A JSON file of bounded size (config, index): regular files only, never a FIFO or device."""
    if not path.is_file():
        raise CorruptFile(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > limit:
        raise CorruptFile(f"{path}: {size} bytes is too large for a {path.name} file (limit {limit >> 20} MiB)")
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise CorruptFile(f"{path}: grew past {limit >> 20} MiB while being read")
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CorruptFile(f"{path}: unreadable JSON ({type(exc).__name__}: {str(exc)[:120]})") from None


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = read_json(path)
    except OSError as exc:
        raise CorruptFile(f"{path}: unreadable config.json ({exc})") from None
    if not isinstance(config, dict):
        raise CorruptFile(f"{path}: config.json is not a JSON object")
    return config


def tower_config(config: dict[str, Any], module: str) -> str | None:
    """The sub-config (``vision_config``...) of the tower a module path belongs to, if the config has it."""
    parts = set(module.split("."))
    for key, names in TOWER_CONFIGS:
        if isinstance(config.get(key), dict) and parts & set(names):
            return key
    return None


def config_value(config: dict[str, Any], keys: Iterable[str], sub: str | None = None) -> tuple[float, str] | None:
    """The first numeric value among ``keys`` (top level, then text sub-configs; or only the ``sub`` config of a
    tower), with its dotted key."""
    scopes = [("", config)] + [(f"{k}.", config[k]) for k in TEXT_CONFIG_KEYS if isinstance(config.get(k), dict)]
    if sub is not None and isinstance(config.get(sub), dict):
        scopes = [(f"{sub}.", config[sub])]
    for key in keys:
        for prefix, scope in scopes:
            value = scope.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value), prefix + key
    return None


def model_type_of(config: dict[str, Any]) -> str | None:
    """The language model's ``model_type`` (``text_config`` of multimodal configs first)."""
    text = config.get("text_config")
    if isinstance(text, dict) and isinstance(text.get("model_type"), str):
        return text["model_type"]
    mt = config.get("model_type")
    return mt if isinstance(mt, str) else None


def architecture_of(config: dict[str, Any]) -> str | None:
    archs = config.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    return model_type_of(config)
