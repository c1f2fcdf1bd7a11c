"""Layer-by-layer activation diffs: run A and B on the same input, line up norm and block outputs, and say
where the drift starts and which layer adds it.

    from normaudit.activations import diff_activations
    report = diff_activations("hf/llama", "llama-q8_0.gguf")
    report.first_divergence, report.points[...]

Memory: A's captured activations are kept (one model's worth); B's are compared as they are produced
and dropped at once, so both models' activations are never held together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import kernels
from ..config import Thresholds
from ..errors import NormauditError, brief
from ..formats import detect, load
from ..match import align
from ..model import NormKind, NormModel
from . import inputs as inputs_mod
from .runners import ExportRunner, ModuleRunner, OnnxRunner, hf_forward, load_hf_module, module_forward


# -- metrics ---------------------------------------------------------------------------------------------

metrics = kernels.diff_metrics  # max abs, mean abs, rel L2, cosine, SQNR (dB) of B against A


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return metrics(a, b)["rel_l2"]


@dataclass
class PointDiff:
    a: str
    b: str
    kind: str  # norm | block | output
    metrics: dict[str, float]
    local_rel_l2: float | None = None
    shape: tuple[int, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "kind": self.kind, **self.metrics, "local_rel_l2": self.local_rel_l2,
                "shape": list(self.shape), **({"note": self.note} if self.note else {})}


@dataclass
class ActivationReport:
    inputs: dict[str, Any]
    points: list[PointDiff]
    first_divergence: PointDiff | None
    backends: dict[str, str]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "backends": self.backends, "thresholds": self.thresholds,
                "points": [p.to_dict() for p in self.points],
                "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
                "sensitivity": self.sensitivity, "notes": self.notes, "passed": self.passed}


# -- sides ---------------------------------------------------------------------------------------------------

@dataclass
class _Side:
    path: Path
    model: NormModel  # norm records for alignment and local replays
    runner: Any
    label: str
    vocab: int | None = None
    seq_len: int | None = None  # fixed by an exported graph
    image_shape: tuple[int, ...] | None = None
    tokenizer_dirs: list[Path] = field(default_factory=list)
    replay: Any = None  # GgufTensors for GGUF sides


def _hf_vocab(model_dir: Path) -> int | None:
    import json

    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    v = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    return int(v) if v else None


def _side(path: Path, hf_dir: Path | None, trust_pickle: bool) -> _Side:
    fmt = detect(path)
    if fmt == "hf":
        model = load(path)
        module = load_hf_module(path)
        runner = ModuleRunner(module, [n.id for n in model.norms], hf_forward,
                              f"transformers {type(module).__name__} (eager attention, float32)")
        return _Side(path, model, runner, runner.label, vocab=_hf_vocab(path), tokenizer_dirs=[path])
    if fmt == "gguf":
        if hf_dir is None:
            raise NormauditError(f"{path}: a GGUF is replayed through its source architecture",
                                 hint="compare it against its HF directory, or pass --model HF_DIR")
        from .replay import replay_model

        gmodel = load(path)  # header checks and the GGUF's norm records, before the replay reads it
        module, gt = replay_model(hf_dir, path)
        source = load(hf_dir)
        # norm records for local replays: the GGUF's own (eps, stored weights) under the HF ids
        al = align(source, gmodel)
        by_hf = {p.a.id: p.b for p in al.pairs}
        for n in source.norms:
            if n.id in by_hf:
                g = by_hf[n.id]
                n.eps, n.eps_source, n.weight, n.bias, n.convention = g.eps, g.eps_source, g.weight, g.bias, g.convention
        runner = ModuleRunner(module, [n.id for n in source.norms], hf_forward,
                              f"GGUF replay through transformers {type(module).__name__} ({gt.arch}, "
                              + "; ".join(gt.notes or ["no transforms to undo"]) + ")")
        side = _Side(path, source, runner, runner.label, vocab=_hf_vocab(hf_dir), tokenizer_dirs=[hf_dir])
        side.replay = gt
        return side
    if fmt == "onnx":
        model = load(path, allow_empty=True)
        runner = OnnxRunner(path, model.norms)
        seq, image = _onnx_input_shape(runner)
        return _Side(path, model, runner, runner.label, seq_len=seq, image_shape=image,
                     vocab=_onnx_vocab(runner), tokenizer_dirs=[path.parent])
    if fmt == "pt2":
        import torch

        model = load(path, allow_empty=True, trust_pickle=trust_pickle)  # refuses pickled payloads first
        ep = torch.export.load(str(path))
        shape, seq = None, None
        for node in ep.graph.nodes:
            if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
                val = node.meta.get("val")
                if val is None:
                    continue
                dims = [d if isinstance(d, int) else None for d in val.shape]
                if val.dtype.is_floating_point and None not in dims:
                    shape = tuple(dims)
                elif not val.dtype.is_floating_point and len(dims) == 2:
                    seq = dims[1]  # a static export fixes the sequence length
        runner = ExportRunner(ep, model.norms)
        return _Side(path, model, runner, runner.label, image_shape=shape, seq_len=seq,
                     vocab=_export_vocab(ep), tokenizer_dirs=[path.parent])
    if fmt in ("pickle", "state_dict") and trust_pickle:
        import torch

        model = load(path, trust_pickle=True)
        if model.container != "module":
            raise NormauditError(f"{path}: a state_dict has no code to run", hint="use the HF dir or the .pt2")
        module = torch.load(str(path), map_location="cpu", weights_only=False).eval()
        runner = ModuleRunner(module, [n.id for n in model.norms], module_forward, f"nn.Module {type(module).__name__}")
        return _Side(path, model, runner, runner.label)
    if fmt == "torchscript":
        raise NormauditError(f"{path}: activation capture is not supported for TorchScript archives",
                             hint="diff the .pt2 export or the source module instead (static compare works)")
    raise NormauditError(f"{path}: cannot run a {fmt} file for activations",
                         hint="use an HF directory, a .pt2, an ONNX file, a GGUF (replayed) or a trusted module")


def _export_vocab(ep: Any) -> int | None:
    for node in ep.graph.nodes:
        if str(node.target) == "aten.embedding.default":
            w = node.args[0]
            val = getattr(w, "meta", {}).get("val")
            if val is not None and isinstance(val.shape[0], int):
                return int(val.shape[0])
    return None


def _onnx_input_shape(runner: OnnxRunner) -> tuple[int | None, tuple[int, ...] | None]:
    from onnx import helper

    init = {t.name for t in runner.model.graph.initializer}
    for gi in runner.model.graph.input:
        if gi.name in init:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in gi.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(gi.type.tensor_type.elem_type)
        if dtype.kind in "iu" and len(dims) == 2:
            return dims[1], None
        if dtype.kind == "f" and all(d is not None for d in dims):
            return None, tuple(int(d) for d in dims)
    return None, None


def _onnx_vocab(runner: OnnxRunner) -> int | None:
    from onnx import numpy_helper  # noqa: F401  (dims only)

    inits = {t.name: t for t in runner.model.graph.initializer}
    for node in runner.model.graph.node:
        if node.op_type == "Gather" and node.input and node.input[0] in inits:
            return int(inits[node.input[0]].dims[0])
    return None


def _inputs(sides: list[_Side], npz: str | None, text: str | None) -> tuple[dict[str, np.ndarray], str]:
    if npz:
        return inputs_mod.load_npz(npz), f"npz:{npz}"
    if text is not None:
        dirs = [d for s in sides for d in s.tokenizer_dirs]
        return inputs_mod.tokenize(text, dirs), "text"
    image = next((s.image_shape for s in sides if s.image_shape), None)
    vocabs = [s.vocab for s in sides if s.vocab]
    if image is not None and not vocabs:
        return inputs_mod.default_image(image), "default seeded normal image tensor"
    if not vocabs:
        raise NormauditError("cannot tell the vocabulary size for default token inputs",
                             hint="pass --input FILE.npz or --text")
    seqs = [s.seq_len for s in sides if s.seq_len]
    seq = seqs[0] if seqs else inputs_mod.DEFAULT_SEQ_LEN
    return inputs_mod.default_tokens(min(vocabs), seq), (
        "default seeded tokens" + (f" (length {seq}, fixed by the exported graph)" if seqs else ""))


# -- driver --------------------------------------------------------------------------------------------------

def diff_activations(a: str | Path, b: str | Path, *, input_npz: str | None = None, text: str | None = None,
                     model_dir: str | Path | None = None, thresholds: Thresholds | None = None,
                     sensitivity: bool = False, trust_pickle: bool = False) -> ActivationReport:
    """Run A and B on the same input and diff every aligned norm output and block output."""
    th = thresholds or Thresholds()
    pa, pb = Path(a), Path(b)
    hf_dir = Path(model_dir) if model_dir else None
    if hf_dir is None:
        for p in (pa, pb):
            if p.is_dir():
                hf_dir = p
    side_a = _side(pa, hf_dir, trust_pickle)
    side_b = _side(pb, hf_dir, trust_pickle)
    feeds, source = _inputs([side_a, side_b], input_npz, text)

    al = align(side_a.model, side_b.model)
    b_to_a = {p.b.id: p.a.id for p in al.pairs}
    b_layers = {p.a.id: p.b for p in al.pairs}
    _fold_standins(side_a, side_b, al.missing, b_to_a)

    stored: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    order: list[str] = []

    def sink_a(key: str, kind: str, out: np.ndarray, x: np.ndarray | None, _rerun: Any = None) -> None:
        if key not in stored:
            order.append(key)
            stored[key] = (out, x)

    _run(side_a, feeds, sink_a)
    index = {k: i for i, k in enumerate(order)}
    points: list[tuple[int, PointDiff]] = []
    deferred: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
    lazy_blocks = isinstance(side_b.runner, OnnxRunner)

    def sink_b(key: str, kind: str, out: np.ndarray, _x: np.ndarray | None, rerun: Any = None) -> None:
        a_key = b_to_a.get(key, key) if kind == "norm" else key
        if key == "output.optimized":
            a_key = "output"
        # the final output is kept for the optimized-graph comparison; everything else is dropped at once
        ref = stored.get(a_key) if a_key == "output" else stored.pop(a_key, None)
        if ref is None:
            return
        a_out, a_in = ref
        note = ""
        if a_out.shape != out.shape:
            if a_out.size == out.size:
                out = out.reshape(a_out.shape)
                note = "reshaped B to A's layout"
            else:
                points.append((index.get(a_key, 10**9), PointDiff(a_key, key, kind, {"rel_l2": float("nan")},
                                                                  note=f"shape {a_out.shape} vs {out.shape}")))
                return
        local = None
        try:
            if kind == "norm" and a_in is not None and a_key in b_layers:
                # B's norm (its eps, weights, convention) on A's input: the error this layer adds by itself
                local = _rel_l2(a_out, kernels.apply_layer(b_layers[a_key], a_in))
            elif kind == "block" and a_in is not None and rerun is not None:
                if lazy_blocks:  # ONNX: a subgraph extraction each; done for the first divergence only
                    deferred[a_key] = (rerun, a_in, a_out)
                else:
                    local = _rel_l2(a_out, rerun(a_in).reshape(a_out.shape))
        except (ValueError, TypeError, RuntimeError):
            local = None
        label = "output (fully optimized graph)" if key == "output.optimized" else key
        points.append((index.get(a_key, 10**9) + (0.5 if key == "output.optimized" else 0),
                       PointDiff(a_key, label, kind, metrics(a_out, out), local, tuple(out.shape), note)))

    _run(side_b, feeds, sink_b)
    stored.clear()
    ordered = [p for _, p in sorted(points, key=lambda t: t[0])]
    first = next((p for p in ordered if _diverges(p, th)), None)
    # ONNX blocks are re-run through an extracted subgraph: only where it matters, at the first divergence
    if first is not None and first.kind == "block" and first.a in deferred:
        rerun, a_in, a_out = deferred[first.a]
        try:
            first.local_rel_l2 = _rel_l2(a_out, rerun(a_in).reshape(a_out.shape))
        except Exception as exc:  # onnxruntime / extractor failures must not sink the report
            first.note = f"local error not computed ({type(exc).__name__})"
    deferred.clear()
    report = ActivationReport(
        inputs=inputs_mod.describe(feeds, source), points=ordered, first_divergence=first,
        backends={"a": side_a.label, "b": side_b.label},
        thresholds={"rel_l2": th.activation_rel_l2, "cosine": th.activation_cosine},
    )
    for s in (side_a, side_b):
        if s.replay is not None and s.replay.unmapped_gguf:
            report.notes.append(f"{s.path.name}: GGUF tensors not used by the replay: {s.replay.unmapped_gguf[:5]}")
    if sensitivity:
        report.sensitivity = _sensitivity(side_a, side_b, feeds)
    return report


def _run(side: _Side, feeds: dict[str, np.ndarray], sink: Any) -> None:
    """Run one side; a backend failure (shape guard, unsupported op, ...) is one line, not a traceback."""
    try:
        side.runner.run(feeds, sink)
    except NormauditError:
        raise
    except Exception as exc:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
        raise NormauditError(f"{side.path}: running the model failed on inputs {shapes} ({brief(exc)})",
                             hint="pass inputs the model accepts with --input FILE.npz") from None


def _fold_standins(side_a: _Side, side_b: _Side, missing: list[Any], b_to_a: dict[str, str]) -> None:
    """A BatchNorm of A folded into a conv of B: B's conv output stands in for the BN's output.

    The conv is found the way `compare` finds fold targets (checks.fold_target)."""
    if not isinstance(side_b.runner, OnnxRunner):
        return
    from ..checks import fold_target

    nodes = {n.name: n for n in side_b.runner.model.graph.node}
    used: set[str] = set()
    for bn in missing:
        if bn.kind is not NormKind.BATCH_NORM:
            continue
        _, conv_b, _ = fold_target(bn, side_a.model, side_b.model, used)
        if conv_b is not None and conv_b.id in nodes:
            used.add(conv_b.id)
            side_b.runner.extra[nodes[conv_b.id].output[0]] = f"fold:{conv_b.id}"
            b_to_a[f"fold:{conv_b.id}"] = bn.id


def _diverges(p: PointDiff, th: Thresholds) -> bool:
    m = p.metrics
    if m.get("non_finite") or not np.isfinite(m.get("rel_l2", 0.0)):
        return True
    return m["rel_l2"] > th.activation_rel_l2 or m.get("cosine", 1.0) < th.activation_cosine


def _sensitivity(side_a: _Side, side_b: _Side, feeds: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Put one quantized GGUF tensor at a time into the float model; rank by final-output drift."""
    import torch

    replay_side = side_b if side_b.replay is not None else side_a if side_a.replay is not None else None
    float_side = side_a if replay_side is side_b else side_b
    if replay_side is None or not isinstance(float_side.runner, ModuleRunner):
        raise NormauditError("--sensitivity needs a GGUF side and its HF source (the float model)",
                             hint="normaudit compare HF_DIR model.gguf --activations --sensitivity")
    module = float_side.runner.module
    ref = _final(module, feeds)
    state = module.state_dict()
    out = []
    with torch.no_grad():
        for hf_name, (gname, getter, qtype) in replay_side.replay.mapping.items():
            if qtype in ("F32", "F64") or hf_name not in state:
                continue
            saved = state[hf_name].clone()
            state[hf_name].copy_(torch.from_numpy(getter()))
            y = _final(module, feeds)
            state[hf_name].copy_(saved)
            m = metrics(ref, y)
            out.append({"tensor": gname, "source": hf_name, "dtype": qtype, "output_rel_l2": m["rel_l2"],
                        "output_cosine": m["cosine"]})
    out.sort(key=lambda r: -r["output_rel_l2"])
    return out


def _final(module: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = hf_forward(module, feeds)
    t = out.logits if hasattr(out, "logits") else out[0] if isinstance(out, (tuple, list)) else out
    if hasattr(t, "last_hidden_state"):
        t = t.last_hidden_state
    return t.detach().float().numpy()


__all__ = ["diff_activations", "ActivationReport", "PointDiff", "metrics"]
