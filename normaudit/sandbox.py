"""Run a torch loader that cannot be made safe in-process (TorchScript, trusted pickles) in a child process
with memory and time limits.

``torch.jit.load`` segfaults on some crafted archives, and unpickling a trusted file may still allocate
without bound.  The child (``python -m normaudit.sandbox``) loads the file, finds its norm layers with the
same code as an in-process load, and hands back plain records and the norm tensors as an ``.npz``; the
parent rebuilds the :class:`NormModel`.  A crash, a timeout or a memory blow-up becomes one
:class:`CorruptFile` line.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptFile, NormauditError
from .extras import check
from .model import (Convention, EpsSource, LinearOp, NormKind, NormLayer, NormModel, Role, TensorRef,
                    const_tensor)

MEMORY_BASE = 2 * 2**30  # torch itself needs ~1 GiB of address space
TIME_BASE_S = 120.0

_TENSOR_FIELDS = ("weight", "bias", "running_mean", "running_var")
_ENUMS = {"kind": NormKind, "eps_source": EpsSource, "convention": Convention, "role": Role}


# -- records ---------------------------------------------------------------------------------------------

def _record(layer: NormLayer, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(NormLayer):
        value = getattr(layer, f.name)
        if f.name in _TENSOR_FIELDS:
            if value is not None:
                key = f"t{len(arrays)}"
                arrays[key] = value.load()
                value = {"key": key, "name": value.name, "dtype": value.dtype}
        elif f.name in _ENUMS:
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _layer(rec: dict[str, Any], arrays: Any) -> NormLayer:
    kw: dict[str, Any] = {}
    for f in fields(NormLayer):
        if f.name not in rec:
            continue
        value = rec[f.name]
        if f.name in _TENSOR_FIELDS and value is not None:
            value = const_tensor(value["name"], arrays[value["key"]], value["dtype"])
        elif f.name in _ENUMS:
            value = _ENUMS[f.name](value)
        elif f.name == "axis":
            value = tuple(value)
        kw[f.name] = value
    return NormLayer(**kw)


def _linear_record(op: LinearOp, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    out = {"id": op.id, "op": op.op, "module": op.module, "nodes": list(op.nodes), "out_axis": op.out_axis,
           "groups": op.groups, "alpha": op.alpha, "beta": op.beta}
    for name in ("weight", "bias"):
        ref: TensorRef | None = getattr(op, name)
        if ref is not None:
            key = f"t{len(arrays)}"
            arrays[key] = ref.load()
            out[name] = {"key": key, "name": ref.name, "dtype": ref.dtype}
    return out


def _linear(rec: dict[str, Any], arrays: Any) -> LinearOp:
    def ref(name: str) -> TensorRef | None:
        v = rec.get(name)
        return const_tensor(v["name"], arrays[v["key"]], v["dtype"]) if v else None

    return LinearOp(rec["id"], rec["op"], ref("weight"), ref("bias"), rec.get("module", ""), list(rec.get("nodes", [])),
                    out_axis=int(rec.get("out_axis", 0)), groups=int(rec.get("groups", 1)),
                    alpha=float(rec.get("alpha", 1.0)), beta=float(rec.get("beta", 1.0)))


def dump_model(model: NormModel, out_dir: Path) -> None:
    """Write a loaded model as records.json + tensors.npz (the child's side)."""
    arrays: dict[str, np.ndarray] = {}
    doc = {"path": model.path, "format": model.format, "architecture": model.architecture,
           "container": model.container, "notes": model.notes,
           "norms": [_record(n, arrays) for n in model.norms],
           "linear_ops": [_linear_record(op, arrays) for op in model.linear_ops]}
    np.savez(out_dir / "tensors.npz", **arrays)
    (out_dir / "records.json").write_text(json.dumps(doc))


def read_model(out_dir: Path) -> NormModel:
    """Rebuild a NormModel from what the child wrote (the parent's side; no pickles: allow_pickle=False)."""
    doc = json.loads((out_dir / "records.json").read_text())
    with np.load(out_dir / "tensors.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return NormModel(path=doc["path"], format=doc["format"], architecture=doc["architecture"],
                     norms=[_layer(r, arrays) for r in doc["norms"]], container=doc["container"],
                     linear_ops=[_linear(r, arrays) for r in doc["linear_ops"]], notes=list(doc["notes"]))


# -- parent ----------------------------------------------------------------------------------------------

def _spawn(request: dict[str, Any], label: object, what: str, memory: int, timeout: float) -> dict[str, Any]:
    """Run the child on ``request``; its answer, or one CorruptFile line for a crash, a timeout, a blow-up."""

    def limits() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    # the child imports what this process can (a trusted pickle's classes): the same sys.path
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TORCH_CPP_LOG_LEVEL": "ERROR",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        proc = subprocess.run([sys.executable, "-m", "normaudit.sandbox"], input=json.dumps(request), text=True,
                              capture_output=True, timeout=timeout, preexec_fn=limits, env=env)
    except subprocess.TimeoutExpired:
        raise CorruptFile(f"{label}: {what} did not finish within {timeout:.0f} s (corrupt or hostile file?)") \
            from None
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise CorruptFile(f"{label}: {what} crashed on this file ({sig}); it is corrupt or hostile")
    answer = _last_json(proc.stdout)
    if proc.returncode != 0 or answer is None or not answer.get("ok"):
        if answer and answer.get("error"):
            raise CorruptFile(answer["error"], hint=answer.get("hint", ""))
        if "MemoryError" in proc.stderr or "std::bad_alloc" in proc.stderr:
            raise CorruptFile(f"{label}: {what} needed more than {memory >> 20} MiB (corrupt or hostile file?)")
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise CorruptFile(f"{label}: {what} failed ({tail})")
    return answer


def load_isolated(loader: str, path: Path, *, what: str, memory_bytes: int | None = None,
                  timeout_s: float | None = None) -> NormModel:
    """Run ``loader`` (``module:function`` taking a Path, returning a NormModel) on ``path`` in a child process.

    ``what`` names the loader in errors ("the TorchScript loader")."""
    check("torch", f"{path}: {what}")  # every loader run here is torch's
    size = path.stat().st_size
    memory = memory_bytes or MEMORY_BASE + 4 * size
    timeout = timeout_s or TIME_BASE_S + size / 2**24  # + 1 s per 16 MiB
    with tempfile.TemporaryDirectory(prefix="normaudit-") as tmp:
        _spawn({"loader": loader, "path": str(path), "out": tmp}, path, what, memory, timeout)
        return read_model(Path(tmp))


def call_isolated(target: str, args: dict[str, Any], *, label: object, what: str,
                  memory_bytes: int = MEMORY_BASE, timeout_s: float = TIME_BASE_S) -> Any:
    """``module:function(**args)`` in a child process (JSON in, JSON out): for work that needs torch /
    transformers while this process must not import them (a static audit stays light and crash-free)."""
    return _spawn({"call": target, "args": args}, label, what, memory_bytes, timeout_s).get("result")


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


# -- child -----------------------------------------------------------------------------------------------

def _child() -> int:
    import importlib
    import logging

    logging.disable(logging.CRITICAL)  # torch's loggers must not print tracebacks; the parent reports
    req = json.loads(sys.stdin.read())
    mod_name, func_name = (req.get("loader") or req["call"]).split(":")
    try:
        fn = getattr(importlib.import_module(mod_name), func_name)
        if "call" in req:
            print(json.dumps({"ok": True, "result": fn(**req["args"])}))
            return 0
        model = fn(Path(req["path"]))
        dump_model(model, Path(req["out"]))
    except NormauditError as exc:
        print(json.dumps({"ok": False, "error": str(exc), "hint": exc.hint}))
        return 1
    except MemoryError:
        print(json.dumps({"ok": False, "error": f"{req.get('path', req.get('call'))}: the loader ran out of memory "
                                                "(corrupt or hostile file?)"}))
        return 1
    except Exception as exc:  # the third-party loader failed on this file
        print(json.dumps({"ok": False, "error": f"{req.get('path', req.get('call'))}: cannot load "
                                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
