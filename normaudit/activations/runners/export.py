"""torch.export programs (.pt2) run node by node with torch.fx's Interpreter, capturing the norm nodes the
loader recorded and each block's last node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CorruptFile, brief
from ...extras import require
from ...model import NormModel
from ..base import InputHints, RunContext, Sink, as_numpy, block_key


def export_runner(path: Path, model: NormModel, ctx: RunContext) -> "ExportRunner":
    """Load the program for running (after the loader refused anything that would unpickle) and learn its inputs."""
    torch = require("torch", f"{path}: running a torch.export program", extra="activations")

    from ...formats.torch.pt2_archive import refuse_unsafe

    if not ctx.options.trust_pickle:
        refuse_unsafe(path)  # every program, every layout: nothing torch.export.load would unpickle
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        raise CorruptFile(f"{path}: cannot load torch.export program ({brief(exc)})") from None
    hints = InputHints(tokenizer_dirs=[path.parent])
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
            val = node.meta.get("val")
            if val is None:
                continue
            dims = [d if isinstance(d, int) else None for d in val.shape]
            if val.dtype.is_floating_point and None not in dims:
                hints.image_shape = tuple(dims)
            elif not val.dtype.is_floating_point and len(dims) == 2:
                hints.seq_len = dims[1]  # a static export fixes the sequence length
        if str(node.target) == "aten.embedding.default" and hints.vocab is None:
            val = getattr(node.args[0], "meta", {}).get("val")
            if val is not None and isinstance(val.shape[0], int):
                hints.vocab = int(val.shape[0])
    return ExportRunner(ep, model, hints)


class ExportRunner:
    """A .pt2 program run node by node (torch.fx Interpreter), capturing the recorded norm nodes."""

    deferred_local = False
    replay: Any = None

    def __init__(self, ep: Any, model: NormModel, hints: InputHints,
                 label: str = "torch.export program (fx Interpreter)") -> None:
        self.ep = ep
        self.model = model
        self.hints = hints
        self.label = label
        norms = model.norms
        self.gm = ep.module()
        self.norm_out = {n.output_name: n for n in norms if n.output_name}
        self.norm_in = {n.id: n.input_name for n in norms}
        # block outputs: the last node of each block whose value leaves the block
        block_of: dict[str, str] = {}
        for node in self.gm.graph.nodes:
            stack = node.meta.get("nn_module_stack") or {}
            paths = [str(p) for p, _ in stack.values()]
            key = next((block_key(p) for p in reversed(paths) if block_key(p)), None)
            if key:
                block_of[node.name] = key
        last: dict[str, str] = {}
        for node in self.gm.graph.nodes:
            key = block_of.get(node.name)
            if key and any(block_of.get(u.name) != key for u in node.users):
                last[key] = node.name
        self.block_out = {v: k for k, v in last.items()}

    def run(self, inputs: dict[str, np.ndarray], sink: Sink) -> None:
        import torch
        from torch.fx import Interpreter

        runner = self

        class Capture(Interpreter):
            def run_node(self, n: Any) -> Any:
                value = super().run_node(n)
                if n.name in runner.norm_out:
                    layer = runner.norm_out[n.name]
                    x = self.env.get(_node_named(self.module.graph, layer.input_name)) if layer.input_name else None
                    sink(layer.id, "norm", as_numpy(value), as_numpy(x) if x is not None else None)
                elif n.name in runner.block_out:
                    sink(runner.block_out[n.name], "block", as_numpy(value), None)
                return value

        args = [torch.from_numpy(np.asarray(v)) for v in inputs.values()]
        with torch.no_grad():
            out = Capture(self.gm).run(*args)
        sink("output", "output", as_numpy(out), None)

    def add_standin(self, conv: Any, key: str) -> bool:
        return False


def _node_named(graph: Any, name: str) -> Any:
    for node in graph.nodes:
        if node.name == name:
            return node
    return None
