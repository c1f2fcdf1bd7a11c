"""The library entry points every CLI verb is a thin layer over.

    import normaudit
    model = normaudit.inspect("model.gguf")                  # NormModel (every norm layer)
    report = normaudit.audit("hf_dir", "model.gguf")         # AuditReport
    report.passed, report.to_dict()                          # == `normaudit compare hf_dir model.gguf --json -`

Neither function prints: long steps report to an optional ``progress`` (:class:`normaudit.progress.Progress`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import compare
from .config import Thresholds, load_thresholds
from .errors import NoNorms, NormauditError
from .formats.registry import FORMATS, load
from .model import NormModel
from .progress import Progress, step
from .report.document import AuditReport


def inspect(path: str | Path, format: str | None = None, *, trust_pickle: bool = False,
            config: str | Path | None = None, revision: str | None = None,
            progress: Progress | None = None) -> NormModel:
    """Every norm layer of a model file or HF directory (what ``normaudit inspect`` lists;
    ``normaudit.report.inspect_document(model)`` is its ``--json`` document); ``revision`` picks the snapshot of a
    Hugging Face cache folder (``models--org--name``)."""
    with step(progress, f"loading {Path(path).name}"):
        return load(path, format, trust_pickle=trust_pickle, config=config, revision=revision)


@dataclass
class AuditOptions:
    """Everything ``normaudit compare`` takes besides the two models."""

    format_a: str | None = None
    format_b: str | None = None
    config_a: str | Path | None = None
    config_b: str | Path | None = None
    revision_a: str | None = None  # snapshot of a Hugging Face cache folder (default refs/main)
    revision_b: str | None = None
    trust_pickle: bool = False
    thresholds: Thresholds = field(default_factory=load_thresholds)
    activations: bool = False  # also run both models and diff activations layer by layer
    input_npz: str | None = None
    text: str | None = None
    model_dir: str | Path | None = None  # HF dir a GGUF is replayed through when neither side is one
    sensitivity: bool = False
    baseline: str | Path | None = None  # baseline file: the findings it records are suppressed (report.baseline)
    backend: str = "replay"  # how a GGUF side runs: replay | llama.cpp | both (activations.backends)
    runtime_defaults: bool = False  # llama.cpp with its own context defaults (flash attention auto, F16 KV cache)


def audit(a: str | Path | NormModel, b: str | Path | NormModel, options: AuditOptions | None = None, *,
          progress: Progress | None = None, **kwargs: object) -> AuditReport:
    """Compare ``a`` (source) and ``b`` (converted): the exact document ``normaudit compare --json`` writes
    (``report.to_dict()``; only ``created`` differs between two runs).

    Each model is loaded once (paths) or used as given (NormModels); ``options`` or keyword arguments
    (the :class:`AuditOptions` fields) say how. ``input_npz`` takes an ``.npz`` or a report's JSON whose
    recorded ``inputs`` are reused.
    """
    opts = options or AuditOptions(**kwargs)  # type: ignore[arg-type]
    if options is not None and kwargs:
        raise TypeError("give either options or keyword arguments, not both")
    ma = a if isinstance(a, NormModel) else _load(a, "A", opts.format_a, opts.config_a, opts.revision_a, opts,
                                                  progress)
    mb = b if isinstance(b, NormModel) else _load(b, "B", opts.format_b, opts.config_b, opts.revision_b, opts,
                                                  progress)
    if not ma.norms and not mb.norms:
        raise NoNorms(f"{ma.path}, {mb.path}: no normalization layers in either model",
                      hint="BatchNorms folded into convs are checked against the model that still has them")
    with step(progress, "checking norm pairs"):
        static = compare(ma, mb, opts.thresholds)
    activations = None
    if opts.activations:
        from .activations import diff_activations

        activations = diff_activations(ma, mb, input_npz=opts.input_npz, text=opts.text,
                                       model_dir=opts.model_dir, thresholds=opts.thresholds,
                                       sensitivity=opts.sensitivity, trust_pickle=opts.trust_pickle,
                                       progress=progress, backend=opts.backend,
                                       backend_options=_backend_options(opts))
    report = AuditReport(static, opts.thresholds, activations)
    if opts.baseline is not None:
        report.apply_baseline(opts.baseline)
    return report


def _load(path: str | Path, side: str, format: str | None, config: str | Path | None, revision: str | None,
          opts: AuditOptions, progress: Progress | None) -> NormModel:
    """One side of a comparison.  A model with no norm op left is still a valid side when it has convs / Gemms:
    its BatchNorms were folded into them (every ResNet-style export), and the folds are what gets verified."""
    with step(progress, f"loading {side} ({Path(path).name})"):
        model = load(path, format, trust_pickle=opts.trust_pickle, config=config, allow_empty=True,
                     revision=revision)
    if not model.norms and not model.linear_ops:
        raise NoNorms(f"{path}: no normalization layers found in this {FORMATS.get(model.format_name, 'model')} "
                      "(and no conv / Gemm a BatchNorm could be folded into)", hint="is this the right file?")
    return model


def _backend_options(opts: AuditOptions) -> dict[str, Any]:
    """How the llama.cpp backend runs: F32 KV cache without flash attention (what remains is the kernels), or
    llama.cpp's own context defaults (``runtime_defaults``)."""
    if opts.sensitivity and opts.backend != "replay":
        raise NormauditError("--sensitivity re-runs the replay's blocks with one tensor at a time: it goes with "
                             "--backend replay")
    if opts.backend == "replay":
        return {}
    if opts.runtime_defaults:
        return {"kv_cache": "f16", "flash_attention": "auto"}
    return {"kv_cache": "f32", "flash_attention": "off"}
