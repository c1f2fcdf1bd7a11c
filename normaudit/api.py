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
            config: str | Path | None = None) -> NormModel:
    """Every norm layer of a model file or HF directory (what ``normaudit inspect`` lists)."""
    return load(path, format, trust_pickle=trust_pickle, config=config)


@dataclass
class AuditOptions:
    """Everything ``normaudit compare`` takes besides the two models."""

    format_a: str | None = None
    format_b: str | None = None
    config_a: str | Path | None = None
    config_b: str | Path | None = None
    trust_pickle: bool = False
    thresholds: Thresholds = field(default_factory=load_thresholds)
    activations: bool = False  # also run both models and diff activations layer by layer
    input_npz: str | None = None
    text: str | None = None
    model_dir: str | Path | None = None  # HF dir a GGUF is replayed through when neither side is one
    sensitivity: bool = False
    backend: str = "replay"  # how a GGUF side runs: replay | llama.cpp | both (activations.backends)
    runtime_defaults: bool = False  # llama.cpp with its own context defaults (flash attention auto, F16 KV cache)


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
                                                  config=opts.config_a)
    mb = b if isinstance(b, NormModel) else load(b, opts.format_b, trust_pickle=opts.trust_pickle,
                                                  config=opts.config_b)
    activations = _activations(ma, mb, opts) if opts.activations else None
    facts = activations.check_facts() if activations is not None else None
    report = AuditReport(compare(ma, mb, opts.thresholds, facts), opts.thresholds)
    report.activations = activations
    return report


def _activations(ma: NormModel, mb: NormModel, opts: AuditOptions):  # -> activations.ActivationReport
    """The activation diff (run before the static checks: model-scope checks read what it measured)."""
    from .activations import diff_activations
    from .errors import NormauditError

    if opts.sensitivity and opts.backend != "replay":
        raise NormauditError("--sensitivity re-runs the replay's blocks with one tensor at a time: it goes with "
                             "--backend replay")
    backend_options = {} if opts.backend == "replay" else (
        {"kv_cache": "f16", "flash_attention": "auto"} if opts.runtime_defaults else
        {"kv_cache": "f32", "flash_attention": "off"})
    return diff_activations(ma, mb, input_npz=opts.input_npz, text=opts.text, model_dir=opts.model_dir,
                            thresholds=opts.thresholds, sensitivity=opts.sensitivity,
                            trust_pickle=opts.trust_pickle, backend=opts.backend,
                            backend_options=backend_options)
