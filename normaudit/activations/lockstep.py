"""Lockstep execution of two layer-streamed module runners of one architecture (an HF model and its GGUF replay).

A runs its own forward; at each of A's blocks, B's block of the same index runs twice while both are in memory:
on B's own hidden state (B's trajectory) and on A's input (the block's *local* error), with A's masks and
position embeddings (they do not depend on weights).  B's modules before the first block run once up front, its
modules after the last block once at the end, with the blocks replaced by their recorded outputs.  Each weight
is read once, the next blocks' weights in background threads while the current ones run; peak memory is about
two blocks of each model plus the activations of one block.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .base import Sink, as_numpy


#: with at most this many token rows a block's matmuls are bound by memory, not arithmetic: one intra-op thread
#: leaves the other cores to the background weight reads (7B, 16 tokens, 2 cores: 35 s -> 30 s); longer inputs
#: keep torch's thread count (at 256 rows two threads are 1.7x faster)
FEW_ROWS = 32


def _few_rows(feeds: dict[str, np.ndarray]) -> bool:
    ids = [np.asarray(v).size for v in feeds.values() if np.issubdtype(np.asarray(v).dtype, np.integer)]
    return bool(ids) and len(ids) == len(feeds) and max(ids) <= FEW_ROWS


class _Stop(Exception):
    """Ends B's head run at its first block."""


def can_lockstep(a: Any, b: Any) -> bool:
    """Both are layer-streamed module runners with the same blocks."""
    return (getattr(a, "weights", None) is not None and getattr(b, "weights", None) is not None
            and getattr(a, "blocks", None) and sorted(a.blocks.values()) == sorted(b.blocks.values()))


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


def run_lockstep(ra: Any, rb: Any, feeds: dict[str, np.ndarray], sink_a: Sink, sink_b: Sink,
                 progress: Callable[[str], None] | None = None) -> None:
    import torch

    a_mods, b_mods = dict(ra.module.named_modules()), dict(rb.module.named_modules())
    a_block = {key: name for name, key in ra.blocks.items()}
    b_block = {key: name for name, key in rb.blocks.items()}
    order = sorted(a_block, key=lambda k: int(k.split(".")[1]))
    first_key = order[0] if order else None
    state: dict[str, Any] = {"x_b": None, "b_out": {}, "head": {}, "quiet_b": False}
    handles: list[Any] = []
    wa, wb = ra.weights, rb.weights

    # B's weights are compared against A's tensors while A's block is in memory (each read once)
    reference = wb.reference or {}

    block_names = set(a_block.values())
    wa.keep = {n for n, _ in ra.module.named_parameters() if not any(n.startswith(b + ".") for b in block_names)}

    def live_reference(name: str, fallback: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
        def get() -> np.ndarray:
            if name in wa.kept:  # a unit outside the blocks A ran earlier: kept until B compared against it
                return wa.kept.pop(name)
            try:
                p = ra.module.get_parameter(name)
            except AttributeError:
                return fallback()
            return p.detach().numpy() if p.device.type != "meta" else fallback()
        return get

    wb.reference = {n: live_reference(n, g) for n, g in reference.items()}

    def norm_hook(sink: Sink, name: str, side: str) -> Callable[..., None]:
        def hook(_m: Any, args: tuple, out: Any) -> None:
            if side == "b" and state["quiet_b"]:
                return
            y = as_numpy(out)
            if y is not None:
                sink(name, "norm", y, as_numpy(args[0]) if args else None)
        return hook

    for name in ra.norm_ids:
        handles.append(a_mods[name].register_forward_hook(norm_hook(sink_a, name, "a")))
    for name in rb.norm_ids:
        handles.append(b_mods[name].register_forward_hook(norm_hook(sink_b, name, "b")))

    def run_b_head() -> None:
        """B up to its first block: its embeddings (and their norms), its first block's input."""
        first = b_mods[b_block[first_key]]

        def stop(_m: Any, args: tuple, kwargs: dict) -> None:
            state["x_b"] = args[0] if args else kwargs.get("hidden_states")
            raise _Stop

        recorders = []
        for name, mod in wb.units():
            if not any(name == b_block[k] for k in order):
                recorders.append(mod.register_forward_hook(
                    lambda m, _a, out, n=name: state["head"].__setitem__(n, out)))
        h = first.register_forward_pre_hook(stop, with_kwargs=True)
        wb.install()
        wb.install_release()
        try:
            with torch.no_grad():
                rb.forward(rb.module, feeds)
        except _Stop:
            pass
        finally:
            h.remove()
            for r in recorders:
                r.remove()
            wb.remove()

    def block_pre(key: str) -> Callable[..., None]:
        def hook(_m: Any, _args: tuple, _kwargs: dict) -> None:
            if progress is not None:
                progress(key)
            if key == first_key and state["x_b"] is None:
                run_b_head()
            wb.prefetch(b_block[key], b_mods[b_block[key]])  # B's block of this index, while A's block runs
            later = order.index(key) + 1
            if later < len(order):  # and A's next block (one more block of A in memory, reads off the main thread)
                wa.prefetch(a_block[order[later]], a_mods[a_block[order[later]]])
        return hook

    def block_post(key: str) -> Callable[..., None]:
        def hook(mod_a: Any, args: tuple, kwargs: dict, out: Any) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            rest = args[1:]
            mod_b = b_mods[b_block[key]]
            wb.materialize(b_block[key], mod_b)
            try:
                with torch.no_grad():
                    own = mod_b(state["x_b"], *rest, **kwargs) if args else \
                        mod_b(**{**kwargs, "hidden_states": state["x_b"]})
                state["b_out"][key] = own
                x_b = state["x_b"]
                state["x_b"] = _first(own)
                sink_a(key, "block", as_numpy(out), as_numpy(hidden))

                def rerun(x_in: np.ndarray, overrides: dict[str, np.ndarray] | None = None) -> np.ndarray:
                    t = torch.from_numpy(np.ascontiguousarray(x_in)).to(hidden.dtype)
                    params = dict(mod_b.named_parameters())
                    saved = {}
                    state["quiet_b"] = True
                    try:
                        with torch.no_grad():
                            for n, v in (overrides or {}).items():
                                saved[n] = params[n].detach().clone()
                                params[n].copy_(torch.from_numpy(np.ascontiguousarray(v)))
                            res = mod_b(t, *rest, **kwargs) if args else mod_b(**{**kwargs, "hidden_states": t})
                    finally:
                        with torch.no_grad():
                            for n, v in saved.items():
                                params[n].copy_(v)
                        state["quiet_b"] = False
                    return as_numpy(res)

                rerun.block = b_block[key]  # type: ignore[attr-defined]
                sink_b(key, "block", as_numpy(own), as_numpy(x_b), rerun)
            finally:
                wb.release(mod_b)
        return hook

    wa.install()
    for key in order:
        mod = a_mods[a_block[key]]
        # before A's own materialization: B's block loads in the background while A's block is read
        handles.append(mod.register_forward_pre_hook(block_pre(key), with_kwargs=True, prepend=True))
        handles.append(mod.register_forward_hook(block_post(key), with_kwargs=True))
    wa.install_release()
    threads = torch.get_num_threads()
    if threads > 1 and _few_rows(feeds):
        torch.set_num_threads(1)
    try:
        with torch.no_grad():
            out_a = ra.forward(ra.module, feeds)
    finally:
        torch.set_num_threads(threads)
        wa.remove()
        wa.close()
        wb.close()
    y = as_numpy(out_a.logits if hasattr(out_a, "logits") else out_a)
    if y is not None:
        sink_a("output", "output", y, None)

    # B's tail: its blocks (and its head units) replaced by what they produced; the rest runs for real
    patched = []
    for key in order:
        mod = b_mods[b_block[key]]
        mod.forward = (lambda *a, _o=state["b_out"].get(key), **k: _o)
        patched.append(mod)
    for name, out in state["head"].items():
        mod = b_mods[name]
        mod.forward = (lambda *a, _o=out, **k: _o)
        patched.append(mod)
    state["quiet_b"] = True  # block and head norms were compared already; only the tail's norms report now
    tail_norms = [name for name in rb.norm_ids
                  if not any(name == n or name.startswith(n + ".") for n in list(b_block.values()) + list(state["head"]))]
    tail_handles = [b_mods[n].register_forward_hook(norm_hook(sink_b, n, "tail")) for n in tail_norms]
    replayed = set(b_block.values()) | set(state["head"])
    wb.install(skip=replayed)
    wb.install_release(skip=replayed)
    try:
        with torch.no_grad():
            out_b = rb.forward(rb.module, feeds)
    finally:
        wb.remove()
        for mod in patched:
            del mod.forward
        for h in handles + tail_handles:
            h.remove()
        wb.reference = reference
        wa.keep, wa.kept = set(), {}
    y = as_numpy(out_b.logits if hasattr(out_b, "logits") else out_b)
    if y is not None:
        sink_b("output", "output", y, None)
