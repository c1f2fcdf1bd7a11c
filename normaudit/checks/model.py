"""Checks on the two models as a whole."""

from __future__ import annotations

from ..match import gguf_arch_for, is_mmproj
from .base import Context, Severity, check


@check("architecture_mismatch", Severity.WARNING, scope="model",
       description="A and B name different architectures: probably not a conversion of one model")
def architecture(ctx: Context) -> None:
    a, b = ctx.a, ctx.b
    if is_mmproj(a) or is_mmproj(b):
        return  # an mmproj is always "clip": the projector of any multimodal architecture
    arch_a, arch_b = gguf_arch_for(a), gguf_arch_for(b)
    if arch_a and arch_b and arch_a != arch_b:
        ctx.finding("architecture_mismatch", None, None, f"A is {a.architecture} ({arch_a}), B is {b.architecture} "
                    f"({arch_b})", "check that B was converted from A")


@check("eps_unknown", Severity.INFO, scope="model",
       description="one side stores no epsilon (a bare state_dict), so eps was not compared")
def eps_unknown(ctx: Context) -> None:
    unknown = [p for p in ctx.cache.get("aligned", []) if (p.a.eps is None) != (p.b.eps is None)]
    if unknown:
        side = "A" if unknown[0].a.eps is None else "B"
        ctx.finding("eps_unknown", None, None, f"{side} stores no eps for {len(unknown)} layers, so eps was not "
                    "compared", "give a config.json (--config-a/--config-b) or a .pt2 / ONNX / GGUF file that "
                    "records eps")


@check("activation_drift", Severity.ERROR, scope="activations",
       description="with --activations: error that quantization or float round-off cannot explain (a norm or block "
                   "adding error its weights cannot, a tensor beyond its storage type); expected drift is info")
def activation_drift(ctx: Context) -> None:
    """Not run over the static models: these findings come from the activation diff (activations/verdict.py)."""
