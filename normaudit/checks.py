"""Static checks across a conversion: aligned norm pairs -> findings.

``compare(a, b)`` is the library entry point behind ``normaudit compare``.  No forward pass: only the
norm tensors (and, for BatchNorm folds, the conv weights involved) are read, lazily.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import kernels
from .config import Thresholds
from .match import Alignment, _GgufNames, _module_name, _n_blocks, align, gguf_arch_for
from .model import Convention, LinearOp, NormKind, NormLayer, NormModel


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}

CHECKS = {
    "eps_mismatch": "epsilon differs (compared as float32, or in the dtype the constant is stored in)",
    "eps_underflow": "epsilon is 0, or underflowed in the dtype it is stored in",
    "weight_mismatch": "norm weight/bias/running stats differ beyond what the storage dtype explains",
    "convention_mismatch": "effective scale off by exactly 1: the (1 + w) shift missing or applied twice",
    "missing_norm": "a norm of A has no counterpart in B",
    "extra_norm": "a norm of B has no counterpart in A",
    "norm_type_mismatch": "RMSNorm vs LayerNorm, bias lost, GroupNorm groups changed",
    "weight_at_init": "B's norm is all ones/zeros (left at init) while A's is not",
    "fold_mismatch": "a BatchNorm folded into a conv/linear does not match W*g/sqrt(var+eps)",
    "dtype_risk": "norm weights stored quantized or in reduced precision",
    "eps_unknown": "one side stores no epsilon, so it could not be compared",
    "architecture_mismatch": "A and B name different architectures: probably not a conversion of one model",
}


@dataclass
class Finding:
    check: str
    severity: Severity
    a: str | None
    b: str | None
    message: str
    hint: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity.value, "a": self.a, "b": self.b,
                "message": self.message, "hint": self.hint, **({"values": self.values} if self.values else {})}


@dataclass
class PairResult:
    a: str
    b: str
    kind: str
    eps_a: float | None
    eps_b: float | None
    aligned_by: str
    convention: str
    weight: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "kind": self.kind, "eps_a": self.eps_a, "eps_b": self.eps_b,
                "aligned_by": self.aligned_by, "convention": self.convention, "weight": self.weight}


@dataclass
class CompareReport:
    a: NormModel
    b: NormModel
    pairs: list[PairResult]
    findings: list[Finding]
    fail_on: Severity = Severity.ERROR

    def failing(self) -> list[Finding]:
        return [f for f in self.findings if SEVERITY_RANK[f.severity] >= SEVERITY_RANK[self.fail_on]]

    @property
    def passed(self) -> bool:
        return not self.failing()

    def to_dict(self) -> dict[str, Any]:
        def side(m: NormModel) -> dict[str, Any]:
            return {"path": m.path, "format": m.format, "container": m.container, "architecture": m.architecture,
                    "counts": m.counts(), "norms": [n.to_dict(stats=False) for n in m.norms]}

        return {"schema": "normaudit.compare/1", "a": side(self.a), "b": side(self.b),
                "pairs": [p.to_dict() for p in self.pairs], "findings": [f.to_dict() for f in self.findings],
                "fail_on": self.fail_on.value, "passed": self.passed}


# -- metrics -----------------------------------------------------------------------------------------

def weight_metrics(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """max abs, relative L2 and cosine of y against reference x (the pair fields of the JSON schema)."""
    m = kernels.diff_metrics(x, y)
    return {k: m[k] for k in ("max_abs", "rel_l2", "cosine")}


def _f32(x: float) -> float:
    return float(np.float32(x))


def _eps_in_dtype(eps: float, dtype: str) -> float:
    """eps as the dtype its constant is stored in represents it (F16 underflows below ~6e-8)."""
    return float(np.float16(eps)) if dtype == "F16" else _f32(eps)


# -- pair checks ---------------------------------------------------------------------------------------

_MODEL_WIDE = ("gguf_metadata", "hf_config")


class _Checker:
    def __init__(self, a: NormModel, b: NormModel, th: Thresholds) -> None:
        self.a, self.b, self.th = a, b, th
        self.findings: list[Finding] = []
        self.pairs: list[PairResult] = []
        self._eps_groups: dict[tuple, list[tuple[NormLayer, NormLayer]]] = {}

    def add(self, check: str, severity: Severity, a: str | None, b: str | None, message: str, hint: str = "",
            **values: Any) -> None:
        self.findings.append(Finding(check, severity, a, b, message, hint, values))

    # eps -------------------------------------------------------------------------------------------
    def eps(self, la: NormLayer, lb: NormLayer) -> None:
        if la.eps is None or lb.eps is None:
            return
        for layer, other, side in ((lb, la, "B"), (la, lb, "A")):
            if layer.eps == 0 and other.eps and other.eps > 0:
                how = (f"the constant is stored as {layer.eps_dtype}, where {other.eps:g} underflows to 0"
                       if layer.eps_dtype in ("F16", "BF16") and _eps_in_dtype(other.eps, layer.eps_dtype) == 0
                       else "eps is 0")
                self.add("eps_underflow", Severity.ERROR, la.id, lb.id,
                         f"{side} {layer.id}: eps 0 where the other side has {other.eps:g} ({how})",
                         "keep the eps constant in float32 (export the norm in fp32 or as a fused op with an "
                         "epsilon attribute)", eps_a=la.eps, eps_b=lb.eps)
                return
        # compare in the lowest precision either constant is stored in
        dtype = "F16" if "F16" in (la.eps_dtype, lb.eps_dtype) else "F32"
        ea, eb = _eps_in_dtype(la.eps, dtype), _eps_in_dtype(lb.eps, dtype)
        if abs(ea - eb) <= self.th.eps_rtol * max(abs(ea), abs(eb)):
            return
        # one key (a GGUF metadata key, a config.json entry) sets every layer's eps: group them to one finding
        wide = [f"{x.eps_source.value}:{x.eps_detail}" for x in (la, lb) if x.eps_source.value in _MODEL_WIDE]
        key = (ea, eb, tuple(wide) if wide else (la.id, lb.id))
        self._eps_groups.setdefault(key, []).append((la, lb))

    def flush_eps(self) -> None:
        for (_ea, _eb, wide), members in self._eps_groups.items():
            la, lb = members[0]
            where_b = f"{_src_text(lb)} is {lb.eps:g}"
            where_a = f"{_src_text(la)} says {la.eps:g}"
            hint = _eps_hint(la, lb)
            if len(members) > 1 and isinstance(wide[0], str) and wide[0].split(":")[0] in _MODEL_WIDE:
                self.add("eps_mismatch", Severity.ERROR, None, None,
                         f"model-wide: {where_b}, {where_a} ({len(members)} layers)", hint,
                         eps_a=la.eps, eps_b=lb.eps, layers=[[x.id, y.id] for x, y in members])
            else:
                for la, lb in members:
                    self.add("eps_mismatch", Severity.ERROR, la.id, lb.id,
                             f"eps {la.eps:g} in A, {lb.eps:g} in B ({_src_text(lb)})", hint,
                             eps_a=la.eps, eps_b=lb.eps)

    # kinds ------------------------------------------------------------------------------------------
    def kind(self, la: NormLayer, lb: NormLayer) -> bool:
        if la.kind != lb.kind:
            what = {frozenset({NormKind.RMS_NORM, NormKind.LAYER_NORM}):
                    "mean centring " + ("added" if lb.kind is NormKind.LAYER_NORM else "dropped")}.get(
                frozenset({la.kind, lb.kind}), "different normalization")
            self.add("norm_type_mismatch", Severity.ERROR, la.id, lb.id,
                     f"{la.kind.value} in A, {lb.kind.value} in B ({what})",
                     "the converter mapped the layer to the wrong norm op (cf. RMSNorm vs LayerNorm swaps)",
                     kind_a=la.kind.value, kind_b=lb.kind.value)
            return False
        if la.kind is NormKind.GROUP_NORM and la.num_groups and lb.num_groups and la.num_groups != lb.num_groups:
            self.add("norm_type_mismatch", Severity.ERROR, la.id, lb.id,
                     f"GroupNorm groups {la.num_groups} in A, {lb.num_groups} in B", "groups must be preserved",
                     groups_a=la.num_groups, groups_b=lb.num_groups)
        if la.bias is not None and lb.bias is None and la.kind is not NormKind.RMS_NORM:
            if np.any(la.bias.load() != 0):
                self.add("norm_type_mismatch", Severity.ERROR, la.id, lb.id,
                         f"bias lost: A's {la.kind.value} has a non-zero bias, B's has none",
                         "map the .bias tensor too")
        return True

    # weights ----------------------------------------------------------------------------------------
    def tolerance(self, *dtypes: str) -> float:
        return max(self.th.rel_l2_for(d) for d in dtypes if d) if any(dtypes) else self.th.rel_l2_for("F32")

    def weights(self, la: NormLayer, lb: NormLayer) -> dict[str, float] | None:
        sa, sb = la.scale(), lb.scale()
        metrics = None
        if sa is not None and sb is not None:
            sa, sb = sa.reshape(-1), sb.reshape(-1)
            if sa.shape != sb.shape:
                self.add("weight_mismatch", Severity.ERROR, la.id, lb.id,
                         f"weight shape {tuple(la.shape)} in A, {tuple(lb.shape)} in B", "")
                return None
            metrics = weight_metrics(sa, sb)
            self._compare_scale(la, lb, sa, sb, metrics)
        elif (sa is None) != (sb is None):
            has, lacks = ("A", "B") if sa is not None else ("B", "A")
            self.add("weight_mismatch", Severity.ERROR, la.id, lb.id,
                     f"{has} has a norm weight, {lacks} has none", "map the .weight tensor")
        for attr in ("bias", "running_mean", "running_var"):
            ta, tb = getattr(la, attr), getattr(lb, attr)
            if ta is None or tb is None:
                continue
            xa, xb = ta.load().reshape(-1), tb.load().reshape(-1)
            if xa.shape != xb.shape:
                self.add("weight_mismatch", Severity.ERROR, la.id, lb.id, f"{attr} shape differs", "")
                continue
            m = weight_metrics(xa, xb)
            tol = self.tolerance(ta.dtype, tb.dtype)
            scale = max(1.0, float(np.max(np.abs(xa)))) if xa.size else 1.0
            if m["max_abs"] > 2 * tol * scale and m["rel_l2"] > tol:
                self.add("weight_mismatch", Severity.ERROR, la.id, lb.id,
                         f"{attr} differs: rel L2 {m['rel_l2']:.3g}, max abs {m['max_abs']:.3g} "
                         f"(tolerance for {tb.dtype}: {tol:g})", "", **m)
        return metrics

    def _compare_scale(self, la: NormLayer, lb: NormLayer, sa: np.ndarray, sb: np.ndarray,
                       m: dict[str, float]) -> None:
        tol = self.tolerance(la.dtype, lb.dtype)
        atol = 2 * tol * max(1.0, float(np.max(np.abs(sa))))
        if m["rel_l2"] <= tol and m["max_abs"] <= atol:
            return
        d = sb.astype(np.float64) - sa.astype(np.float64)
        for offset, what in ((1.0, "applied twice"), (-1.0, "missing")):
            if np.all(np.abs(d - offset) <= atol):
                self.add("convention_mismatch", Severity.ERROR, la.id, lb.id,
                         f"B's effective scale is A's {offset:+g} on every channel: the (1 + w) shift is {what} "
                         f"(A: {_conv_text(la)}, B: {_conv_text(lb)})",
                         "Gemma-style norms compute x*(1+w); converters that bake the +1 in must do it exactly "
                         "once" + (" (B stores 1 + w on top of an already shifted weight)" if offset > 0 else ""),
                         offset=offset)
                return
        if np.all(sb == 1.0) and not np.all(sa == 1.0) or (
                lb.convention is Convention.ONE_PLUS and lb.weight is not None
                and np.all(lb.weight.load() == 0) and not np.all(sa == 1.0)):
            self.add("weight_at_init", Severity.ERROR, la.id, lb.id,
                     "B's norm weight is at its initial value (all ones) while A's is trained",
                     "the tensor was probably left unmapped by the converter and initialised by default")
            return
        bad = np.flatnonzero(np.abs(d) > atol)
        where = (f"{len(bad)} of {d.size} channels differ (first: {bad[:5].tolist()})" if 0 < len(bad) < d.size
                 else "all channels differ")
        self.add("weight_mismatch", Severity.ERROR, la.id, lb.id,
                 f"weight differs: {where}; rel L2 {m['rel_l2']:.3g}, max abs {m['max_abs']:.3g}, "
                 f"cosine {m['cosine']:.6f} (tolerance for {lb.dtype}: {tol:g})",
                 "corrupted or wrongly mapped tensor", channels=bad[:64].tolist(), **m)

    def group_model_wide(self, check: str, key: str) -> None:
        """Several layers with the same finding of one cause (e.g. the shift dropped for every norm): one finding."""
        same = [f for f in self.findings if f.check == check]
        groups: dict[Any, list[Finding]] = {}
        for f in same:
            groups.setdefault(f.values.get(key), []).append(f)
        for value, members in groups.items():
            if len(members) < 2:
                continue
            first = members[0]
            for f in members:
                self.findings.remove(f)
            self.add(check, first.severity, None, None,
                     f"model-wide ({len(members)} layers, first {first.a} -> {first.b}): {first.message}",
                     first.hint, **{key: value, "layers": [[f.a, f.b] for f in members]})

    def dtype_risk(self, pairs: list[tuple[NormLayer, NormLayer]]) -> None:
        risky: dict[str, list[tuple[NormLayer, NormLayer]]] = {}
        for la, lb in pairs:
            if lb.weight is not None and lb.dtype not in ("F32", "F64") and la.dtype in ("F32", "F64", ""):
                risky.setdefault(lb.dtype, []).append((la, lb))
        for dtype, members in risky.items():
            la, lb = members[0]
            msg = f"norm weights stored as {dtype} in B where converters keep F32"
            hint = "keep 1-D norm tensors in F32 (llama.cpp and ORT quantizers do); the norm amplifies their error"
            if len(members) == 1:
                self.add("dtype_risk", Severity.WARNING, la.id, lb.id, msg, hint)
            else:
                self.add("dtype_risk", Severity.WARNING, None, None, f"{msg} ({len(members)} layers)", hint,
                         layers=[[x.id, y.id] for x, y in members])


def _src_text(layer: NormLayer) -> str:
    src = layer.eps_source.value
    if src == "gguf_metadata":
        return f"GGUF key {layer.eps_detail}"
    if src == "hf_config":
        return layer.eps_detail
    if src in ("onnx_constant", "onnx_attribute", "onnx_default"):
        return f"ONNX {src.split('_', 1)[1]} ({layer.eps_detail})"
    return f"{src} ({layer.eps_detail})" if layer.eps_detail else src


def _eps_hint(la: NormLayer, lb: NormLayer) -> str:
    if lb.eps_source.value == "gguf_metadata":
        return f"set {lb.eps_detail} to {la.eps:g} (e.g. gguf_set_metadata.py) or fix the converter's eps key"
    if lb.eps_source.value.startswith("onnx"):
        return f"re-export with eps {la.eps:g}, or patch the {'attribute' if 'attribute' in lb.eps_source.value else 'Add constant'}"
    return f"use eps {la.eps:g} as the source model does"


def _conv_text(layer: NormLayer) -> str:
    stored = any("stores 1 + w" in n for n in layer.notes)
    text = "x*(1+w)" if layer.convention is Convention.ONE_PLUS else "x*w"
    return text + (" with w stored as 1+w" if stored else "")


def _pair_convention(la: NormLayer, lb: NormLayer, b: NormModel) -> str:
    """How each side applies its stored weight, e.g. ``1+w -> w (stored 1+w)`` for HF Gemma vs GGUF."""
    def one(layer: NormLayer) -> str:
        if layer.convention is Convention.ONE_PLUS:
            return "1+w"
        return "w (stored 1+w)" if any("stores 1 + w" in n for n in layer.notes) else "w"

    a_text, b_text = one(la), one(lb)
    if a_text == "1+w" and b_text == "w" and b.format == "onnx":
        b_text = "w (1+w folded by the exporter)"
    return a_text if a_text == b_text else f"{a_text} -> {b_text}"


# -- folds -----------------------------------------------------------------------------------------------

def fold_target(bn: NormLayer, src: NormModel, dst: NormModel, used: set[str]) -> tuple[LinearOp | None,
                                                                                            LinearOp | None, str]:
    """(source conv feeding the BN, conv in dst it was folded into, how it was found)."""
    convs = {op.id: op for op in src.linear_ops}
    conv_a = convs.get(bn.producer)
    free = [op for op in dst.linear_ops if op.id not in used]
    if conv_a is None and src.tensors:  # no graph on the BN side (a state_dict): the exporter's names link them
        for op in free:
            ref = src.tensors.get(op.weight.name)
            if ref is not None and ref.shape == op.weight.shape and op.module in (bn.module, ""):
                bias_name = op.weight.name.rsplit(".", 1)[0] + ".bias"
                conv_a = LinearOp(op.weight.name.rsplit(".", 1)[0], op.op, ref, src.tensors.get(bias_name))
                return conv_a, op, "fold (weight name)"
    for op in free:
        if op.module and op.module == bn.module:
            return conv_a, op, "fold (scope)"
    if conv_a is not None:
        for op in free:
            if (op.module and op.module == conv_a.module) or op.weight.name == conv_a.weight.name:
                return conv_a, op, "fold (conv name)"
        same = [op for op in free if op.weight.shape == conv_a.weight.shape]
        if same:
            return conv_a, same[0], "fold (order)"
    return conv_a, None, ""


def _check_fold(ck: _Checker, bn: NormLayer, src: NormModel, dst: NormModel, used: set[str],
                bn_side: str) -> bool:
    """Verify a BatchNorm of ``src`` folded into a conv of ``dst``. Returns True if it was handled."""
    conv_a, conv_b, how = fold_target(bn, src, dst, used)
    if conv_b is None or conv_a is None or bn.running_var is None or bn.running_mean is None:
        return False
    used.add(conv_b.id)
    a_id, b_id = (bn.id, conv_b.id) if bn_side == "A" else (conv_b.id, bn.id)
    if conv_a.weight.shape != conv_b.weight.shape:
        ck.add("fold_mismatch", Severity.ERROR, a_id, b_id,
               f"BatchNorm {bn.id} should be folded into {conv_b.id}, but conv shapes differ "
               f"({conv_a.weight.shape} vs {conv_b.weight.shape})", "")
        return True
    w, var, mean = conv_a.weight.load(), bn.running_var.load().reshape(-1), bn.running_mean.load().reshape(-1)
    gamma = bn.weight.load().reshape(-1) if bn.weight is not None else None
    beta = bn.bias.load().reshape(-1) if bn.bias is not None else None
    wb = conv_b.weight.load()
    w2 = w.reshape(len(w), -1).astype(np.float64)
    f_act = (wb.reshape(len(wb), -1) * w2).sum(1) / np.maximum((w2 * w2).sum(1), 1e-30)
    eps_used = kernels.recover_bn_eps(f_act, var, gamma)
    # a BN side that stores no eps (a bare state_dict) is checked against the eps the fold itself used
    eps = bn.eps if bn.eps is not None else max(eps_used, 0.0)
    w_exp, b_exp = kernels.fold_batch_norm(w, conv_a.bias.load() if conv_a.bias else None, mean, var, gamma, beta, eps)
    bb = conv_b.bias.load().reshape(-1) if conv_b.bias is not None else np.zeros_like(b_exp)
    mw, mb = weight_metrics(w_exp, wb), weight_metrics(b_exp, bb)
    tol = ck.th.fold_rel_l2
    ck.pairs.append(PairResult(a_id, b_id, "batch_norm", bn.eps if bn_side == "A" else eps_used,
                               eps_used if bn_side == "A" else bn.eps, how, "folded into " + conv_b.op,
                               {"max_abs": mw["max_abs"], "rel_l2": mw["rel_l2"], "cosine": mw["cosine"],
                                "bias_rel_l2": mb["rel_l2"]}))
    if mw["rel_l2"] <= tol and mb["rel_l2"] <= tol:
        return True
    # is it the same fold with another eps?
    w_alt, b_alt = kernels.fold_batch_norm(w, conv_a.bias.load() if conv_a.bias else None, mean, var, gamma, beta,
                                           max(eps_used, 0.0))
    alt_ok = weight_metrics(w_alt, wb)["rel_l2"] <= max(tol * 10, 1e-5)
    if alt_ok and not np.isclose(eps_used, eps, rtol=0.05, atol=1e-9):
        ck.add("fold_mismatch", Severity.ERROR, a_id, b_id,
               f"BatchNorm {bn.id} was folded into {conv_b.id} with eps ≈ {eps_used:.3g}; the source BN uses "
               f"eps {eps:g}", "fold with the BatchNorm's own eps (check the exporter / fusion pass)",
               eps_used=eps_used, eps=eps, **mw)
    else:
        ck.add("fold_mismatch", Severity.ERROR, a_id, b_id,
               f"conv {conv_b.id} does not match BatchNorm {bn.id} folded into {conv_a.id}: weight rel L2 "
               f"{mw['rel_l2']:.3g}, bias rel L2 {mb['rel_l2']:.3g} (best-fit eps {eps_used:.3g})",
               "the fold used wrong statistics, gamma/beta or channel order", eps_used=eps_used, **mw)
    return True


# -- entry point -------------------------------------------------------------------------------------------

def compare(a: NormModel, b: NormModel, thresholds: Thresholds | None = None) -> CompareReport:
    """Align the norms of ``a`` (source) and ``b`` (converted) and run every static check."""
    th = thresholds or Thresholds()
    ck = _Checker(a, b, th)
    al: Alignment = align(a, b)
    for p in al.pairs:
        # a bare state_dict cannot tell x*w from x*(1+w): take the convention the other side knows
        if not p.a.convention_known and p.b.convention_known:
            p.a = replace(p.a, convention=p.b.convention, notes=p.a.notes + ["convention taken from B"])
        elif not p.b.convention_known and p.a.convention_known:
            p.b = replace(p.b, convention=p.a.convention, notes=p.b.notes + ["convention taken from A"])
        ck.eps(p.a, p.b)
        same_kind = ck.kind(p.a, p.b)
        metrics = ck.weights(p.a, p.b) if same_kind else None
        ck.pairs.append(PairResult(p.a.id, p.b.id, p.a.kind.value, p.a.eps, p.b.eps, p.method,
                                   _pair_convention(p.a, p.b, b), metrics))
    ck.flush_eps()
    ck.group_model_wide("convention_mismatch", "offset")
    arch_a, arch_b = gguf_arch_for(a), gguf_arch_for(b)
    if arch_a and arch_b and arch_a != arch_b:
        ck.add("architecture_mismatch", Severity.WARNING, None, None,
               f"A is {a.architecture} ({arch_a}), B is {b.architecture} ({arch_b})",
               "check that B was converted from A")
    ck.dtype_risk([(p.a, p.b) for p in al.pairs])

    used_a: set[str] = set()
    used_b: set[str] = set()
    to_gguf = _GgufNames(al.gguf_arch, _n_blocks(a, b)) if al.gguf_arch and b.format == "gguf" else None
    for la in al.missing:
        if la.kind is NormKind.BATCH_NORM and _check_fold(ck, la, a, b, used_b, "A"):
            continue
        role = "qk-norm " if la.role in ("qk_norm", "attn_q_norm", "attn_k_norm") else ""
        expected = to_gguf(_module_name(la)) if to_gguf else None
        hint = (f"expected GGUF tensor {expected}.weight; the converter did not map it" if expected else
                "the converter dropped or renamed this layer")
        severity = Severity.ERROR
        if la.kind is NormKind.BATCH_NORM and not a.linear_ops and b.linear_ops:
            severity = Severity.WARNING  # most likely folded, but A has no graph to prove which conv
            hint = ("B has convs it may be folded into, but A has no graph to tell which: compare the .pt2 / "
                    "TorchScript of A to verify the fold")
        ck.add("missing_norm", severity, la.id, None,
               f"{role}{la.kind.value} {la.id} of A has no counterpart in B", hint)
    for lb in al.extra:
        if lb.kind is NormKind.BATCH_NORM and _check_fold(ck, lb, b, a, used_a, "B"):
            continue
        ck.add("extra_norm", Severity.WARNING, None, lb.id, f"{lb.kind.value} {lb.id} of B has no counterpart in A",
               "a norm the source model does not have")

    unknown = [p for p in al.pairs if (p.a.eps is None) != (p.b.eps is None)]
    if unknown:
        side = "A" if unknown[0].a.eps is None else "B"
        ck.add("eps_unknown", Severity.INFO, None, None,
               f"{side} stores no eps for {len(unknown)} layers, so eps was not compared",
               "give a config.json (--config-a/--config-b) or a .pt2 / ONNX / GGUF file that records eps")
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    ck.findings.sort(key=lambda f: order[f.severity])
    return CompareReport(a, b, ck.pairs, ck.findings, fail_on=Severity(th.fail_on))
