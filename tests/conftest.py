from __future__ import annotations

import json
import os
import subprocess
import sys
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


#: the optional dependencies a core install lacks
HEAVY = ("torch", "onnxruntime", "transformers")

# runs normaudit in a fresh interpreter; optionally hides modules (sys.modules[name] = None makes `import name`
# fail and importlib.util.find_spec(name) return None, exactly as in a venv without them); prints what got loaded
_PROBE = r"""
import json, sys
hide, mode, args = json.loads(sys.argv[1])
for name in hide:
    sys.modules[name] = None
code = None
if mode == "cli":
    from normaudit.cli import run
    sys.argv = ["normaudit", *args]
    try:
        run()
    except SystemExit as exc:
        code = exc.code
else:
    import normaudit
    for a, b in args:
        normaudit.audit(a, b) if b else normaudit.inspect(a)
loaded = sorted({m.split(".")[0] for m in sys.modules if sys.modules[m] is not None})
print(json.dumps({"code": code, "loaded": loaded}))
"""


def probe(mode: str, args: list, hide: tuple[str, ...] = ()) -> tuple[dict, str]:
    """Run normaudit in a fresh interpreter (``mode`` "cli": argv ``args``; "api": inspect/audit of each
    ``[a, b|None]``) with the ``hide`` modules made unimportable; returns ({"code", "loaded"}, stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([list(hide), mode, args])], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.stdout.strip(), proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr
