"""Normalization math in one place (pure numpy), reused by checks, replay and test-model generation."""

from __future__ import annotations

import numpy as np


def _scale(w: np.ndarray | None, one_plus: bool) -> np.ndarray | float:
    if w is None:
        return 1.0
    return (1.0 + w) if one_plus else w


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float, one_plus: bool = False) -> np.ndarray:
    """y = x / sqrt(mean(x^2) + eps) * w   (or * (1 + w) with ``one_plus``), over the last axis."""
    x32 = x.astype(np.float32)
    inv = 1.0 / np.sqrt(np.mean(x32 * x32, axis=-1, keepdims=True) + np.float32(eps))
    return (x32 * inv * _scale(weight, one_plus)).astype(np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
               one_plus: bool = False) -> np.ndarray:
    """y = (x - mean) / sqrt(var + eps) * w + b over the last axis."""
    x32 = x.astype(np.float32)
    mu = x32.mean(axis=-1, keepdims=True)
    var = ((x32 - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x32 - mu) / np.sqrt(var + np.float32(eps)) * _scale(weight, one_plus)
    if bias is not None:
        y = y + bias
    return y.astype(np.float32)


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def group_norm(x: np.ndarray, num_groups: int, weight: np.ndarray | None, bias: np.ndarray | None,
               eps: float) -> np.ndarray:
    """GroupNorm over (N, C, *) with per-channel affine."""
    n, c = x.shape[:2]
    g = x.astype(np.float32).reshape(n, num_groups, -1)
    mu = g.mean(axis=-1, keepdims=True)
    var = g.var(axis=-1, keepdims=True)
    y = ((g - mu) / np.sqrt(var + np.float32(eps))).reshape(x.shape)
    if weight is not None:
        y = y * weight.reshape(_channel_shape(x))
    if bias is not None:
        y = y + bias.reshape(_channel_shape(x))
    return y.astype(np.float32)


def instance_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float) -> np.ndarray:
    """InstanceNorm = GroupNorm with one group per channel."""
    return group_norm(x, x.shape[1], weight, bias, eps)


def batch_norm(x: np.ndarray, mean: np.ndarray, var: np.ndarray, weight: np.ndarray | None,
               bias: np.ndarray | None, eps: float) -> np.ndarray:
    """Inference BatchNorm over (N, C, *) with running statistics."""
    shape = _channel_shape(x)
    y = (x.astype(np.float32) - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + np.float32(eps))
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y.astype(np.float32)


def bn_fold_factor(var: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """gamma / sqrt(var + eps), the per-output-channel factor a BN folds into the conv before it."""
    gamma = np.ones_like(var) if weight is None else weight
    return (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)


def fold_batch_norm(conv_weight: np.ndarray, conv_bias: np.ndarray | None, mean: np.ndarray, var: np.ndarray,
                    weight: np.ndarray | None, bias: np.ndarray | None, eps: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference BatchNorm into the conv (or linear) feeding it.

    Returns ``(W * f, (b - mean) * f + beta)`` with ``f = gamma / sqrt(var + eps)`` broadcast over the
    output-channel axis 0 of ``conv_weight``.
    """
    f = bn_fold_factor(var, weight, eps)
    w = conv_weight.astype(np.float32) * f.reshape((-1,) + (1,) * (conv_weight.ndim - 1))
    b0 = np.zeros_like(mean) if conv_bias is None else conv_bias
    beta = np.zeros_like(mean) if bias is None else bias
    return w.astype(np.float32), ((b0 - mean) * f + beta).astype(np.float32)


def recover_bn_eps(folded_factor: np.ndarray, var: np.ndarray, weight: np.ndarray | None) -> float:
    """Recover the eps a fold used from ``f = gamma / sqrt(var + eps)``: eps = (gamma / f)^2 - var (median)."""
    gamma = np.ones_like(var) if weight is None else weight
    f = folded_factor.astype(np.float64)
    ok = np.abs(f) > 0
    est = (gamma.astype(np.float64)[ok] / f[ok]) ** 2 - var.astype(np.float64)[ok]
    return float(np.median(est)) if est.size else float("nan")


def diff_metrics(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """max abs, mean abs, relative L2, cosine, SQNR (dB) of ``other`` against ``ref``, in float64.

    One definition for weight comparisons (compare), alignment by values and activation diffs.
    ``non_finite`` is set when ``other`` holds NaN/inf.
    """
    x, y = ref.astype(np.float64).reshape(-1), other.astype(np.float64).reshape(-1)
    d = y - x
    nx, ny, nd = np.linalg.norm(x), np.linalg.norm(y), np.linalg.norm(d)
    finite = bool(np.all(np.isfinite(y)))
    return {
        "max_abs": float(np.max(np.abs(d))) if d.size else 0.0,
        "mean_abs": float(np.mean(np.abs(d))) if d.size else 0.0,
        "rel_l2": float(nd / nx) if nx > 0 else float(nd),
        "cosine": float(np.dot(x, y) / (nx * ny)) if nx > 0 and ny > 0 else (1.0 if nx == ny else 0.0),
        "sqnr_db": float(10 * np.log10((nx * nx) / (nd * nd))) if nd > 0 and nx > 0 else float("inf"),
        **({} if finite else {"non_finite": True}),
    }


def tensor_stats(values: np.ndarray) -> dict[str, float]:
    v = values.astype(np.float64)
    return {"min": float(v.min()), "mean": float(v.mean()), "max": float(v.max())}


def apply_layer(layer, x: np.ndarray) -> np.ndarray:
    """Run one NormLayer record (any format) on ``x``: the same math every backend's norm computes.

    Used to tell a layer's own (local) error from inherited error: B's layer applied to A's input.
    """
    from .model import NormKind  # local import: kernels stays importable without the record types

    scale = layer.scale()
    bias = layer.bias.load() if layer.bias is not None else None
    eps = 1e-5 if layer.eps is None else layer.eps
    if layer.kind is NormKind.RMS_NORM:
        return rms_norm(x, None if scale is None else scale.reshape(-1), eps)
    if layer.kind is NormKind.LAYER_NORM:
        return layer_norm(x, None if scale is None else scale.reshape(-1), None if bias is None else bias.reshape(-1),
                          eps)
    def flat(t: np.ndarray | None) -> np.ndarray | None:
        return None if t is None else t.reshape(-1)

    if layer.kind is NormKind.GROUP_NORM:
        return group_norm(x, int(layer.num_groups or 1), flat(scale), flat(bias), eps)
    if layer.kind is NormKind.INSTANCE_NORM:
        return instance_norm(x, flat(scale), flat(bias), eps)
    if layer.kind is NormKind.BATCH_NORM:
        return batch_norm(x, layer.running_mean.load().reshape(-1), layer.running_var.load().reshape(-1), flat(scale),
                          flat(bias), eps)
    raise ValueError(f"no kernel for {layer.kind}")
