"""Hugging Face config.json: bounded reads and the few lookups normaudit needs (eps keys, model_type)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ...errors import CorruptFile
from ...facts.hf import TEXT_CONFIG_KEYS, TOWER_CONFIGS

MAX_JSON_BYTES = 64 * 2**20  # config.json / index files are kilobytes; refuse absurd ones before parsing


def read_json(path: Path) -> Any:
    """A JSON file of bounded size (config, index): regular files only, never a FIFO or device."""
    if not path.is_file():
        raise CorruptFile(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CorruptFile(f"{path}: {size} bytes is too large for a config/index JSON file")
    try:
        return json.loads(path.read_bytes()[:MAX_JSON_BYTES + 1])
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
