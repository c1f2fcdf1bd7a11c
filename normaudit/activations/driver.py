"""Layer-by-layer activation diffs: run A and B on the same input, line up norm and block outputs, and say
where the drift starts and which layer adds it.

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
from ..formats.base import LoadOptions
from ..formats.registry import get as get_format, load
from ..formats.torch.hf_cache import snapshot_dir
from ..match import align
from ..model import NormKind, NormModel
from ..progress import Progress, step
from . import backends, embedding, inputs as inputs_mod, lockstep, verdict
from .base import RunContext, Runner


def metrics(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """max abs, mean abs, rel L2, cosine, SQNR (dB) of B against A (:class:`kernels.DiffMetrics`)."""
    return kernels.diff_metrics(ref, other)


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return kernels.DiffMetrics.from_arrays(a, b).rel_l2


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
    first_divergence: PointDiff | None  # first point above the drift thresholds (informational)
    backends: dict[str, str]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    anomalies: list[dict[str, Any]] = field(default_factory=list)  # what quantization cannot explain: failures
    weights: list[dict[str, Any]] | None = None  # each quantized tensor's error vs its source (GGUF replays)
    output: dict[str, Any] | None = None  # next-token KLD / top-1 agreement (language models)
    verdict: str = ""
    feeds: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # the inputs used (--save-inputs)
    embedding: dict[str, Any] | None = None  # embedding models: output-vector norms on both sides, pooled cosine
    # filled by the llama.cpp backend (activations.backends); absent for the replay backend
    attribution: dict[str, Any] = field(default_factory=dict)  # --backend both: per point and output, both legs
    tokenization: dict[str, Any] | None = None  # GGUF vocabulary vs HF tokenizer (checks: tokenizer_*)

    @property
    def passed(self) -> bool:
        return not self.anomalies

    def to_dict(self) -> dict[str, Any]:
        doc = {"inputs": self.inputs, "backends": self.backends, "thresholds": self.thresholds,
               "points": [p.to_dict() for p in self.points],
               "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
               "anomalies": self.anomalies, "verdict": self.verdict, "output": self.output,
               "weights": self.weights, "sensitivity": self.sensitivity, "notes": self.notes,
               "passed": self.passed, **({"embedding": self.embedding} if self.embedding is not None else {})}
        doc.update(self._runtime_dict())
        return doc

    def _runtime_dict(self) -> dict[str, Any]:
        """The llama.cpp backend's additions (only when it ran)."""
        out: dict[str, Any] = {}
        if self.attribution:
            out["attribution"] = self.attribution
        if self.tokenization is not None:
            out["tokenization"] = self.tokenization
        return out


# -- sides ---------------------------------------------------------------------------------------------------

def build_runner(model: NormModel, ctx: RunContext) -> Runner:
    """The activation backend of a loaded model, from its format."""
    return get_format(model.format_name).runner(Path(model.path), model, ctx)


def _inputs(runners: list[Runner], npz: str | None, text: str | None) -> tuple[dict[str, np.ndarray], str]:
    if npz:
        return inputs_mod.load_inputs(npz)
    if text is not None:
        dirs = [d for r in runners for d in r.hints.tokenizer_dirs]
        return inputs_mod.tokenize(text, dirs), "text"
    image = next((r.hints.image_shape for r in runners if r.hints.image_shape), None)
    vocabs = [r.hints.vocab for r in runners if r.hints.vocab]
    if image is not None and not vocabs:
        return inputs_mod.default_image(image), "default seeded normal image tensor"
    if not vocabs:
        raise NormauditError("cannot tell the vocabulary size for default token inputs",
                             hint="pass --input FILE.npz or --text")
    seqs = [r.hints.seq_len for r in runners if r.hints.seq_len]
    seq = seqs[0] if seqs else inputs_mod.DEFAULT_SEQ_LEN
    # embedding models: a few sequences, so the output-vector norms have a distribution (unless a graph fixes it)
    batch = embedding.DEFAULT_BATCH if any(r.model.embedding is not None for r in runners) and \
        not any(r.hints.batch for r in runners) else 1
    return inputs_mod.default_tokens(min(vocabs), seq, batch=batch), (
        "default seeded tokens" + (f" (length {seq}, fixed by the exported graph)" if seqs else "")
        + (f" ({batch} sequences)" if batch > 1 else ""))


def _as_model(x: str | Path | NormModel, options: LoadOptions) -> NormModel:
    if isinstance(x, NormModel):
        return x
    return load(x, trust_pickle=options.trust_pickle, allow_empty=True)


# -- driver --------------------------------------------------------------------------------------------------

def diff_activations(a: str | Path | NormModel, b: str | Path | NormModel, *, input_npz: str | None = None,
                     text: str | None = None, model_dir: str | Path | None = None,
                     thresholds: Thresholds | None = None, sensitivity: bool = False,
                     trust_pickle: bool = False, progress: Progress | None = None, backend: str = "replay",
                     backend_options: dict[str, Any] | None = None) -> ActivationReport:
    """Run A and B on the same input and diff every aligned norm output and block output.

    ``a`` / ``b`` are loaded models (each loaded once by the caller) or paths; ``model_dir`` is the HF
    directory a GGUF is replayed through when neither side is one; ``input_npz`` an ``.npz`` or a report's
    JSON with recorded ``inputs``. Model builds, runs and the sensitivity scan report to ``progress``.
    ``backend`` runs a GGUF side by replay (default), by llama.cpp itself, or ``both`` (three-way
    attribution): see :mod:`.backends`."""
    th = thresholds or Thresholds()
    options = LoadOptions(trust_pickle=trust_pickle)
    ma, mb = _as_model(a, options), _as_model(b, options)
    source_dir, source_model = (snapshot_dir(Path(model_dir)), None) if model_dir else (None, None)
    if source_dir is None:
        for m in (ma, mb):
            if m.format_name == "hf":
                source_dir, source_model = Path(m.path), m
    ctx = RunContext(options, source_dir, source_model, progress=progress,
                     backend_options=dict(backend_options or {}))

    def build(m: NormModel, c: RunContext) -> Runner:
        with step(progress, f"preparing {'A' if m is ma else 'B'} ({Path(m.path).name})"):
            return build_runner(m, c)

    runner_a, runner_b = backends.build_runners(ma, mb, ctx, backend, build)
    feeds, source = _inputs([runner_a, runner_b], input_npz, text)

    al = align(runner_a.model, runner_b.model)
    b_to_a = {p.b.id: p.a.id for p in al.pairs}
    b_layers = {p.a.id: p.b for p in al.pairs}
    _fold_standins(runner_a.model, runner_b, al.missing, b_to_a)
    emb = embedding.Tracker(embedding.contract(ma), embedding.contract(mb), feeds) \
        if ma.embedding is not None or mb.embedding is not None else None

    stored: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    order: list[str] = []

    def sink_a(key: str, kind: str, out: np.ndarray, x: np.ndarray | None, _rerun: Any = None) -> None:
        if key not in stored:
            order.append(key)
            stored[key] = (out, x)

    points: list[PointDiff] = []
    deferred: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
    vocabs = {r.hints.vocab for r in (runner_a, runner_b) if r.hints.vocab}
    output_metrics: dict[str, Any] = {}
    ranking: list[dict[str, Any]] = []

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
        if emb is not None and a_key == "output":  # embedding models: pooled / normalized as each side deploys it
            a_out, out, note = emb.output(a_out, out, record=key == "output")
        if a_out.shape != out.shape:
            if a_out.size == out.size:
                out = out.reshape(a_out.shape)
                note = "reshaped B to A's layout"
            else:
                points.append(PointDiff(a_key, key, kind, {"rel_l2": float("nan")},
                                        note=f"shape {a_out.shape} vs {out.shape}"))
                return
        if key == "output" and out.ndim >= 2 and out.shape[-1] in vocabs:
            output_metrics.update(kernels.next_token_metrics(a_out, out))
        if sensitivity and kind == "block" and a_in is not None and rerun is not None and runner_b.replay is not None:
            ranking.extend(_block_sensitivity(runner_b, rerun, a_in, a_out, a_key))
        local = None
        try:
            if kind == "norm" and a_in is not None and a_key in b_layers:
                # B's norm (its eps, weights, convention) on A's input: the error this layer adds by itself
                local = _rel_l2(a_out, kernels.apply_layer(b_layers[a_key], a_in))
            elif kind == "block" and a_in is not None and rerun is not None:
                if runner_b.deferred_local:  # e.g. a subgraph extraction each: done for the first divergence only
                    deferred[a_key] = (rerun, a_in, a_out)
                else:
                    local = _rel_l2(a_out, rerun(a_in).reshape(a_out.shape))
        except (ValueError, TypeError, RuntimeError):
            local = None
        label = "output (fully optimized graph)" if key == "output.optimized" else key
        points.append(PointDiff(a_key, label, kind, metrics(a_out, out), local, tuple(out.shape), note))

    if lockstep.can_lockstep(runner_a, runner_b):  # one block of each model in memory, each weight read once
        with step(progress, "running A and B block by block", len(runner_a.blocks) or None, "blocks") as advance:
            _run(lambda: lockstep.run_lockstep(runner_a, runner_b, feeds, sink_a, sink_b,
                                               progress=lambda _key: advance(1)), ma.path, feeds)
    else:
        with step(progress, "running A", None, "points") as advance:
            _run(lambda: runner_a.run(feeds, lambda *a, **k: (sink_a(*a, **k), advance(1))), ma.path, feeds)
        with step(progress, "running B", len(order) or None, "points") as advance:
            _run(lambda: runner_b.run(feeds, lambda *a, **k: (sink_b(*a, **k), advance(1))), mb.path, feeds)
    stored.clear()
    index = {k: i for i, k in enumerate(order)}
    ordered = sorted(points, key=lambda p: index.get(p.a, 10**9) + (0.5 if "optimized" in p.b else 0))
    first = next((p for p in ordered if _diverges(p, th)), None)
    # expensive local re-runs only where it matters, at the first divergence
    if first is not None and first.kind == "block" and first.a in deferred:
        rerun, a_in, a_out = deferred[first.a]
        try:
            first.local_rel_l2 = _rel_l2(a_out, rerun(a_in).reshape(a_out.shape))
        except Exception as exc:  # a backend failure here must not sink the report; said in the point's note
            first.note = f"local error not computed ({type(exc).__name__})"
    deferred.clear()
    report = ActivationReport(
        inputs=inputs_mod.describe(feeds, source), points=ordered, first_divergence=first,
        backends={"a": runner_a.label, "b": runner_b.label},
        thresholds={"rel_l2": th.activation_rel_l2, "cosine": th.activation_cosine,
                    "norm_local": th.activation_norm_local, "block_factor": th.activation_block_factor,
                    "block_floor": th.activation_block_floor},
        output=output_metrics or None, feeds=feeds, embedding=emb.result if emb is not None else None,
    )
    if report.embedding is not None and "other lengths" in report.embedding["verdict"]:
        report.notes.append(f"embedding output: {report.embedding['verdict']}; a drift at the output is that length "
                            "difference, not the model (see embedding_normalization_missing)")
    for m, r in ((ma, runner_a), (mb, runner_b)):
        if r.replay is not None and r.replay.unmapped_gguf:
            report.notes.append(f"{Path(m.path).name}: GGUF tensors not used by the replay: {r.replay.unmapped_gguf[:5]}")
        report.notes.extend(getattr(r, "notes", []))
    replayed = runner_b if runner_b.replay is not None else runner_a if runner_a.replay is not None else None
    file_type = None
    if replayed is not None and getattr(replayed, "weights", None) is not None:
        gguf_names = {hf: g for hf, (g, _, _) in replayed.replay.mapping.items()}
        report.weights = verdict.weight_table(replayed.weights.stats, gguf_names)
        file_type = _file_type(mb if replayed is runner_b else ma)
    b_dtypes = {a_id: layer.dtype for a_id, layer in b_layers.items()}
    report.anomalies = verdict.judge(ordered, report.weights, first, th, b_dtypes)
    if report.embedding is not None and "L2-normalized" in report.embedding["verdict"]:
        # same directions, and one side normalizes: the drift at the output is that length difference
        outputs = {p.a for p in ordered if p.kind == "output"}
        for an in report.anomalies:
            if an["kind"] == "drift" and an["point"] in outputs:
                an["kind"] = "length"
                an["message"] = (f"the output differs in length only ({report.embedding['verdict']}): rel L2 "
                                 f"{first.metrics['rel_l2']:.3g} at {an['point']}")
    report.verdict = verdict.summary(report.weights, report.output, ordered, report.anomalies, file_type)
    if sensitivity:
        if replayed is not runner_b:
            raise NormauditError("--sensitivity needs B to be a GGUF replayed through its HF source",
                                 hint="normaudit compare HF_DIR model.gguf --activations --sensitivity")
        ranking += [{"tensor": w["tensor"], "source": w["source"], "dtype": w["dtype"], "scope": "weight",
                     "output_rel_l2": w["rel_l2"], "output_cosine": None}
                    for w in report.weights or [] if w["block"] is None and w["dtype"] not in verdict.EXACT]
        report.sensitivity = sorted(ranking, key=lambda r: -r["output_rel_l2"])
    backends.finish(report, runner_a, runner_b, th, text)
    return report


def _run(fn: Any, path: str, feeds: dict[str, np.ndarray]) -> None:
    """Run a side; a backend failure (shape guard, unsupported op, ...) is one line, not a traceback."""
    try:
        fn()
    except NormauditError:
        raise
    except Exception as exc:  # the backend (torch, onnxruntime) rejected these inputs or this model
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
        raise NormauditError(f"{path}: running the model failed on inputs {shapes} ({brief(exc)})",
                             hint="pass inputs the model accepts with --input FILE.npz") from None


def _fold_standins(model_a: NormModel, runner_b: Runner, missing: list[Any], b_to_a: dict[str, str]) -> None:
    """A BatchNorm of A folded into a conv of B: B's conv output stands in for the BN's output.

    The conv is found the way `compare` finds fold targets (checks.fold_target)."""
    from ..checks import fold_target

    used: set[str] = set()
    for bn in missing:
        if bn.kind is not NormKind.BATCH_NORM:
            continue
        _, conv_b, _ = fold_target(bn, model_a, runner_b.model, used)
        if conv_b is not None and runner_b.add_standin(conv_b, f"fold:{conv_b.id}"):
            used.add(conv_b.id)
            b_to_a[f"fold:{conv_b.id}"] = bn.id


def _diverges(p: PointDiff, th: Thresholds) -> bool:
    m = p.metrics
    if m.get("non_finite") or not np.isfinite(m.get("rel_l2", 0.0)):
        return True
    return m["rel_l2"] > th.activation_rel_l2 or m.get("cosine", 1.0) < th.activation_cosine


def _file_type(model: NormModel) -> str | None:
    """llama.cpp's name of a GGUF's file type (Q4_K_M, Q8_0, ...) from general.file_type."""
    ft = model.metadata.get("file_type") if isinstance(model.metadata, dict) else None
    if ft is None:
        return None
    try:
        import gguf

        return gguf.LlamaFileType(int(ft)).name.replace("MOSTLY_", "").replace("ALL_", "")
    except (ValueError, ImportError):
        return None


def _block_sensitivity(runner: Any, rerun: Any, a_in: np.ndarray, a_out: np.ndarray, a_key: str
                       ) -> list[dict[str, Any]]:
    """One quantized tensor at a time in B's block (the block's other tensors at their source values), on A's
    input: the block-output error each tensor causes alone.  One block forward per tensor, in the same pass."""
    block = getattr(rerun, "block", None)
    weights = getattr(runner, "weights", None)
    if block is None or weights is None or weights.reference is None:
        return []
    quantized = {hf[len(block) + 1:]: (g, q) for hf, (g, _, q) in runner.replay.mapping.items()
                 if hf.startswith(block + ".") and q not in verdict.EXACT and hf in weights.reference}
    sources = {rel: weights.reference[f"{block}.{rel}"]() for rel in quantized}
    out = []
    for rel, (gname, qtype) in quantized.items():
        y = rerun(a_in, {o: v for o, v in sources.items() if o != rel})
        m = kernels.DiffMetrics.from_arrays(a_out, y.reshape(a_out.shape))
        out.append({"tensor": gname, "source": f"{block}.{rel}", "dtype": qtype, "scope": a_key,
                    "output_rel_l2": m.rel_l2, "output_cosine": m.cosine})
    return out
