"""Backends that run a model and hand every norm output and block output to a sink as soon as it exists.

A sink is ``sink(key, kind, output, norm_input)``: ``key`` is the norm id of that side's NormModel, or
``block.N``, or ``output``; ``norm_input`` is the tensor the norm read (for local-error replays).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import NormauditError, brief

Sink = Callable[..., None]  # sink(key, kind, output, input_or_None, rerun_or_None=None)
BLOCK_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")


def block_key(module_path: str) -> str | None:
    """``block.N`` for a module path inside the N-th transformer block (HF, ONNX scopes, fx stacks)."""
    hits = BLOCK_RE.findall(module_path or "")
    return f"block.{hits[-1]}" if hits else None


def _np(t: Any) -> np.ndarray | None:
    import torch

    if isinstance(t, (tuple, list)) and t:
        t = t[0]
    if hasattr(t, "last_hidden_state") and not isinstance(t, torch.Tensor):
        t = t.last_hidden_state
    if isinstance(t, torch.Tensor):
        return t.detach().to(torch.float32).cpu().numpy()
    return None


class ModuleRunner:
    """Any torch.nn.Module (HF model, GGUF replay, trusted pickle): forward hooks on norms and blocks."""

    def __init__(self, module: Any, norm_ids: list[str], forward: Callable[[Any, dict[str, np.ndarray]], Any],
                 label: str) -> None:
        self.module = module
        self.norm_ids = set(norm_ids)
        self.forward = forward
        self.label = label
        names = dict(module.named_modules())
        missing = [n for n in norm_ids if n not in names]
        if missing:
            raise NormauditError(f"cannot hook norm modules {missing[:3]}: not in the model",
                                 hint="the checkpoint and the model class disagree on module names")
        self.blocks = {name: f"block.{m.group(1)}" for name in names
                       if (m := re.search(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)$", name))}

    def run(self, inputs: dict[str, np.ndarray], sink: Sink) -> None:
        import torch

        handles = []
        seen_blocks: set[str] = set()
        rerunning: list[int] = []  # set while a block is re-run on the other model's input

        def norm_hook(name: str):
            def hook(_mod: Any, args: tuple, out: Any) -> None:
                if rerunning:
                    return
                x = _np(args[0]) if args else None
                y = _np(out)
                if y is not None:
                    sink(name, "norm", y, x)
            return hook

        def block_hook(key: str):
            def hook(mod: Any, args: tuple, kwargs: dict, out: Any) -> None:
                if rerunning or key in seen_blocks:
                    return
                y = _np(out)
                if y is None:
                    return
                seen_blocks.add(key)
                hidden = args[0] if args else kwargs.get("hidden_states")
                x = _np(hidden) if hidden is not None else None

                def rerun(x_in: np.ndarray, mod: Any = mod, args: tuple = args, kwargs: dict = kwargs) -> np.ndarray:
                    """This block of this model on another input (its own masks / position embeddings)."""
                    t = torch.from_numpy(np.ascontiguousarray(x_in)).to(hidden.dtype)
                    rerunning.append(1)
                    try:
                        with torch.no_grad():
                            if args:
                                res = mod(t, *args[1:], **kwargs)
                            else:
                                res = mod(**{**kwargs, "hidden_states": t})
                    finally:
                        rerunning.pop()
                    return _np(res)

                sink(key, "block", y, x, rerun)
            return hook

        for name, mod in self.module.named_modules():
            if name in self.norm_ids:
                handles.append(mod.register_forward_hook(norm_hook(name)))
            elif name in self.blocks:
                handles.append(mod.register_forward_hook(block_hook(self.blocks[name]), with_kwargs=True))
        try:
            with torch.no_grad():
                out = self.forward(self.module, inputs)
        finally:
            for h in handles:
                h.remove()
        y = _np(out.logits if hasattr(out, "logits") else out)
        if y is not None:
            sink("output", "output", y, None)


# -- Hugging Face ---------------------------------------------------------------------------------------

def load_hf_module(model_dir: Path, eps_override: float | None = None) -> Any:
    """A transformers model from a local directory (never the hub), eager attention, float32."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise NormauditError("activation diffs of Hugging Face models need transformers",
                             hint="pip install 'normaudit[hf]'") from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        if eps_override is not None:
            _set_config_eps(config, eps_override)
        archs = getattr(config, "architectures", None) or []
        cls = next((getattr(transformers, a) for a in archs if hasattr(transformers, a)), None)
        if cls is None:
            cls = transformers.AutoModel
        model = cls.from_pretrained(str(model_dir), config=config, local_files_only=True, dtype="float32",
                                    attn_implementation="eager")
    except NormauditError:
        raise
    except Exception as exc:
        raise NormauditError(f"{model_dir}: transformers cannot build this model ({brief(exc)})") from None
    return model.eval()


def _set_config_eps(config: Any, eps: float) -> None:
    from ..tables import HF_EPS_KEYS

    keys = {k for ks in HF_EPS_KEYS.values() for k in ks}
    for scope in (config, getattr(config, "text_config", None)):
        if scope is None:
            continue
        for k in keys:
            if isinstance(getattr(scope, k, None), float):
                setattr(scope, k, float(eps))


def hf_forward(module: Any, inputs: dict[str, np.ndarray]) -> Any:
    import torch

    kwargs = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
    if "input_ids" not in kwargs and len(kwargs) == 1:
        kwargs = {"input_ids": next(iter(kwargs.values()))}
    try:
        return module(**kwargs, use_cache=False)
    except TypeError:
        return module(**kwargs)


def module_forward(module: Any, inputs: dict[str, np.ndarray]) -> Any:
    import torch

    return module(*[torch.from_numpy(np.asarray(v)) for v in inputs.values()])


# -- torch.export ---------------------------------------------------------------------------------------

class ExportRunner:
    """A .pt2 program run node by node (torch.fx Interpreter), capturing the recorded norm nodes."""

    def __init__(self, ep: Any, norms: list[Any], label: str = "torch.export program (fx Interpreter)") -> None:
        self.ep = ep
        self.label = label
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
                    sink(layer.id, "norm", _np(value), _np(x) if x is not None else None)
                elif n.name in runner.block_out:
                    sink(runner.block_out[n.name], "block", _np(value), None)
                return value

        args = [torch.from_numpy(np.asarray(v)) for v in inputs.values()]
        with torch.no_grad():
            out = Capture(self.gm).run(*args)
        sink("output", "output", _np(out), None)


def _node_named(graph: Any, name: str) -> Any:
    for node in graph.nodes:
        if node.name == name:
            return node
    return None


# -- ONNX ----------------------------------------------------------------------------------------------

class OnnxRunner:
    """onnxruntime with every norm output and block output exposed as extra graph outputs."""

    def __init__(self, path: Path, norms: list[Any], optimized_output: bool = True) -> None:
        import onnx

        self.path = path
        self.extra: dict[str, str] = {}  # tensor -> key: outputs standing in for a norm (a conv a BN was folded into)
        self.model = onnx.load(str(path))
        self.norms = {n.output_name: n for n in norms if n.output_name}
        self.norm_inputs = {n.input_name for n in norms if n.input_name}
        self.compare_optimized = optimized_output
        from ..formats.onnx_graph import module_of

        graph = self.model.graph
        block_of: dict[str, str] = {}  # tensor -> block of the node producing it
        consumers: dict[str, list[str]] = {}  # tensor -> blocks of the nodes reading it
        for node in graph.node:
            key = block_key(module_of(node))
            if key:
                block_of.update({out: key for out in node.output})
            for inp in node.input:
                consumers.setdefault(inp, []).append(key or "")
        graph_outputs = {o.name for o in graph.output}
        last: dict[str, str] = {}
        for node in graph.node:
            for out in node.output:
                key = block_of.get(out)
                if key and (out in graph_outputs or any(c != key for c in consumers.get(out, []))):
                    last[key] = out
        self.blocks = {v: k for k, v in last.items()}
        self.label = "onnxruntime ORT_ENABLE_ALL on the graph with exposed outputs (fusions across them disabled)"

    def _session(self, model: Any) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def feeds(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from onnx import helper

        init_names = {t.name for t in self.model.graph.initializer}
        graph_inputs = [i for i in self.model.graph.input if i.name not in init_names]
        feeds: dict[str, np.ndarray] = {}
        pool = dict(inputs)
        for gi in graph_inputs:
            dtype = helper.tensor_dtype_to_np_dtype(gi.type.tensor_type.elem_type)
            if gi.name in pool:
                value = pool.pop(gi.name)
            elif len(graph_inputs) == 1 and len(pool) == 1:
                value = pool.popitem()[1]
            elif dtype.kind in "iu" and "input_ids" in pool:
                value = pool.pop("input_ids")
            else:
                raise NormauditError(f"{self.path}: no input given for graph input {gi.name!r}",
                                     hint="pass --input FILE.npz with arrays named like the graph inputs")
            dims = [d.dim_value if d.HasField("dim_value") else None for d in gi.type.tensor_type.shape.dim]
            if len(dims) == value.ndim and any(d is not None and d != s for d, s in zip(dims, value.shape)):
                raise NormauditError(f"{self.path}: graph input {gi.name!r} has the fixed shape {dims}, the input "
                                     f"is {list(value.shape)}", hint="pass inputs of the exported shape (--input)")
            feeds[gi.name] = np.asarray(value).astype(dtype)
        return feeds

    def run(self, inputs: dict[str, np.ndarray], sink: Sink) -> None:
        import onnx

        exposed = onnx.ModelProto()
        exposed.CopyFrom(self.model)
        have = {o.name for o in exposed.graph.output}
        have |= {i.name for i in exposed.graph.input} | {t.name for t in exposed.graph.initializer}
        names = [n for n in list(self.norms) + sorted(self.norm_inputs) + list(self.blocks) + list(self.extra)
                 if n not in have]
        for name in dict.fromkeys(names):
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
        sess = self._session(exposed)
        out_names = [o.name for o in sess.get_outputs()]
        feeds = self.feeds(inputs)
        values = dict(zip(out_names, sess.run(out_names, feeds)))
        for name in out_names:
            if name in self.norms:
                layer = self.norms[name]
                x = values.get(layer.input_name, feeds.get(layer.input_name))
                sink(layer.id, "norm", values[name].astype(np.float32), None if x is None else x.astype(np.float32))
            if name in self.extra:
                sink(self.extra[name], "norm", values[name].astype(np.float32), None)
            if name in self.blocks:
                key = self.blocks[name]
                prev = self._previous_block_output(key)
                x = values.get(prev) if prev else None
                rerun = (lambda x_in, prev=prev, name=name: self.subgraph_runner(prev, name)(
                    {**feeds, prev: x_in.astype(np.float32)})) if prev else None
                sink(key, "block", values[name].astype(np.float32), None if x is None else x.astype(np.float32),
                     rerun)
        sink("output", "output", values[self.model.graph.output[0].name].astype(np.float32), None)
        del values
        if self.compare_optimized:
            plain = self._session(self.model)
            out = plain.run([self.model.graph.output[0].name], feeds)[0]
            sink("output.optimized", "output", out.astype(np.float32), None)

    def _previous_block_output(self, key: str) -> str | None:
        n = int(key.split(".")[1])
        return next((t for t, k in self.blocks.items() if k == f"block.{n - 1}"), None)

    def subgraph_runner(self, input_name: str, output_name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """B's subgraph from one tensor to another (onnx.utils.Extractor), fed with other graph inputs as needed."""
        from onnx.utils import Extractor

        init_names = {t.name for t in self.model.graph.initializer}
        graph_inputs = [i.name for i in self.model.graph.input if i.name not in init_names]
        sub = Extractor(self.model).extract_model([input_name] + graph_inputs, [output_name])
        sess = self._session(sub)
        names = [i.name for i in sess.get_inputs()]

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            return sess.run([output_name], {k: v for k, v in feeds.items() if k in names})[0]

        return run
