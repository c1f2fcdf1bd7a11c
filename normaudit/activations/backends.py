"""Which backend runs a GGUF side (``--backend replay | llama.cpp | both``), and what the llama.cpp runtime adds
to an activation diff: the three-way attribution (source vs replay = what the file's tensors and eps do;
replay vs runtime = what llama.cpp does beyond them, per point and for the next-token distributions), the
runtime's own anomalies, and the tokenizer comparison.

Everything here wraps runners; the driver runs the wrapped pair exactly as any other pair:

- side A is wrapped in a :class:`Tap` that keeps references to A's captured arrays (the driver keeps them too,
  so no copy) until B's wrapper has used them;
- side B is a :class:`RuntimeSide` (the runtime alone) or a :class:`ThreeWay` (the replay first, its arrays
  kept, then the runtime), which puts each runtime tensor in A's layout (ggml's per-head order is not every
  source's), measures the extra legs, and hands the point on to the driver.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from .. import kernels
from ..config import Thresholds
from ..errors import NormauditError
from ..facts import llamacpp as lfacts
from ..match import align
from ..model import NormModel
from .base import RunContext, Runner, Sink

BACKENDS = lfacts.BACKENDS


# -- runner choice -------------------------------------------------------------------------------------------

def build_runners(ma: NormModel, mb: NormModel, ctx: RunContext, backend: str,
                  build: Any) -> tuple[Runner, Runner]:
    """The runners for A and B under ``backend`` (``build(model, ctx)`` is the format's own runner)."""
    if backend not in BACKENDS:
        raise NormauditError(f"unknown backend {backend!r}", hint="one of " + ", ".join(BACKENDS))
    if backend == "replay":
        return build(ma, ctx), build(mb, ctx)
    from .runners.llamacpp import llamacpp_runner

    is_gguf = [m.format_name == "gguf" for m in (ma, mb)]
    if not any(is_gguf):
        raise NormauditError(f"--backend {backend} runs a GGUF through llama.cpp, and neither side is a GGUF")
    opts = ctx.backend_options
    if backend == "llama.cpp":
        ra = llamacpp_runner(Path(ma.path), ma, ctx, **opts) if is_gguf[0] else build(ma, ctx)
        rb = llamacpp_runner(Path(mb.path), mb, ctx, **opts) if is_gguf[1] else build(mb, ctx)
        if all(is_gguf):  # GGUF vs GGUF without the source: B's tensors against A's float ones, if A has them
            from .runners.llamacpp import measure_against_gguf

            measure_against_gguf(rb, ma)
        tap = Tap(ra)
        return tap, RuntimeSide(rb, tap)
    if is_gguf[0] or not is_gguf[1]:
        raise NormauditError("--backend both compares a source model (A) with its GGUF (B)",
                             hint="normaudit compare HF_DIR model.gguf --activations --backend both")
    tap = Tap(build(ma, ctx))
    return tap, ThreeWay(build(mb, ctx), llamacpp_runner(Path(mb.path), mb, ctx, **opts), tap)


# -- wrappers ------------------------------------------------------------------------------------------------

class _Delegate:
    """Everything the driver reads (label, model, hints, replay, final_output, ...) comes from ``inner``."""

    inner: Any

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def add_standin(self, conv: Any, key: str) -> bool:
        return self.inner.add_standin(conv, key)


class Tap(_Delegate):
    """Side A as it is, keeping a reference to every captured array for the other side's wrapper."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.arrays: dict[str, np.ndarray] = {}

    def run(self, feeds: dict[str, np.ndarray], sink: Sink) -> None:
        def tee(key: str, kind: str, out: np.ndarray, x: np.ndarray | None, rerun: Any = None) -> None:
            self.arrays.setdefault(key, out)
            sink(key, kind, out, x, rerun)

        self.inner.run(feeds, tee)

    def take(self, key: str) -> np.ndarray | None:
        return self.arrays.pop(key, None)


def _perm_fits(ref: np.ndarray, out: np.ndarray) -> list[tuple[int, ...]]:
    """Axis orders of ``out`` that give ``ref``'s shape; the batch axis and the normalized (last) axis stay."""
    last = out.ndim - 1
    if out.ndim != ref.ndim or out.ndim < 4 or sorted(out.shape[1:last]) != sorted(ref.shape[1:last]):
        return []
    return [(0,) + p + (last,) for p in itertools.permutations(range(1, last))
            if tuple(out.shape[i] for i in (0,) + p + (last,)) == ref.shape]


def fit_layout(ref: np.ndarray, out: np.ndarray, x: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``out`` (and the norm input ``x``) with its axes in ``ref``'s order: ggml's per-head tensors are
    ``[T, heads, dim]`` while a source may hold ``[heads, T, dim]`` (Gemma3's q/k norms run after the
    transpose).  When several orders fit (as many heads as tokens), the one closest in values is taken."""
    if out.shape == ref.shape:
        return out, x, ""
    fits = _perm_fits(ref, out)
    if not fits:
        return out, x, ""
    how = "axes reordered to A's layout"
    if len(fits) > 1:
        fits.sort(key=lambda p: kernels.DiffMetrics.from_arrays(ref, out.transpose(p)).rel_l2)
        how += " (order chosen by values: as many heads as tokens)"
    p = fits[0]
    return (np.ascontiguousarray(out.transpose(p)),
            np.ascontiguousarray(x.transpose(p)) if x is not None and x.shape == out.shape else None, how)


def _a_keys(a_model: NormModel, b_model: NormModel) -> dict[str, str]:
    """B norm id -> A norm id, as the driver aligns them."""
    return {p.b.id: p.a.id for p in align(a_model, b_model).pairs}


class RuntimeSide(_Delegate):
    """Side B run by llama.cpp: its points put in A's layout before the driver compares them."""

    def __init__(self, inner: Runner, tap: Tap) -> None:
        self.inner = inner
        self.tap = tap
        self.to_a = _a_keys(tap.model, inner.model)
        self.layout_notes: set[str] = set()

    def _a_key(self, key: str, kind: str) -> str:
        return self.to_a.get(key, key) if kind == "norm" else key

    def _fit(self, a_key: str, out: np.ndarray, x: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None,
                                                                              np.ndarray | None]:
        ref = self.tap.take(a_key)
        if ref is None:
            return out, x, None
        out, x, how = fit_layout(ref, out, x)
        if how:
            self.layout_notes.add(how)
        return out, x, ref

    def run(self, feeds: dict[str, np.ndarray], sink: Sink) -> None:
        def forward(key: str, kind: str, out: np.ndarray, x: np.ndarray | None, rerun: Any = None) -> None:
            out, x, _ = self._fit(self._a_key(key, kind), out, x)
            sink(key, kind, out, x, rerun)

        self.inner.run(feeds, forward)


class ThreeWay(RuntimeSide):
    """Side B twice: replayed (the file's tensors in the source architecture), then run by llama.cpp.

    The driver diffs A against the runtime; this wrapper adds, per point, A vs replay and replay vs runtime."""

    def __init__(self, replay: Runner, runtime: Runner, tap: Tap) -> None:
        super().__init__(runtime, tap)
        self.replay_runner = replay
        self.replay = replay.replay  # the GGUF tensors (sensitivity, unused-tensor notes)
        self.weights = getattr(replay, "weights", None)  # each tensor's error, measured as the replay ran
        self.replay_to_a = _a_keys(tap.model, replay.model)
        self.legs: dict[str, dict[str, dict[str, float]]] = {}
        self.output: dict[str, dict[str, float]] = {}  # leg -> next-token metrics

    @property
    def label(self) -> str:  # type: ignore[override]
        return self.inner.label

    @property
    def notes(self) -> list[str]:
        return [*getattr(self.replay_runner, "notes", []), *getattr(self.inner, "notes", [])]

    def run(self, feeds: dict[str, np.ndarray], sink: Sink) -> None:
        replayed: dict[str, np.ndarray] = {}

        def keep(key: str, kind: str, out: np.ndarray, x: np.ndarray | None, rerun: Any = None) -> None:
            a_key = self.replay_to_a.get(key, key) if kind == "norm" else key
            replayed.setdefault(a_key, out)
            ref = self.tap.arrays.get(a_key)
            if ref is not None:
                out = fit_layout(ref, out)[0]
                self.legs.setdefault(a_key, {})["a_vs_replay"] = _leg(ref, out)
                if kind == "output":
                    _add_next_token(self.output, "a_vs_replay", ref, out)

        self.replay_runner.run(feeds, keep)

        def forward(key: str, kind: str, out: np.ndarray, x: np.ndarray | None, rerun: Any = None) -> None:
            a_key = self._a_key(key, kind)
            out, x, _ = self._fit(a_key, out, x)
            rep = replayed.pop(a_key, None)
            if rep is not None:
                out_r = fit_layout(rep, out)[0]
                self.legs.setdefault(a_key, {})["replay_vs_b"] = _leg(rep, out_r)
                if kind == "output":
                    _add_next_token(self.output, "replay_vs_runtime", rep, out_r)
            sink(key, kind, out, x, rerun)

        self.inner.run(feeds, forward)
        replayed.clear()


def _leg(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    if ref.shape != out.shape:
        if ref.size != out.size:
            return {"rel_l2": float("nan")}
        out = out.reshape(ref.shape)
    return kernels.DiffMetrics.from_arrays(ref, out).to_dict("max_abs", "rel_l2", "cosine", "non_finite")


def _add_next_token(into: dict[str, dict[str, float]], leg: str, ref: np.ndarray, out: np.ndarray) -> None:
    if out.size == ref.size and ref.ndim >= 2:
        into[leg] = kernels.next_token_metrics(ref, out.reshape(ref.shape))


# -- after the run -------------------------------------------------------------------------------------------

def _over(m: dict[str, float] | None, th: Thresholds, floor: float | None = None) -> bool:
    """Does one leg diverge?  The source-vs-replay leg by the user's thresholds; the replay-vs-runtime leg
    (``floor``: the runtime's measured precision for the file's weights) by relative L2 only."""
    if not m:
        return False
    rel = m.get("rel_l2", 0.0)
    if m.get("non_finite") or not np.isfinite(rel):
        return True
    if floor is not None:
        return rel > max(th.activation_rel_l2, floor)
    return rel > th.activation_rel_l2 or m.get("cosine", 1.0) < th.activation_cosine


#: what a divergence on each leg of the three-way comparison means
CAUSES = {
    (True, False): "conversion",  # the file's tensors / eps already differ in the source architecture
    (False, True): "runtime",  # the replay matches, llama.cpp does not: graph, kernels, metadata beyond eps
    (True, True): "conversion+runtime",
    (False, False): "",
}


def attribution(report: Any, runner_b: "ThreeWay", th: Thresholds) -> dict[str, Any]:
    """Per point of the report (A vs runtime): A vs replay and replay vs runtime, and which leg diverges."""
    rows: list[dict[str, Any]] = []
    floor = lfacts.RUNTIME_REL_L2[runner_b.inner.weight_class]
    first: dict[str, Any] = {"conversion": None, "runtime": None}
    for p in report.points:
        legs = runner_b.legs.get(p.a, {})
        conv, rt = legs.get("a_vs_replay"), legs.get("replay_vs_b")
        cause = CAUSES[(_over(conv, th), _over(rt, th, floor))]
        rows.append({"point": p.a, "runtime": p.b, "kind": p.kind, "a_vs_replay": conv, "replay_vs_runtime": rt,
                     "a_vs_runtime": {k: p.metrics.get(k) for k in ("max_abs", "rel_l2", "cosine")},
                     "cause": cause})
        if first["conversion"] is None and _over(conv, th):
            first["conversion"] = p.a
        if first["runtime"] is None and _over(rt, th, floor):
            first["runtime"] = p.a
    return {"first": first, "runtime_rel_l2": max(th.activation_rel_l2, floor), "output": dict(runner_b.output),
            "points": rows}


def _runtime_anomalies(report: Any, runner_b: Any, th: Thresholds) -> list[dict[str, Any]]:
    """What the driver's verdict cannot see in a runtime: llama.cpp re-runs no block on A's input, so a
    divergence the weights do not explain is judged here.  ``both``: the replay-vs-runtime leg beyond the
    runtime's measured precision; ``llama.cpp`` on a file whose weights are exact: any drift beyond it."""
    have = {a["point"] for a in report.anomalies}
    if isinstance(runner_b, ThreeWay):
        att = report.attribution
        at = att["first"]["runtime"]
        if at is None or at in have:
            return []
        row = next(r for r in att["points"] if r["point"] == at)
        return [{"point": at, "kind": "runtime", "blame": [row["runtime"]], "local_rel_l2": None,
                 "bound": att["runtime_rel_l2"],
                 "message": f"llama.cpp diverges from the replay of the same file at {at}: rel L2 "
                            f"{row['replay_vs_runtime']['rel_l2']:.3g} (A vs replay {row['a_vs_replay']['rel_l2']:.3g}), "
                            f"beyond the runtime's precision for its weights ({att['runtime_rel_l2']:.3g}): the graph, a "
                            "kernel or metadata only the runtime reads (rope, attention settings, ...)"}]
    weights = report.weights
    if weights is None or any(w["dtype"] not in ("F32", "F64") for w in weights):
        return []
    bound = max(th.activation_rel_l2, lfacts.RUNTIME_REL_L2["F32"])
    bad = next((p for p in report.points if p.metrics.get("rel_l2", 0.0) > bound), None)
    if bad is None or bad.a in have:
        return []
    return [{"point": bad.a, "kind": "runtime", "blame": [bad.b], "local_rel_l2": bad.local_rel_l2, "bound": bound,
             "message": f"unexplained drift at {bad.a}: the file's weights are exact, yet llama.cpp differs by rel L2 "
                        f"{bad.metrics['rel_l2']:.3g} (--backend both tells the conversion from the runtime)"}]


def finish(report: Any, runner_a: Any, runner_b: Any, th: Thresholds, text: str | None) -> None:
    """Attach what the llama.cpp backend measured to the report (nothing for the replay backend)."""
    if not isinstance(runner_b, RuntimeSide):
        return
    for note in sorted(runner_b.layout_notes):
        report.notes.append(f"runtime tensors: {note}")
    for r in (runner_a.inner, runner_b.inner):
        if getattr(r, "runtime", False):
            missing = r.uncaptured_norms()
            if missing:
                report.notes.append(f"{Path(r.path).name}: llama.cpp produced no tensor for norms {missing[:8]}")
    if isinstance(runner_b, ThreeWay):
        report.backends["replay"] = runner_b.replay_runner.label
        report.attribution = attribution(report, runner_b, th)
    extra = _runtime_anomalies(report, runner_b, th)
    if extra:
        from . import verdict
        from .driver import _file_type

        report.anomalies = sorted(report.anomalies + extra, key=lambda a: verdict._position(a, report.points))
        report.verdict = verdict.summary(report.weights, report.output, report.points, report.anomalies,
                                         _file_type(runner_b.inner.model))
    runtime = runner_b.inner if getattr(runner_b.inner, "runtime", False) else runner_a.inner
    dirs = [d for r in (runner_a, runner_b) for d in r.hints.tokenizer_dirs]
    tok, why = _hf_tokenizer(dirs)
    if tok is None:
        report.notes.append(f"tokenizer not compared (tokenizer_mismatch / tokenizer_special_tokens skipped): {why}")
    else:
        report.tokenization = compare_tokenization(Path(runtime.path), tok, text)


# -- tokenization --------------------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt")


def _hf_tokenizer(dirs: list[Path]) -> tuple[Any | None, str]:
    """The HF tokenizer of the first folder in ``dirs`` that has one, or (None, why there is none)."""
    for d in dirs:
        if d.is_dir() and any((d / f).is_file() for f in TOKENIZER_FILES):
            try:
                from transformers import AutoTokenizer

                return AutoTokenizer.from_pretrained(str(d), local_files_only=True), ""
            except Exception as exc:  # transformers raises many types for a broken folder: no comparison then
                msg = " ".join(str(exc).split())[:160]
                return None, f"the HF tokenizer in {d} could not be loaded ({type(exc).__name__}: {msg})"
    if not dirs:
        return None, "neither side is an HF folder (give one with --model HF_DIR)"
    return None, f"no HF tokenizer ({' / '.join(TOKENIZER_FILES)}) in {', '.join(str(d) for d in dirs)}"


def _ends(ids: list[int], special: set[int]) -> tuple[int, int]:
    """How many special tokens lead and trail ``ids``."""
    lead = next((i for i, t in enumerate(ids) if t not in special), len(ids))
    trail = next((i for i, t in enumerate(reversed(ids)) if t not in special), len(ids))
    return lead, trail if lead < len(ids) else 0


def token_diff(a: list[int], b: list[int]) -> int | None:
    """Index where two token sequences first differ (None if equal)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_tokenization(gguf: Path, tok: Any, text: str | None) -> dict[str, Any]:
    """The input text tokenized by the GGUF's own vocabulary (llama.cpp) and by the HF tokenizer ``tok``; the
    probe text of :mod:`normaudit.facts.llamacpp` when no --text was given."""
    from .runners.llamacpp import gguf_tokenize

    source = "--text" if text is not None else "probe text (no --text given)"
    text = text if text is not None else lfacts.TOKENIZER_PROBE_TEXT
    hf = [int(i) for i in tok(text)["input_ids"]]
    gg, control, gg_pieces = gguf_tokenize(gguf, text)
    hf_pieces = [str(p) for p in tok.convert_ids_to_tokens(hf)]
    doc: dict[str, Any] = {"text": text, "source": source, "hf": hf, "gguf": gg, "match": hf == gg}
    if hf == gg:
        return doc
    special = set(int(i) for i in getattr(tok, "all_special_ids", [])) | control
    (hl, ht), (gl, gt) = _ends(hf, special), _ends(gg, special)
    body_hf, body_gg = hf[hl:len(hf) - ht], gg[gl:len(gg) - gt]
    doc["body_match"] = body_hf == body_gg
    if doc["body_match"]:  # only the special tokens added around the text differ
        doc["specials"] = {"hf_leading": hf[:hl], "gguf_leading": gg[:gl], "hf_trailing": hf[len(hf) - ht:],
                           "gguf_trailing": gg[len(gg) - gt:],
                           "gguf_pieces": [gg_pieces[k] for k in list(range(gl)) + list(range(len(gg) - gt, len(gg)))]}
        return doc
    j = hl + (token_diff(body_hf, body_gg) or 0)  # first difference of the text's own tokens
    k = gl + (j - hl)

    def window(ids: list[int], pieces: list[str], at: int) -> list[list[Any]]:
        lo = max(at - 2, 0)
        return [[t, p] for t, p in zip(ids[lo:at + 4], pieces[lo:at + 4])]

    doc["first_difference"] = {"hf_index": j, "gguf_index": k, "hf": window(hf, hf_pieces, j),
                               "gguf": window(gg, gg_pieces, k)}
    return doc
