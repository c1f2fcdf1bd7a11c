"""Layer-by-layer activation diffs.

    from normaudit.activations import diff_activations
    report = diff_activations("hf/llama", "llama-q8_0.gguf")
    report.first_divergence, report.points[...]

:mod:`.base` defines the Runner protocol every backend implements (one module each in :mod:`.runners`);
:mod:`.driver` runs both sides and diffs them; :mod:`.inputs` makes or reads the inputs.
"""

from .base import InputHints, RunContext, Runner, block_key
from .driver import ActivationReport, PointDiff, build_runner, diff_activations, metrics

__all__ = ["diff_activations", "ActivationReport", "PointDiff", "metrics", "Runner", "RunContext", "InputHints",
           "build_runner", "block_key"]
