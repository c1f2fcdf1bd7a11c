"""Layer-streamed execution: a torch module whose parameters live on the meta device and are materialized one
unit (a transformer block, or a module outside the blocks) at a time, right before it runs, and dropped right
after — so running a 7B model needs about one block of memory, not the whole model.

Weights come from a *source*: ``name -> float32 numpy getter`` (a safetensors checkpoint read with positioned
reads, a GGUF dequantized by ggml or gguf-py, ...), called as ``getter(out=buffer)`` for large tensors: a getter
that can fill the float32 buffer does so and returns it (else it returns a new array).  The buffers of a released
unit are recycled for the next unit's tensors of the same shapes — every block of a 7B model has the same shapes,
and a fresh 180 MB array per tensor costs more in page faults than decoding it.  Prefetches and the weight-error
statistics run in one background thread per side.  Buffers are created for real (RoPE tables are computed at
init) and loaded from the source when it has them.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..kernels import rel_l2_error

Getter = Callable[..., np.ndarray]  # getter(out=None) -> float32 array (``out`` itself when it filled it)
#: tensors of at least this many elements are read into recycled buffers (smaller ones are allocated fresh)
RECYCLE_MIN = 1 << 18
#: module names that hold the numbered blocks (HF ``layers``/``layer``/``h``/``blocks``, GGUF ``blk``)
UNIT_CONTAINERS = "layers|layer|h|blocks|block|blk"
UNIT_RE = re.compile(rf"(?:^|\.)(?:{UNIT_CONTAINERS})\.(\d+)$")


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """While active, every nn.Parameter a module registers is created on the meta device (no memory);
    buffers stay real.  (The technique of accelerate's ``init_empty_weights(include_buffers=False)``.)"""
    import torch

    original = torch.nn.Module.register_parameter

    def register(module: Any, name: str, param: Any) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=False)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


@dataclass
class WeightStat:
    """How far one materialized tensor is from its reference (the source model's tensor)."""

    name: str
    qtype: str
    rel_l2: float
    unit: str


@dataclass
class LazyWeights:
    """Materialize a meta-parameter module unit by unit from a weight source.

    ``source``: parameter/buffer name -> getter; ``qtypes``: name -> stored type (for reports);
    ``reference``: name -> getter of the tensor this one should match (B's source model), to measure the
    weights' own error as they are materialized (``stats``)."""

    module: Any
    source: dict[str, Getter]
    qtypes: dict[str, str] = field(default_factory=dict)
    reference: dict[str, Getter] | None = None
    on_unit: Callable[[str], None] | None = None  # progress: called with each unit's name before it runs
    stats: list[WeightStat] = field(default_factory=list)
    keep: set[str] = field(default_factory=set)  # names whose values stay available after release (``kept``)
    _ready: dict[str, Any] = field(default_factory=dict, repr=False)  # name -> (buffer, Future) of a prefetch
    _pool: Any = field(default=None, repr=False)
    kept: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    missing: list[str] = field(default_factory=list)  # parameters with no source (kept at zero)
    _meta: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)
    _handles: list[Any] = field(default_factory=list, repr=False)
    _done_stats: set[str] = field(default_factory=set, repr=False)
    _free: dict[tuple[int, ...], list[np.ndarray]] = field(default_factory=dict, repr=False)  # recycled buffers
    _lent: dict[tuple[int, str], np.ndarray] = field(default_factory=dict, repr=False)  # buffers in parameters
    _measuring: list[tuple[WeightStat, Any]] = field(default_factory=list, repr=False)  # stats being computed

    def __post_init__(self) -> None:
        # tied parameters (lm_head <-> embed_tokens): one object under several names -> share one source
        by_obj: dict[int, list[str]] = {}
        for name, p in self.module.named_parameters(remove_duplicate=False):
            by_obj.setdefault(id(p), []).append(name)
        for names in by_obj.values():
            have = next((n for n in names if n in self.source), None)
            for n in names:
                if n not in self.source and have is not None:
                    self.source[n] = self.source[have]
                    if have in self.qtypes:
                        self.qtypes[n] = self.qtypes[have]
        for name, p in self.module.named_parameters(remove_duplicate=False):
            if p.device.type == "meta" and name not in self.source:
                self.missing.append(name)

    # -- units ----------------------------------------------------------------------------------------
    def units(self) -> list[tuple[str, Any]]:
        """Blocks (``...layers.N``) and the parameter-owning modules outside any block."""
        out: list[tuple[str, Any]] = []
        inside: list[str] = []
        for name, mod in self.module.named_modules():
            if any(name.startswith(b + ".") for b in inside):
                continue
            if UNIT_RE.search(name):
                inside.append(name)
                out.append((name, mod))
            elif any(True for _ in mod.parameters(recurse=False)):
                out.append((name, mod))
        return out

    def install(self, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """Materialize each unit on its forward pre-hook, drop it after its forward (hooks registered later,
        e.g. activation capture, still see the weights: call this before registering them... or rely on
        ``always_call`` ordering; release hooks run last because they are registered with prepend=False
        after the capture hooks by :meth:`install_release`)."""
        for name, mod in self.units():
            if name not in skip:
                self._handles.append(mod.register_forward_pre_hook(self._pre(name)))

    def install_release(self, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """The post-forward hooks that free each unit: register after every capture hook."""
        for name, mod in self.units():
            if name not in skip:
                self._handles.append(mod.register_forward_hook(self._post(name), always_call=True))

    def remove(self) -> None:
        """Remove the hooks and end the background work (see :meth:`close`)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.close()

    # -- recycled buffers -----------------------------------------------------------------------------------
    def _take(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """A float32 buffer of this shape for a large tensor that is not kept: a released one when there is one."""
        if name in self.keep or int(np.prod(shape, dtype=np.int64)) < RECYCLE_MIN:
            return None
        free = self._free.get(shape)
        return free.pop() if free else np.empty(shape, dtype=np.float32)

    def _give(self, buf: np.ndarray) -> None:
        self._free.setdefault(tuple(buf.shape), []).append(buf)

    @staticmethod
    def _fetch(getter: Getter, buf: np.ndarray | None) -> np.ndarray:
        return getter() if buf is None else getter(out=buf)

    def _pre(self, unit: str) -> Callable[..., None]:
        def hook(mod: Any, _args: Any) -> None:
            if self.on_unit is not None:
                self.on_unit(unit)
            self.materialize(unit, mod)
        return hook

    def _post(self, unit: str) -> Callable[..., None]:
        def hook(mod: Any, _args: Any, _out: Any) -> None:
            self.release(mod)
        return hook

    # -- materialize / release ----------------------------------------------------------------------------
    def materialize(self, unit: str, mod: Any) -> None:
        import torch

        prefix = unit + "." if unit else ""
        for sub_name, sub in mod.named_modules():
            for pname, p in list(sub._parameters.items()):
                if p is None or p.device.type != "meta":
                    continue
                full = prefix + (sub_name + "." if sub_name else "") + pname
                self._meta[(id(sub), pname)] = p
                getter = self.source.get(full)
                if getter is None:
                    value = torch.zeros(p.shape, dtype=torch.float32)
                else:
                    ready = self._ready.pop(full, None)
                    if ready is not None:
                        buf, future = ready
                        arr = future.result()
                    else:
                        buf = self._take(full, tuple(p.shape))
                        arr = self._fetch(getter, buf)
                    if buf is not None and arr is not buf:  # the getter made its own array
                        self._give(buf)
                        buf = None
                    if tuple(arr.shape) != tuple(p.shape):
                        from ..errors import NormauditError

                        raise NormauditError(f"weight {full} has shape {tuple(arr.shape)}, the model needs "
                                             f"{tuple(p.shape)}", hint="is this the model it was converted from?")
                    value = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
                    self._stat(full, arr, unit)
                    if full in self.keep:
                        self.kept[full] = value.numpy()
                    if buf is not None:
                        self._lent[(id(sub), pname)] = buf
                sub._parameters[pname] = torch.nn.Parameter(value, requires_grad=False)

    def _background(self) -> Any:
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="normaudit-prefetch")
        return self._pool

    def prefetch(self, unit: str, mod: Any) -> None:
        """Start reading (and dequantizing) a unit's weights in a background thread, so the next block's I/O and
        conversion overlap this block's compute (numpy and file reads release the GIL)."""
        pool = self._background()
        prefix = unit + "." if unit else ""
        for sub_name, sub in mod.named_modules():
            for pname, p in sub._parameters.items():
                full = prefix + (sub_name + "." if sub_name else "") + pname
                getter = self.source.get(full)
                if p is not None and p.device.type == "meta" and getter is not None and full not in self._ready:
                    buf = self._take(full, tuple(p.shape))
                    self._ready[full] = (buf, pool.submit(self._fetch, getter, buf))

    def close(self) -> None:
        """Cancel prefetches not started, wait for the weight statistics, stop the background thread, drop the
        recycled buffers."""
        for _, future in self._ready.values():
            future.cancel()
        self._ready.clear()
        self.settle()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._free.clear()

    def release(self, mod: Any) -> None:
        self.settle()  # the weight statistics still read the buffers
        for sub in mod.modules():
            for pname in list(sub._parameters):
                meta = self._meta.pop((id(sub), pname), None)
                if meta is not None:
                    sub._parameters[pname] = meta
                    buf = self._lent.pop((id(sub), pname), None)
                    if buf is not None:  # nothing else holds it: the parameter was its only user
                        self._give(buf)

    def _stat(self, name: str, value: np.ndarray, unit: str) -> None:
        if self.reference is None or name in self._done_stats or name not in self.reference:
            return
        self._done_stats.add(name)
        ref = self.reference[name]()
        if ref.shape != value.shape:
            return
        # float32 dots over chunks (a few 1e-7 of relative precision: plenty for errors of 1e-4 and up), in the
        # background thread while the block runs; release() waits for them before the buffers are reused
        stat = WeightStat(name, self.qtypes.get(name, "?"), float("nan"), unit)
        self.stats.append(stat)
        self._measuring.append((stat, self._background().submit(rel_l2_error, ref, value)))

    def settle(self) -> None:
        """Wait for the weight statistics under way (their errors are raised here)."""
        measuring, self._measuring = self._measuring, []
        for stat, future in measuring:
            stat.rel_l2 = future.result()

    def load_buffers(self) -> None:
        """Persistent buffers the source holds (BatchNorm statistics, ...) are copied in once."""
        import torch

        with torch.no_grad():
            for name, buf in self.module.named_buffers():
                getter = self.source.get(name)
                if getter is not None:
                    arr = getter()
                    if tuple(arr.shape) == tuple(buf.shape):
                        buf.copy_(torch.from_numpy(np.ascontiguousarray(arr)).to(buf.dtype))
