"""The library entry points every CLI verb is a thin layer over.

    import normaudit
    model = normaudit.inspect("model.gguf")                  # NormModel (every norm layer)
    report = normaudit.audit("hf_dir", "model.gguf")         # AuditReport
    report.passed, report.to_dict()                          # == `normaudit compare hf_dir model.gguf --json -`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .checks import compare
from .config import Thresholds, load_thresholds
from .formats.registry import load
from .model import NormModel
from .report.document import AuditReport


def inspect(path: str | Path, format: str | None = None, *, trust_pickle: bool = False,
            config: str | Path | None = None, revision: str | None = None) -> NormModel:
    """Every norm layer of a model file or HF directory (what ``normaudit inspect`` lists); ``revision`` picks
    the snapshot of a Hugging Face cache folder (``models--org--name``)."""
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


def audit(a: str | Path | NormModel, b: str | Path | NormModel, options: AuditOptions | None = None,
          **kwargs: object) -> AuditReport:
    """Compare ``a`` (source) and ``b`` (converted): the exact document ``normaudit compare --json`` writes.

    Each model is loaded once (paths) or used as given (NormModels); ``options`` or keyword arguments
    (the :class:`AuditOptions` fields) say how.
    """
    opts = options or AuditOptions(**kwargs)  # type: ignore[arg-type]
    if options is not None and kwargs:
        raise TypeError("give either options or keyword arguments, not both")
    ma = a if isinstance(a, NormModel) else load(a, opts.format_a, trust_pickle=opts.trust_pickle,
                                                  config=opts.config_a, revision=opts.revision_a)
    mb = b if isinstance(b, NormModel) else load(b, opts.format_b, trust_pickle=opts.trust_pickle,
                                                  config=opts.config_b, revision=opts.revision_b)
    report = AuditReport(compare(ma, mb, opts.thresholds), opts.thresholds)
    if opts.activations:
        from .activations import diff_activations

        report.activations = diff_activations(ma, mb, input_npz=opts.input_npz, text=opts.text,
                                              model_dir=opts.model_dir, thresholds=opts.thresholds,
                                              sensitivity=opts.sensitivity, trust_pickle=opts.trust_pickle)
    return report
