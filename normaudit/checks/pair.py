"""Checks on each aligned pair of norms: kind, eps, weights, convention, storage dtype."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..match import Pair
from ..model import Convention, NormKind, NormLayer
from .base import Context, Finding, Severity, check

_MODEL_WIDE = ("gguf_metadata", "hf_config")  # eps sources that set every layer at once


def weight_metrics(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """max abs, relative L2 and cosine of y against reference x (the pair fields of the JSON schema)."""
    return kernels.DiffMetrics.from_arrays(x, y).to_dict("max_abs", "rel_l2", "cosine")


def _eps_in_dtype(eps: float, dtype: str) -> float:
    """eps as the dtype its constant is stored in represents it (F16 underflows below ~6e-8)."""
    return float(np.float16(eps)) if dtype == "F16" else float(np.float32(eps))


def src_text(layer: NormLayer) -> str:
    src = layer.eps_source.value
    if src == "gguf_metadata":
        return f"GGUF key {layer.eps_detail}"
    if src == "hf_config":
        return layer.eps_detail
    if src in ("onnx_constant", "onnx_attribute", "onnx_default"):
        return f"ONNX {src.split('_', 1)[1]} ({layer.eps_detail})"
    if src == "module_attribute" and layer.eps_detail:
        return layer.eps_detail
    return f"{src} ({layer.eps_detail})" if layer.eps_detail else src


def _key_text(layer: NormLayer) -> str:
    """Where a model-wide eps comes from: its one key (``config.json vision_config.layer_norm_eps``), whatever
    module classes read it (a VLM's LayerNorms and its projector's RMSNorm share one finding)."""
    if layer.eps_key and layer.eps_source.value in ("module_attribute", "hf_config"):
        return f"config.json {layer.eps_key}"
    return src_text(layer)


def _eps_hint(la: NormLayer, lb: NormLayer) -> str:
    if lb.eps_source.value == "gguf_metadata":
        return f"set {lb.eps_detail} to {la.eps:g} (e.g. gguf_set_metadata.py) or fix the converter's eps key"
    if lb.eps_source.value.startswith("onnx"):
        what = "attribute" if "attribute" in lb.eps_source.value else "Add constant"
        return f"re-export with eps {la.eps:g}, or patch the {what}"
    return f"use eps {la.eps:g} as the source model does"


# -- kind -------------------------------------------------------------------------------------------------

def same_kind(la: NormLayer, lb: NormLayer) -> bool:
    """Same kind of norm, or the same computation (InstanceNorm == GroupNorm with one group per channel)."""
    return la.kind is lb.kind or la.computes() is lb.computes()


@check("norm_type_mismatch", Severity.ERROR, scope="pair",
       description="RMSNorm vs LayerNorm, bias lost, GroupNorm groups changed")
def norm_type(ctx: Context, pair: Pair) -> None:
    la, lb = pair.a, pair.b
    if not same_kind(la, lb):
        what = {frozenset({NormKind.RMS_NORM, NormKind.LAYER_NORM}):
                "mean centring " + ("added" if lb.kind is NormKind.LAYER_NORM else "dropped")}.get(
            frozenset({la.kind, lb.kind}), "different normalization")
        guess = guess_text(pair, "kind")
        ctx.finding("norm_type_mismatch", la.id, lb.id, f"{la.kind.value} in A, {lb.kind.value} in B ({what})"
                    + guess, GUESS_HINT if guess else
                    "the converter mapped the layer to the wrong norm op (cf. RMSNorm vs LayerNorm swaps)",
                    severity=Severity.WARNING if guess else None, kind_a=la.kind.value, kind_b=lb.kind.value)
        return
    if la.kind is lb.kind is NormKind.GROUP_NORM and la.num_groups and lb.num_groups and \
            la.num_groups != lb.num_groups:
        ctx.finding("norm_type_mismatch", la.id, lb.id, f"GroupNorm groups {la.num_groups} in A, {lb.num_groups} in B",
                    "groups must be preserved", groups_a=la.num_groups, groups_b=lb.num_groups)
    if la.bias is not None and lb.bias is None and la.kind is not NormKind.RMS_NORM:
        if np.any(la.bias.load() != 0):
            ctx.finding("norm_type_mismatch", la.id, lb.id,
                        f"bias lost: A's {la.kind.value} has a non-zero bias, B's has none", "map the .bias tensor too")


GUESS_HINT = ("install normaudit[activations] (transformers + torch) so the HF side's norms are read from the "
              "modules themselves, then compare again")


def guess_text(pair: Pair, what: str) -> str:
    """'; A's kind is a guess ...' when a side's ``what`` was guessed from tensor names (then only a warning)."""
    sides = [s for s, layer in (("A", pair.a), ("B", pair.b)) if what in layer.guessed]
    if not sides:
        return ""
    return (f"; {' and '.join(sides)}'s {what} is a guess from tensor names and config.json (a model type "
            "normaudit's tables do not list, read without transformers)")


# -- eps --------------------------------------------------------------------------------------------------

def _merge_eps(members: list[Finding]) -> Finding:
    first = members[0]
    where_b, where_a = first.group[3], first.group[4]
    return Finding("eps_mismatch", first.severity, None, None,
                   f"model-wide: {where_b}, {where_a} ({len(members)} layers)", first.hint,
                   {"eps_a": first.values["eps_a"], "eps_b": first.values["eps_b"],
                    "layers": [[m.a, m.b] for m in members]})


@check("eps_underflow", Severity.ERROR, scope="pair",
       description="epsilon is 0, or underflowed in the dtype it is stored in")
@check("eps_mismatch", Severity.ERROR, scope="pair",
       description="epsilon differs (compared as float32, or in the dtype the constant is stored in); one eps key "
                   "for all layers is reported once", group_min=2, merge=_merge_eps)
def eps(ctx: Context, pair: Pair) -> None:
    la, lb = pair.a, pair.b
    if la.eps is None or lb.eps is None:
        return
    for layer, other, side in ((lb, la, "B"), (la, lb, "A")):
        if layer.eps == 0 and other.eps and other.eps > 0:
            how = (f"the constant is stored as {layer.eps_dtype}, where {other.eps:g} underflows to 0"
                   if layer.eps_dtype in ("F16", "BF16") and _eps_in_dtype(other.eps, layer.eps_dtype) == 0
                   else "eps is 0")
            ctx.finding("eps_underflow", la.id, lb.id, f"{side} {layer.id}: eps 0 where the other side has "
                        f"{other.eps:g} ({how})",
                        "keep the eps constant in float32 (export the norm in fp32 or as a fused op with an "
                        "epsilon attribute)", eps_a=la.eps, eps_b=lb.eps)
            return
    # compare in the lowest precision either constant is stored in
    dtype = "F16" if "F16" in (la.eps_dtype, lb.eps_dtype) else "F32"
    ea, eb = _eps_in_dtype(la.eps, dtype), _eps_in_dtype(lb.eps, dtype)
    if abs(ea - eb) <= ctx.th.eps_rtol * max(abs(ea), abs(eb)):
        return
    # one key (a GGUF metadata key, a config.json entry) sets every layer's eps: grouped to one finding
    wide = tuple(f"{x.eps_source.value}:{x.eps_key or x.eps_detail}" for x in (la, lb)
                 if x.eps_key or x.eps_source.value in _MODEL_WIDE)
    group = (ea, eb, wide, f"{_key_text(lb)} is {lb.eps:g}", f"{_key_text(la)} says {la.eps:g}") if wide else None
    guess = guess_text(pair, "eps")
    ctx.finding("eps_mismatch", la.id, lb.id, f"eps {la.eps:g} in A, {lb.eps:g} in B ({src_text(lb)})" + guess,
                GUESS_HINT if guess else _eps_hint(la, lb), group=group, eps_a=la.eps, eps_b=lb.eps,
                severity=Severity.WARNING if guess else None)


# -- weights ----------------------------------------------------------------------------------------------

def scale_metrics(ctx: Context, pair: Pair) -> dict[str, float] | None:
    """Metrics of B's effective scale against A's (None when either has none or the shapes differ); cached."""
    key = ("scale_metrics", id(pair))
    if key not in ctx.cache:
        sa, sb = pair.a.scale(), pair.b.scale()
        ok = sa is not None and sb is not None and sa.size == sb.size
        ctx.cache[key] = weight_metrics(sa.reshape(-1), sb.reshape(-1)) if ok else None
    return ctx.cache[key]


def conv_text(layer: NormLayer) -> str:
    text = "x*(1+w)" if layer.convention is Convention.ONE_PLUS else "x*w"
    return text + (" with w stored as 1+w" if layer.stored_one_plus else "")


@check("weight_mismatch", Severity.ERROR, scope="pair",
       description="effective scale (w or 1+w), bias or running stats differ beyond what the storage dtype explains")
@check("convention_mismatch", Severity.ERROR, scope="pair",
       description="effective scale off by exactly 1: the (1 + w) shift missing or applied twice", group_min=2)
@check("weight_at_init", Severity.ERROR, scope="pair",
       description="B's norm is all ones/zeros (left at init) while A's is not")
def weights(ctx: Context, pair: Pair) -> None:
    la, lb = pair.a, pair.b
    if not same_kind(la, lb):
        return  # norm_type_mismatch says it; weights of different kinds are not comparable
    sa, sb = la.scale(), lb.scale()
    if sa is not None and sb is not None:
        if sa.size != sb.size:
            ctx.finding("weight_mismatch", la.id, lb.id, f"weight shape {tuple(la.shape)} in A, {tuple(lb.shape)} in B",
                        "")
            return
        _compare_scale(ctx, la, lb, sa.reshape(-1), sb.reshape(-1), scale_metrics(ctx, pair))
    elif (sa is None) != (sb is None):
        has, lacks = ("A", "B") if sa is not None else ("B", "A")
        ctx.finding("weight_mismatch", la.id, lb.id, f"{has} has a norm weight, {lacks} has none",
                    "map the .weight tensor")
    for attr in ("bias", "running_mean", "running_var"):
        ta, tb = getattr(la, attr), getattr(lb, attr)
        if ta is None or tb is None:
            continue
        xa, xb = ta.load().reshape(-1), tb.load().reshape(-1)
        if xa.shape != xb.shape:
            ctx.finding("weight_mismatch", la.id, lb.id, f"{attr} shape differs", "")
            continue
        m = weight_metrics(xa, xb)
        tol = ctx.tolerance(ta.dtype, tb.dtype)
        scale = max(1.0, float(np.max(np.abs(xa)))) if xa.size else 1.0
        if m["max_abs"] > 2 * tol * scale and m["rel_l2"] > tol:
            ctx.finding("weight_mismatch", la.id, lb.id, f"{attr} differs: rel L2 {m['rel_l2']:.3g}, max abs "
                        f"{m['max_abs']:.3g} (tolerance for {tb.dtype}: {tol:g})", "", **m)


def _compare_scale(ctx: Context, la: NormLayer, lb: NormLayer, sa: np.ndarray, sb: np.ndarray,
                   m: dict[str, float]) -> None:
    tol = ctx.tolerance(la.dtype, lb.dtype)
    atol = 2 * tol * max(1.0, float(np.max(np.abs(sa)))) if sa.size else 2 * tol
    if m["rel_l2"] <= tol and m["max_abs"] <= atol:
        return
    d = sb.astype(np.float64) - sa.astype(np.float64)
    for offset, what in ((1.0, "applied twice"), (-1.0, "missing")):
        if np.all(np.abs(d - offset) <= atol):
            ctx.finding("convention_mismatch", la.id, lb.id,
                        f"B's effective scale is A's {offset:+g} on every channel: the (1 + w) shift is {what} "
                        f"(A: {conv_text(la)}, B: {conv_text(lb)})",
                        "Gemma-style norms compute x*(1+w); converters that bake the +1 in must do it exactly "
                        "once" + (" (B stores 1 + w on top of an already shifted weight)" if offset > 0 else ""),
                        group=offset, offset=offset)
            return
    if np.all(sb == 1.0) and not np.all(sa == 1.0) or (
            lb.convention is Convention.ONE_PLUS and lb.weight is not None
            and np.all(lb.weight.load() == 0) and not np.all(sa == 1.0)):
        ctx.finding("weight_at_init", la.id, lb.id, "B's norm weight is at its initial value (all ones) while A's "
                    "is trained", "the tensor was probably left unmapped by the converter and initialised by default")
        return
    bad = np.flatnonzero(np.abs(d) > atol)
    where = (f"{len(bad)} of {d.size} channels differ (first: {bad[:5].tolist()})" if 0 < len(bad) < d.size
             else "all channels differ")
    ctx.finding("weight_mismatch", la.id, lb.id,
                f"weight differs: {where}; rel L2 {m['rel_l2']:.3g}, max abs {m['max_abs']:.3g}, "
                f"cosine {m['cosine']:.6f} (tolerance for {lb.dtype}: {tol:g})",
                "corrupted or wrongly mapped tensor", channels=bad[:64].tolist(), **m)


# -- storage ----------------------------------------------------------------------------------------------

def _merge_dtype(members: list[Finding]) -> Finding:
    first = members[0]
    return Finding("dtype_risk", first.severity, None, None, f"{first.message} ({len(members)} layers)", first.hint,
                   {"layers": [[m.a, m.b] for m in members]})


@check("dtype_risk", Severity.WARNING, scope="pair",
       description="norm weights stored quantized or in reduced precision", group_min=2, merge=_merge_dtype)
def dtype_risk(ctx: Context, pair: Pair) -> None:
    la, lb = pair.a, pair.b
    if lb.weight is not None and lb.dtype not in ("F32", "F64") and la.dtype in ("F32", "F64", ""):
        ctx.finding("dtype_risk", la.id, lb.id, f"norm weights stored as {lb.dtype} in B where converters keep F32",
                    "keep 1-D norm tensors in F32 (llama.cpp and ORT quantizers do); the norm amplifies their error",
                    group=lb.dtype)


def pair_convention(la: NormLayer, lb: NormLayer, b_format: str) -> str:
    """How each side applies its stored weight, e.g. ``1+w -> w (stored 1+w)`` for HF Gemma vs GGUF."""
    def one(layer: NormLayer) -> str:
        if layer.convention is Convention.ONE_PLUS:
            return "1+w"
        return "w (stored 1+w)" if layer.stored_one_plus else "w"

    a_text, b_text = one(la), one(lb)
    if a_text == "1+w" and b_text == "w" and b_format == "onnx":
        b_text = "w (1+w folded by the exporter)"
    return a_text if a_text == b_text else f"{a_text} -> {b_text}"

