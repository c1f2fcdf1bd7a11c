"""BatchNorms folded into the conv / ConvTranspose / Gemm before them: find the layer the BN went into, and verify
the fold.  Weights are compared with their output channels first (kernels.out_channels_first), so the two sides
may lay them out differently (a torch Linear's [out, in] against a Gemm with transB=0's [in, out])."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..model import LinearOp, NormLayer, NormModel
from .base import Context, PairResult, Severity, check
from .pair import weight_metrics


def _out_first_shape(op: LinearOp) -> tuple[int, ...] | None:
    shape = tuple(op.weight.shape)
    if op.out_axis == 0:
        return shape
    if len(shape) < 2 or op.groups < 1 or shape[0] % op.groups:
        return None
    return (shape[1] * op.groups, shape[0] // op.groups) + shape[2:]


def same_module(x: str, y: str) -> bool:
    """Module paths naming one module, whatever wrapper prefix an exporter added (``m.resnet.x`` ~ ``resnet.x``)."""
    return bool(x) and bool(y) and (x == y or x.endswith("." + y) or y.endswith("." + x))


def _tensor(src: NormModel, name: str) -> tuple[str, object] | None:
    """A checkpoint tensor named by an exported weight, tolerant of the exporter's wrapper prefix."""
    parts = name.split(".")
    for i in range(min(3, len(parts))):
        key = ".".join(parts[i:])
        if key in src.tensors:
            return key, src.tensors[key]
    return None


def fold_target(bn: NormLayer, src: NormModel, dst: NormModel, used: set[str]) -> tuple[LinearOp | None,
                                                                                            LinearOp | None, str]:
    """(source conv feeding the BN, conv in dst it was folded into, how it was found)."""
    convs = {op.id: op for op in src.linear_ops}
    conv_a = convs.get(bn.producer)
    free = [op for op in dst.linear_ops if op.id not in used]
    if conv_a is None and src.tensors:  # no graph on the BN side (a state_dict): the exporter's names link them
        for op in free:
            hit = _tensor(src, op.weight.name)
            if hit is None or (op.module and not same_module(op.module, bn.module)):
                continue
            key, ref = hit
            base = key.rsplit(".", 1)[0]
            layout = None
            if ref.shape == op.weight.shape:
                layout = op.layout()
            elif op.op == "linear" and op.out_axis == 1 and ref.shape == tuple(reversed(op.weight.shape)):
                layout = {"out_axis": 0, "groups": 1}  # torch's Linear [out, in] against a Gemm with transB=0
            if layout is not None:
                conv_a = LinearOp(base, op.op, ref, src.tensors.get(base + ".bias"), **layout)
                return conv_a, op, "fold (weight name)"
    for op in free:
        if same_module(op.module, bn.module):
            return conv_a, op, "fold (scope)"
    if conv_a is not None:
        for op in free:
            if same_module(op.module, conv_a.module) or op.weight.name == conv_a.weight.name:
                return conv_a, op, "fold (conv name)"
        same = [op for op in free if _out_first_shape(op) == _out_first_shape(conv_a)]
        if same:
            return conv_a, same[0], "fold (order)"
    return conv_a, None, ""


def _effective(op: LinearOp) -> tuple[np.ndarray, np.ndarray | None]:
    """The layer's weight with output channels first and its bias, each with Gemm's alpha / beta applied."""
    w = kernels.out_channels_first(op.weight.load(), op.out_axis, op.groups)
    if op.alpha != 1.0:
        w = (w * np.float32(op.alpha)).astype(np.float32)
    b = op.bias.load().reshape(-1) if op.bias is not None else None
    if b is not None and op.beta != 1.0:
        b = (b * np.float32(op.beta)).astype(np.float32)
    return w, b


@check("fold_mismatch", Severity.ERROR, scope="fold",
       description="a BatchNorm folded into a conv/ConvTranspose/Gemm does not match W*g/sqrt(var+eps) and "
                   "(b - mean)*g/sqrt(var+eps) + beta; the eps actually used is recovered from the folded weights")
def fold(ctx: Context, bn: NormLayer, src: NormModel, dst: NormModel, used: set[str], bn_side: str) -> bool:
    """Verify a BatchNorm of ``src`` folded into a conv of ``dst``. Returns True if it was handled."""
    conv_a, conv_b, how = fold_target(bn, src, dst, used)
    if conv_b is None or conv_a is None or bn.running_var is None or bn.running_mean is None:
        return False
    used.add(conv_b.id)
    a_id, b_id = (bn.id, conv_b.id) if bn_side == "A" else (conv_b.id, bn.id)
    shape_a, shape_b = _out_first_shape(conv_a), _out_first_shape(conv_b)
    if shape_a is None or shape_a != shape_b:
        ctx.finding("fold_mismatch", a_id, b_id, f"BatchNorm {bn.id} should be folded into {conv_b.id}, but conv "
                    f"shapes differ ({conv_a.weight.shape} vs {conv_b.weight.shape})", "")
        return True
    w, conv_bias = _effective(conv_a)
    wb, bb = _effective(conv_b)
    var, mean = bn.running_var.load().reshape(-1), bn.running_mean.load().reshape(-1)
    gamma = bn.weight.load().reshape(-1) if bn.weight is not None else None
    beta = bn.bias.load().reshape(-1) if bn.bias is not None else None
    if not (len(w) == len(var) == len(mean)):
        ctx.finding("fold_mismatch", a_id, b_id, f"BatchNorm {bn.id} has {len(var)} channels, conv {conv_a.id} "
                    f"has {len(w)} outputs", "")
        return True
    eps_used = kernels.recover_bn_eps(kernels.fit_fold_factor(w, wb), var, gamma)
    # a BN side that stores no eps (a bare state_dict) is checked against the eps the fold itself used
    eps = bn.eps if bn.eps is not None else max(eps_used, 0.0)
    w_exp, b_exp = kernels.fold_batch_norm(w, conv_bias, mean, var, gamma, beta, eps)
    bb = bb if bb is not None else np.zeros_like(b_exp)
    mw, mb = weight_metrics(w_exp, wb), weight_metrics(b_exp, bb)
    tol = ctx.th.fold_rel_l2
    ctx.pairs.append(PairResult(a_id, b_id, "batch_norm", bn.eps if bn_side == "A" else eps_used,
                                eps_used if bn_side == "A" else bn.eps, how, "folded into " + conv_b.op,
                                {"max_abs": mw["max_abs"], "rel_l2": mw["rel_l2"], "cosine": mw["cosine"],
                                 "bias_rel_l2": mb["rel_l2"]}))
    if mw["rel_l2"] <= tol and mb["rel_l2"] <= tol:
        return True
    # is it the same fold with another eps?
    w_alt, _ = kernels.fold_batch_norm(w, conv_bias, mean, var, gamma, beta, max(eps_used, 0.0))
    alt_ok = weight_metrics(w_alt, wb)["rel_l2"] <= max(tol * 10, 1e-5)
    if alt_ok and not np.isclose(eps_used, eps, rtol=0.05, atol=1e-9):
        ctx.finding("fold_mismatch", a_id, b_id, f"BatchNorm {bn.id} was folded into {conv_b.id} with eps ≈ "
                    f"{eps_used:.3g}; the source BN uses eps {eps:g}",
                    "fold with the BatchNorm's own eps (check the exporter / fusion pass)",
                    eps_used=eps_used, eps=eps, **mw)
    elif mw["rel_l2"] <= tol and _without_mean(conv_bias, mean, var, gamma, beta, eps, bb, tol):
        ctx.finding("fold_mismatch", a_id, b_id, f"the bias of {conv_b.id} is BatchNorm {bn.id} folded without its "
                    f"running mean: b*g/sqrt(var+eps) + beta instead of (b - mean)*g/sqrt(var+eps) + beta "
                    f"(bias rel L2 {mb['rel_l2']:.3g})", "subtract the running mean before scaling the bias",
                    bias_rel_l2=mb["rel_l2"], **mw)
    else:
        ctx.finding("fold_mismatch", a_id, b_id, f"conv {conv_b.id} does not match BatchNorm {bn.id} folded into "
                    f"{conv_a.id}: weight rel L2 {mw['rel_l2']:.3g}, bias rel L2 {mb['rel_l2']:.3g} (best-fit eps "
                    f"{eps_used:.3g})", "the fold used wrong statistics, gamma/beta or channel order",
                    eps_used=eps_used, bias_rel_l2=mb["rel_l2"], **mw)
    return True


def _without_mean(conv_bias: np.ndarray | None, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray | None,
                  beta: np.ndarray | None, eps: float, bias_b: np.ndarray, tol: float) -> bool:
    """Whether B's bias is the fold with the running mean left out."""
    _, b_no_mean = kernels.fold_batch_norm(np.zeros((len(var), 1), np.float32), conv_bias, np.zeros_like(mean),
                                           var, gamma, beta, eps)
    return weight_metrics(b_no_mean, bias_b)["rel_l2"] <= max(tol * 10, 1e-5)
