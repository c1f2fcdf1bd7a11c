from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TM = ROOT / "testmodels"
REAL = TM / "real"
# the shared corpus exists beside the repo in CI and for developers, never for users: sweep it when present
CORPUS = Path(os.environ.get("NORMAUDIT_CORPUS", ROOT.parent / "shared" / "corpus"))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Architecture facts are cached per config.json: tests use their own cache, never the user's."""
    os.environ["NORMAUDIT_CACHE"] = str(tmp_path_factory.mktemp("normaudit-cache"))


@pytest.fixture
def tm() -> Path:
    return TM


@pytest.fixture
def real() -> Path:
    return REAL
