"""Norms left without a counterpart after alignment (and after folds were matched)."""

from __future__ import annotations

import re

from ..match import gguf_names, module_name, n_blocks
from ..model import NormKind, NormLayer, Role
from .base import Context, Severity, check

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


def _template(layer: NormLayer) -> tuple[str, str, str]:
    """The same norm in every block shares a template (``model.layers.N.self_attn.k_norm``)."""
    return (layer.kind.value, layer.role.value, _INDEX.sub("N", module_name(layer)))


@check("missing_norm", Severity.ERROR, scope="unmatched",
       description="a norm of A has no counterpart in B (e.g. an unmapped qk-norm); the same norm missing in 3 or "
                   "more blocks is one finding", group_min=3)
def missing(ctx: Context, side: str, layer: NormLayer) -> None:
    if side != "A":
        return
    a, b = ctx.a, ctx.b
    arch = ctx.cache.get("gguf_arch")
    expected = None
    if arch and b.format == "gguf":
        expected = gguf_names(arch, n_blocks(a, b))(module_name(layer))
    hint = (f"expected GGUF tensor {expected}.weight; the converter did not map it" if expected else
            "the converter dropped or renamed this layer")
    role = "qk-norm " if layer.role is Role.QK_NORM else ""
    severity = None
    if layer.kind is NormKind.BATCH_NORM and not a.linear_ops and b.linear_ops:
        severity = Severity.WARNING  # most likely folded, but A has no graph to prove which conv
        hint = ("B has convs it may be folded into, but A has no graph to tell which: compare the .pt2 / "
                "TorchScript of A to verify the fold")
    ctx.finding("missing_norm", layer.id, None, f"{role}{layer.kind.value} {layer.id} of A has no counterpart in B",
                hint, group=_template(layer) + ((severity.value,) if severity else ()), severity=severity)


@check("extra_norm", Severity.WARNING, scope="unmatched", description="a norm of B has no counterpart in A",
       group_min=3)
def extra(ctx: Context, side: str, layer: NormLayer) -> None:
    if side != "B":
        return
    ctx.finding("extra_norm", None, layer.id, f"{layer.kind.value} {layer.id} of B has no counterpart in A",
                "a norm the source model does not have", group=_template(layer))
