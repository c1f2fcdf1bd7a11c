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
from ..match import align
from ..model import NormKind, NormModel
from . import backends, inputs as inputs_mod
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
    first_divergence: PointDiff | None
    backends: dict[str, str]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    # filled by the llama.cpp backend (activations.backends); empty for the replay backend
    logits: dict[str, dict[str, float]] = field(default_factory=dict)  # leg -> kernels.logit_metrics
    attribution: list[dict[str, Any]] = field(default_factory=list)  # --backend both: per point, both legs
    attribution_first: dict[str, Any] = field(default_factory=dict)  # leg -> first diverging point
    tokenization: dict[str, Any] | None = None  # GGUF vocabulary vs HF tokenizer (checks: tokenizer_*)

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def to_dict(self) -> dict[str, Any]:
        doc = {"inputs": self.inputs, "backends": self.backends, "thresholds": self.thresholds,
               "points": [p.to_dict() for p in self.points],
               "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
               "sensitivity": self.sensitivity, "notes": self.notes, "passed": self.passed}
        doc.update(self._runtime_dict())
        return doc

    def _runtime_dict(self) -> dict[str, Any]:
        """The llama.cpp backend's additions (only when it ran)."""
        out: dict[str, Any] = {}
        if self.logits:
            out["logits"] = self.logits
        if self.attribution:
            out["attribution"] = {"first": self.attribution_first, "points": self.attribution}
        if self.tokenization is not None:
            out["tokenization"] = self.tokenization
        return out

    def check_facts(self) -> dict[str, Any]:
        """What the static checks read from this run (model-scope checks: tokenizer_mismatch, ...)."""
        return {"tokenization": self.tokenization} if self.tokenization is not None else {}


# -- sides ---------------------------------------------------------------------------------------------------

def build_runner(model: NormModel, ctx: RunContext) -> Runner:
    """The activation backend of a loaded model, from its format."""
    return get_format(model.format_name).runner(Path(model.path), model, ctx)


def _inputs(runners: list[Runner], npz: str | None, text: str | None) -> tuple[dict[str, np.ndarray], str]:
    if npz:
        return inputs_mod.load_npz(npz), f"npz:{npz}"
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
    return inputs_mod.default_tokens(min(vocabs), seq), (
        "default seeded tokens" + (f" (length {seq}, fixed by the exported graph)" if seqs else ""))


def _as_model(x: str | Path | NormModel, options: LoadOptions) -> NormModel:
    if isinstance(x, NormModel):
        return x
    return load(x, trust_pickle=options.trust_pickle, allow_empty=True)


# -- driver --------------------------------------------------------------------------------------------------

def diff_activations(a: str | Path | NormModel, b: str | Path | NormModel, *, input_npz: str | None = None,
                     text: str | None = None, model_dir: str | Path | None = None,
                     thresholds: Thresholds | None = None, sensitivity: bool = False,
                     trust_pickle: bool = False, backend: str = "replay",
                     backend_options: dict[str, Any] | None = None) -> ActivationReport:
    """Run A and B on the same input and diff every aligned norm output and block output.

    ``a`` / ``b`` are loaded models (each loaded once by the caller) or paths; ``model_dir`` is the HF
    directory a GGUF is replayed through when neither side is one.  ``backend`` runs a GGUF side by replay
    (default), by llama.cpp itself, or ``both`` (three-way attribution): see :mod:`.backends`."""
    th = thresholds or Thresholds()
    options = LoadOptions(trust_pickle=trust_pickle)
    ma, mb = _as_model(a, options), _as_model(b, options)
    source_dir, source_model = (Path(model_dir), None) if model_dir else (None, None)
    if source_dir is None:
        for m in (ma, mb):
            if m.format_name == "hf":
                source_dir, source_model = Path(m.path), m
    ctx = RunContext(options, source_dir, source_model, dict(backend_options or {}))
    runner_a, runner_b = backends.build_runners(ma, mb, ctx, backend, build_runner)
    feeds, source = _inputs([runner_a, runner_b], input_npz, text)

    al = align(runner_a.model, runner_b.model)
    b_to_a = {p.b.id: p.a.id for p in al.pairs}
    b_layers = {p.a.id: p.b for p in al.pairs}
    _fold_standins(runner_a.model, runner_b, al.missing, b_to_a)

    stored: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    order: list[str] = []

    def sink_a(key: str, kind: str, out: np.ndarray, x: np.ndarray | None, _rerun: Any = None) -> None:
        if key not in stored:
            order.append(key)
            stored[key] = (out, x)

    _run(runner_a, ma.path, feeds, sink_a)
    index = {k: i for i, k in enumerate(order)}
    points: list[tuple[float, PointDiff]] = []
    deferred: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}

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
                if runner_b.deferred_local:  # e.g. a subgraph extraction each: done for the first divergence only
                    deferred[a_key] = (rerun, a_in, a_out)
                else:
                    local = _rel_l2(a_out, rerun(a_in).reshape(a_out.shape))
        except (ValueError, TypeError, RuntimeError):
            local = None
        label = "output (fully optimized graph)" if key == "output.optimized" else key
        points.append((index.get(a_key, 10**9) + (0.5 if key == "output.optimized" else 0),
                       PointDiff(a_key, label, kind, metrics(a_out, out), local, tuple(out.shape), note)))

    _run(runner_b, mb.path, feeds, sink_b)
    stored.clear()
    ordered = [p for _, p in sorted(points, key=lambda t: t[0])]
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
        thresholds={"rel_l2": th.activation_rel_l2, "cosine": th.activation_cosine},
    )
    for m, r in ((ma, runner_a), (mb, runner_b)):
        if r.replay is not None and r.replay.unmapped_gguf:
            report.notes.append(f"{Path(m.path).name}: GGUF tensors not used by the replay: {r.replay.unmapped_gguf[:5]}")
    if sensitivity:
        report.sensitivity = _sensitivity(runner_a, runner_b, feeds)
    backends.finish(report, runner_a, runner_b, th, text)
    return report


def _run(runner: Runner, path: str, feeds: dict[str, np.ndarray], sink: Any) -> None:
    """Run one side; a backend failure (shape guard, unsupported op, ...) is one line, not a traceback."""
    try:
        runner.run(feeds, sink)
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


def _sensitivity(runner_a: Runner, runner_b: Runner, feeds: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Put one quantized GGUF tensor at a time into the float model; rank by final-output drift."""
    replay_side = runner_b if runner_b.replay is not None else runner_a if runner_a.replay is not None else None
    float_side = runner_a if replay_side is runner_b else runner_b
    final = getattr(float_side, "final_output", None)
    if replay_side is None or final is None:
        raise NormauditError("--sensitivity needs a GGUF side and its HF source (the float model)",
                             hint="normaudit compare HF_DIR model.gguf --activations --sensitivity")
    ref = final(feeds)
    out = []
    for hf_name, (gname, getter, qtype) in replay_side.replay.mapping.items():
        if qtype in ("F32", "F64"):
            continue
        try:
            y = final(feeds, {hf_name: getter()})
        except KeyError:
            continue  # not a parameter of the float model
        m = metrics(ref, y)
        out.append({"tensor": gname, "source": hf_name, "dtype": qtype, "output_rel_l2": m["rel_l2"],
                    "output_cosine": m["cosine"]})
    out.sort(key=lambda r: -r["output_rel_l2"])
    return out
