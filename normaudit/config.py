"""Thresholds for compare, with defaults, ``[tool.normaudit]`` / ``normaudit.toml`` and flag overrides."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import NormauditError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

#: relative L2 error a norm weight stored in each dtype can show against its float32 source
#: (round-off of the format for values around 1; generous for the K-quants' block scales).
DEFAULT_REL_L2: dict[str, float] = {
    "F64": 1e-6, "F32": 1e-6, "F16": 1e-3, "BF16": 8e-3,
    "Q8_0": 1e-2, "Q8_1": 1e-2, "Q8_K": 1e-2, "I8": 1e-2, "U8": 1e-2,
    "Q6_K": 2e-2, "Q5_0": 4e-2, "Q5_1": 4e-2, "Q5_K": 4e-2,
    "Q4_0": 8e-2, "Q4_1": 8e-2, "Q4_K": 8e-2, "IQ4_NL": 8e-2, "IQ4_XS": 8e-2, "MXFP4": 1e-1,
    "Q3_K": 0.15, "IQ3_S": 0.15, "IQ3_XXS": 0.15, "Q2_K": 0.3, "IQ2_XXS": 0.3, "IQ2_XS": 0.3, "IQ2_S": 0.3,
}
UNKNOWN_DTYPE_REL_L2 = 0.3


@dataclass
class Thresholds:
    eps_rtol: float = 1e-5  # relative eps difference allowed (after rounding both to the stored dtype)
    rel_l2: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_REL_L2))
    rel_l2_override: float | None = None  # one tolerance for every dtype (--rel-l2)
    fold_rel_l2: float = 2e-6  # folded conv weights vs W*g/sqrt(var+eps) rebuilt in float32
    fail_on: str = "error"  # error | warning
    activation_rel_l2: float = 1e-2  # activation diffs: a point above this relative L2 diverges
    activation_cosine: float = 0.9999  # ... or below this cosine
    activation_norm_local: float = 1e-3  # a norm re-run on A's input may differ this much (F32 norm weights)
    activation_block_factor: float = 4.0  # a block's local error may be this many times what its weights explain
    activation_block_floor: float = 1e-3  # ... and never needs to be below this (float round-off of a block)

    def rel_l2_for(self, dtype: str) -> float:
        if self.rel_l2_override is not None:
            return self.rel_l2_override
        return self.rel_l2.get(dtype, UNKNOWN_DTYPE_REL_L2)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_KEYS = {f.name for f in fields(Thresholds)}


def find_config_file(start: Path | None = None) -> Path | None:
    """normaudit.toml, else a pyproject.toml with [tool.normaudit], in the working directory."""
    here = start or Path.cwd()
    if (here / "normaudit.toml").is_file():
        return here / "normaudit.toml"
    py = here / "pyproject.toml"
    if py.is_file():
        try:
            if "normaudit" in tomllib.loads(py.read_text()).get("tool", {}):
                return py
        except (tomllib.TOMLDecodeError, OSError):
            return None
    return None


def _settings_table(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """The settings of a config file: the ``[tool.normaudit]`` table of a pyproject.toml; in a normaudit.toml
    (or any other file) top-level keys, a ``[normaudit]`` table or a ``[tool.normaudit]`` table (the block
    copied out of a pyproject.toml works as it is)."""
    tool = doc.get("tool")
    nested = tool.get("normaudit") if isinstance(tool, dict) else None
    if path.name == "pyproject.toml":
        return nested if isinstance(nested, dict) else {}
    if isinstance(nested, dict):
        if set(doc) - {"tool"} or set(tool) - {"normaudit"}:  # type: ignore[arg-type]
            raise NormauditError(f"{path}: give the settings either as a [tool.normaudit] table or at the top "
                                 "level, not both")
        return nested
    if isinstance(doc.get("normaudit"), dict):
        return doc["normaudit"]
    return doc


def load_thresholds(path: Path | None = None, **overrides: Any) -> Thresholds:
    """Defaults, then the config file (``path`` or found in the cwd), then non-None ``overrides``."""
    th = Thresholds()
    path = path or find_config_file()
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise NormauditError(f"{path}: cannot read config ({exc})") from None
        table = _settings_table(doc, Path(path))
        for key, value in table.items():
            key = key.replace("-", "_")
            if key not in _KEYS:
                raise NormauditError(f"{path}: unknown setting {key!r}", hint="known: " + ", ".join(sorted(_KEYS)))
            if key == "rel_l2":
                if isinstance(value, dict):
                    th.rel_l2.update({str(k).upper(): float(v) for k, v in value.items()})
                else:
                    th.rel_l2_override = float(value)
            else:
                setattr(th, key, type(getattr(th, key))(value) if getattr(th, key) is not None else value)
    for key, value in overrides.items():
        if value is not None:
            setattr(th, key, value)
    if th.fail_on not in ("error", "warning"):
        raise NormauditError(f"fail_on must be 'error' or 'warning', not {th.fail_on!r}")
    return th
