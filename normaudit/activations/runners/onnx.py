"""onnxruntime with every norm output and block output exposed as extra graph outputs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import NormauditError, reading
from ...formats.onnx.graph import contained_file
from ...extras import check
from ...model import NormModel
from ..base import InputHints, Sink, block_key


#: inputs a transformer export takes beside input_ids, as a tokenizer fills them for unpadded text
TOKEN_SIDE_INPUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "attention_mask": np.ones_like,
    "token_type_ids": np.zeros_like,
    "position_ids": lambda ids: np.broadcast_to(np.arange(ids.shape[-1]), ids.shape).copy(),
}


class OnnxRunner:
    """onnxruntime with every norm output and block output exposed as extra graph outputs."""

    deferred_local = True  # a block's local error needs a subgraph extraction: only at the first divergence
    replay: Any = None

    def __init__(self, path: Path, model: NormModel, optimized_output: bool = True) -> None:
        import onnx

        check("onnxruntime", f"{path}: running an ONNX model", extra="activations")

        from ...formats.onnx.graph import module_of

        self.path = path
        self.model = model
        self.extra: dict[str, str] = {}  # tensor -> key: outputs standing in for a norm (a conv a BN was folded into)
        self.notes: list[str] = []  # what the run assumed (inputs it filled in)
        with reading(path, "cannot load the ONNX model to run it"):
            self.proto = onnx.load(str(path), load_external_data=False)  # weights stay in their files
        self.norms = {n.output_name: n for n in model.norms if n.output_name}
        self.norm_inputs = {n.input_name for n in model.norms if n.input_name}
        self.compare_optimized = optimized_output
        self.hints = self._hints()
        graph = self.proto.graph
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
        self._nodes = {n.name: n for n in graph.node if n.name}
        self.label = "onnxruntime ORT_ENABLE_ALL on the graph with exposed outputs (fusions across them disabled)"

    def _options(self) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        return opts

    def _session(self, model: Any) -> Any:
        """An onnxruntime session for a (modified) graph.  Without external data the graph goes in as bytes; with
        it (models over 2 GB), the graph is written to a temporary folder beside hard links to its data files,
        so onnxruntime reads the weights from disk (never a >2 GB protobuf, never a copy of the weights)."""
        import onnxruntime as ort

        external = sorted({e.value for t in model.graph.initializer if t.data_location == 1
                           for e in t.external_data if e.key == "location"})
        if not external:
            return ort.InferenceSession(model.SerializeToString(), self._options(), providers=["CPUExecutionProvider"])
        import onnx

        with tempfile.TemporaryDirectory(prefix="normaudit-onnx-") as tmp:
            for location in external:
                src, _ = contained_file(self.path.parent, location, f"{self.path}: external data")
                dst = Path(tmp) / location
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)  # onnxruntime refuses symlinks leaving the model's folder
                except OSError:
                    raise NormauditError(f"{self.path}: cannot stage external data {location!r} for onnxruntime "
                                         "(a hard link into a temporary folder failed: another filesystem?)",
                                         hint="set TMPDIR to a folder on the model's filesystem") from None
            onnx.save(model, str(Path(tmp) / "model.onnx"))
            return ort.InferenceSession(str(Path(tmp) / "model.onnx"), self._options(),
                                        providers=["CPUExecutionProvider"])

    def feeds(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from onnx import helper

        init_names = {t.name for t in self.proto.graph.initializer}
        graph_inputs = [i for i in self.proto.graph.input if i.name not in init_names]
        feeds: dict[str, np.ndarray] = {}
        pool = dict(inputs)
        for gi in graph_inputs:
            dtype = helper.tensor_dtype_to_np_dtype(gi.type.tensor_type.elem_type)
            if gi.name in pool:
                value = pool.pop(gi.name)
            elif len(graph_inputs) == 1 and len(pool) == 1:
                value = pool.popitem()[1]
            elif gi.name in TOKEN_SIDE_INPUTS and "input_ids" in inputs:
                value = TOKEN_SIDE_INPUTS[gi.name](np.asarray(inputs["input_ids"]))  # what a tokenizer gives
                note = f"{self.path.name}: graph input {gi.name!r} not given: filled as for unpadded text"
                if note not in self.notes:
                    self.notes.append(note)
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
        exposed.CopyFrom(self.proto)
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
        sink("output", "output", values[self.proto.graph.output[0].name].astype(np.float32), None)
        del values
        if self.compare_optimized:
            import onnxruntime as ort

            plain = ort.InferenceSession(str(self.path), self._options(), providers=["CPUExecutionProvider"])
            out = plain.run([self.proto.graph.output[0].name], feeds)[0]
            sink("output.optimized", "output", out.astype(np.float32), None)

    def add_standin(self, conv: Any, key: str) -> bool:
        """Expose the output of the Conv/Gemm node ``conv.id`` (a BatchNorm was folded into it) as ``key``."""
        node = self._nodes.get(conv.id)
        if node is None or not node.output:
            return False
        self.extra[node.output[0]] = key
        return True

    def _hints(self) -> InputHints:
        from onnx import helper

        hints = InputHints(tokenizer_dirs=[self.path.parent])
        init = {t.name: t for t in self.proto.graph.initializer}
        for gi in self.proto.graph.input:
            if gi.name in init:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else None for d in gi.type.tensor_type.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(gi.type.tensor_type.elem_type)
            if dtype.kind in "iu" and len(dims) == 2:
                hints.seq_len = dims[1]
                hints.batch = dims[0]
                break
            if dtype.kind == "f" and all(d is not None for d in dims):
                hints.image_shape = tuple(int(d) for d in dims)
                break
        for node in self.proto.graph.node:
            if node.op_type == "Gather" and node.input and node.input[0] in init and init[node.input[0]].dims:
                hints.vocab = int(init[node.input[0]].dims[0])
                break
        return hints

    def _previous_block_output(self, key: str) -> str | None:
        n = int(key.split(".")[1])
        return next((t for t, k in self.blocks.items() if k == f"block.{n - 1}"), None)

    def subgraph_runner(self, input_name: str, output_name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """B's subgraph from one tensor to another (onnx.utils.Extractor), fed with other graph inputs as needed."""
        from onnx.utils import Extractor

        init_names = {t.name for t in self.proto.graph.initializer}
        graph_inputs = [i.name for i in self.proto.graph.input if i.name not in init_names]
        sub = Extractor(self.proto).extract_model([input_name] + graph_inputs, [output_name])
        sess = self._session(sub)
        names = [i.name for i in sess.get_inputs()]

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            return sess.run([output_name], {k: v for k, v in feeds.items() if k in names})[0]

        return run
