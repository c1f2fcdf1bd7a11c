"""All normalization math in one place (pure numpy), reused by checks, activation replays and test-model
generation: axis-aware norms, the ``1 + w`` convention, BatchNorm folding and eps recovery, llama.cpp's Q/K
row permutation, and the diff metrics every comparison uses."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# -- the 1 + w convention ------------------------------------------------------------------------------


def effective_scale(w: np.ndarray, one_plus: bool) -> np.ndarray:
    """The multiplier a norm applies: ``w``, or ``1 + w`` for Gemma-style norms."""
    return w + np.float32(1.0) if one_plus else w


def store_one_plus(w: np.ndarray) -> np.ndarray:
    """What a converter that bakes the shift in stores for a ``1 + w`` norm (llama.cpp for Gemma)."""
    return w + np.float32(1.0)


def unstore_one_plus(stored: np.ndarray) -> np.ndarray:
    """Inverse of :func:`store_one_plus`: the source model's ``w`` back from the stored ``1 + w``."""
    return stored - np.float32(1.0)


# -- norms -----------------------------------------------------------------------------------------------


def _scale(w: np.ndarray | None, one_plus: bool) -> np.ndarray | float:
    return 1.0 if w is None else effective_scale(w, one_plus)


def _last_axes(ndim: int, axis: int | tuple[int, ...], exact: bool = False) -> tuple[int, ...]:
    """Normalized axes of a layer/RMS norm: ``axis`` k means k..last (ONNX LayerNormalization's meaning);
    several axes, or ``exact``, mean exactly those (a channels-first LayerNorm normalizes axis 1 only)."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if len(axes) == 1 and not exact:
        return tuple(range(axes[0] % ndim, ndim))
    return tuple(sorted({a % ndim for a in axes}))


def _affine(t: np.ndarray | float | None, x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray | float | None:
    """A per-feature weight/bias laid out to broadcast over the normalized axes of x."""
    if t is None or isinstance(t, float):
        return t
    t = np.asarray(t)
    if t.ndim > 1 and t.ndim <= x.ndim and all(d in (1, s) for d, s in zip(t.shape, x.shape[x.ndim - t.ndim:])):
        return t  # already laid out like the trailing axes: a per-head (2-D) weight, a channels-first [C, 1, 1]
    shape = [1] * x.ndim
    for a in axes:
        shape[a] = x.shape[a]
    return np.asarray(t).reshape(shape)


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float, one_plus: bool = False,
             axis: int | tuple[int, ...] = -1, exact: bool = False) -> np.ndarray:
    """y = x / sqrt(mean(x^2) + eps) * w   (or * (1 + w) with ``one_plus``) over ``axis`` (k..last, or exactly
    the listed axes with ``exact``)."""
    x32 = x.astype(np.float32)
    axes = _last_axes(x.ndim, axis, exact)
    inv = 1.0 / np.sqrt(np.mean(x32 * x32, axis=axes, keepdims=True) + np.float32(eps))
    return (x32 * inv * _affine(_scale(weight, one_plus), x32, axes)).astype(np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
               one_plus: bool = False, axis: int | tuple[int, ...] = -1, exact: bool = False) -> np.ndarray:
    """y = (x - mean) / sqrt(var + eps) * w + b over ``axis`` (k..last, or exactly the listed axes with
    ``exact``: a channels-first LayerNorm over (N, C, H, W) is ``axis=(1,), exact=True``)."""
    x32 = x.astype(np.float32)
    axes = _last_axes(x.ndim, axis, exact)
    mu = x32.mean(axis=axes, keepdims=True)
    var = ((x32 - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x32 - mu) / np.sqrt(var + np.float32(eps)) * _affine(_scale(weight, one_plus), x32, axes)
    if bias is not None:
        y = y + _affine(bias, x32, axes)
    return y.astype(np.float32)


def _channel_shape(x: np.ndarray, axis: int = 1) -> tuple[int, ...]:
    shape = [1] * x.ndim
    shape[axis % x.ndim] = x.shape[axis % x.ndim]
    return tuple(shape)


def group_norm(x: np.ndarray, num_groups: int, weight: np.ndarray | None, bias: np.ndarray | None,
               eps: float) -> np.ndarray:
    """GroupNorm over (N, C, *) with per-channel affine."""
    n = x.shape[0]
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
               bias: np.ndarray | None, eps: float, axis: int = 1) -> np.ndarray:
    """Inference BatchNorm over (N, C, *) with running statistics (channel ``axis``)."""
    shape = _channel_shape(x, axis)
    y = (x.astype(np.float32) - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + np.float32(eps))
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y.astype(np.float32)


def apply_layer(layer: Any, x: np.ndarray) -> np.ndarray:
    """Run one NormLayer record (any format) on ``x``: the same math every backend's norm computes.

    Uses the layer's own eps, axis, weights and convention.  Raises ValueError when the record does not say
    enough to compute the layer (no eps, no running statistics): there is no default to hide behind.
    Used to tell a layer's own (local) error from inherited error: B's layer applied to A's input.
    """
    from .model import NormKind  # local import: kernels stays importable without the record types

    if layer.eps is None:
        raise ValueError(f"{layer.id}: eps unknown")
    eps = float(layer.eps)

    def flat(t: Any) -> np.ndarray | None:
        return None if t is None else np.asarray(t).reshape(-1)

    axis = layer.axis
    exact = bool(getattr(layer, "axes_exact", False))
    if layer.kind in (NormKind.RMS_NORM, NormKind.LAYER_NORM):  # weights keep their shape (per-head norms)
        w = layer.scale()
        if layer.kind is NormKind.RMS_NORM:
            return rms_norm(x, w, eps, axis=axis, exact=exact)
        return layer_norm(x, w, layer.bias.load() if layer.bias is not None else None, eps, axis=axis,
                          exact=exact)
    scale = flat(layer.scale())
    bias = flat(layer.bias.load()) if layer.bias is not None else None
    if layer.kind is NormKind.GROUP_NORM:
        return group_norm(x, int(layer.num_groups or 1), scale, bias, eps)
    if layer.kind is NormKind.INSTANCE_NORM:
        return instance_norm(x, scale, bias, eps)
    if layer.kind is NormKind.BATCH_NORM:
        if layer.running_mean is None or layer.running_var is None:
            raise ValueError(f"{layer.id}: BatchNorm without running statistics")
        return batch_norm(x, flat(layer.running_mean.load()), flat(layer.running_var.load()), scale, bias, eps,
                          axis=axis[0] if axis else 1)
    raise ValueError(f"no kernel for {layer.kind}")


# -- BatchNorm folding -----------------------------------------------------------------------------------


def bn_fold_factor(var: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """gamma / sqrt(var + eps), the per-output-channel factor a BN folds into the conv before it."""
    gamma = np.ones_like(var) if weight is None else weight
    return (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)


def out_channels_first(w: np.ndarray, out_axis: int = 0, groups: int = 1) -> np.ndarray:
    """A conv/linear weight with its output channels on axis 0 ([C_out, ...]).

    ``out_axis`` 0: the weight as is (Conv, also depthwise/grouped: [C_out, C_in/groups, k...]; a linear
    [out, in]).  ``out_axis`` 1: ConvTranspose's [C_in, C_out/groups, k...] (output channel ``g * C_out/groups
    + j`` is column ``j`` of the rows of group ``g``) or a Gemm weight with transB=0 ([in, out], ``groups`` 1)."""
    if out_axis == 0:
        return w
    if out_axis != 1 or w.ndim < 2 or groups < 1 or w.shape[0] % groups:
        raise ValueError(f"weight {list(w.shape)} has no output-channel axis {out_axis} in {groups} groups")
    cin, per_group = w.shape[0], w.shape[1]
    v = w.reshape(groups, cin // groups, per_group, *w.shape[2:]).swapaxes(1, 2)
    return v.reshape(groups * per_group, cin // groups, *w.shape[2:])


def from_out_channels_first(w_first: np.ndarray, shape: tuple[int, ...], out_axis: int = 0,
                            groups: int = 1) -> np.ndarray:
    """Inverse of :func:`out_channels_first`: back to the layout ``shape`` of the original weight."""
    if out_axis == 0:
        return w_first.reshape(shape)
    cin, per_group = shape[0], shape[1]
    v = w_first.reshape(groups, per_group, cin // groups, *shape[2:]).swapaxes(1, 2)
    return v.reshape(shape)


def fold_batch_norm(conv_weight: np.ndarray, conv_bias: np.ndarray | None, mean: np.ndarray, var: np.ndarray,
                    weight: np.ndarray | None, bias: np.ndarray | None, eps: float, out_axis: int = 0,
                    groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference BatchNorm into the conv (or linear) feeding it.

    Returns ``(W * f, (b - mean) * f + beta)`` with ``f = gamma / sqrt(var + eps)`` broadcast over the
    output channels of ``conv_weight`` (axis ``out_axis`` in ``groups``, see :func:`out_channels_first`), in
    ``conv_weight``'s own layout.
    """
    f = bn_fold_factor(var, weight, eps)
    first = out_channels_first(conv_weight.astype(np.float32), out_axis, groups)
    w = from_out_channels_first(first * f.reshape((-1,) + (1,) * (first.ndim - 1)), conv_weight.shape, out_axis,
                                groups)
    b0 = np.zeros_like(mean) if conv_bias is None else conv_bias
    beta = np.zeros_like(mean) if bias is None else bias
    return w.astype(np.float32), ((b0 - mean) * f + beta).astype(np.float32)


def fit_fold_factor(source_weight: np.ndarray, folded_weight: np.ndarray, out_axis: int = 0,
                    groups: int = 1) -> np.ndarray:
    """Per-output-channel factor f (least squares) with ``folded ≈ f * source``: what a fold multiplied by.
    Both weights in the layout ``out_axis``/``groups`` says (see :func:`out_channels_first`)."""
    src = out_channels_first(source_weight, out_axis, groups)
    dst = out_channels_first(folded_weight, out_axis, groups)
    w = src.reshape(len(src), -1).astype(np.float64)
    wb = dst.reshape(len(dst), -1).astype(np.float64)
    return (wb * w).sum(1) / np.maximum((w * w).sum(1), 1e-30)


def recover_bn_eps(folded_factor: np.ndarray, var: np.ndarray, weight: np.ndarray | None) -> float:
    """Recover the eps a fold used from ``f = gamma / sqrt(var + eps)``: eps = (gamma / f)^2 - var (median)."""
    gamma = np.ones_like(var) if weight is None else weight
    f = folded_factor.astype(np.float64)
    ok = np.abs(f) > 0
    est = (gamma.astype(np.float64)[ok] / f[ok]) ** 2 - var.astype(np.float64)[ok]
    return float(np.median(est)) if est.size else float("nan")


# -- llama.cpp's Q/K row permutation ---------------------------------------------------------------------


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter permutation of Q/K projection rows (HF rotate-half RoPE -> GGML interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk`."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk_rows(n_rows: int, n_head: int) -> np.ndarray:
    """:func:`unpermute_qk` as a row destination: ``unpermute_qk(w, n_head)[rows[i]] == w[i]`` (so a reader can
    put each stored row in place as it reads, without a second full-size array)."""
    src = unpermute_qk(np.arange(n_rows), n_head)
    rows = np.empty_like(src)
    rows[src] = np.arange(n_rows)
    return rows


# -- metrics ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffMetrics:
    """How far ``other`` is from ``ref``: one definition for weight comparisons, alignment by values and
    activation diffs (computed in float64)."""

    max_abs: float
    mean_abs: float
    rel_l2: float
    cosine: float
    sqnr_db: float
    non_finite: bool = False  # ``other`` holds NaN / inf

    @classmethod
    def from_arrays(cls, ref: np.ndarray, other: np.ndarray) -> "DiffMetrics":
        x, y = ref.astype(np.float64).reshape(-1), other.astype(np.float64).reshape(-1)
        d = y - x
        nx, ny, nd = np.linalg.norm(x), np.linalg.norm(y), np.linalg.norm(d)
        return cls(
            max_abs=float(np.max(np.abs(d))) if d.size else 0.0,
            mean_abs=float(np.mean(np.abs(d))) if d.size else 0.0,
            rel_l2=float(nd / nx) if nx > 0 else float(nd),
            cosine=float(np.dot(x, y) / (nx * ny)) if nx > 0 and ny > 0 else (1.0 if nx == ny else 0.0),
            sqnr_db=float(10 * np.log10((nx * nx) / (nd * nd))) if nd > 0 and nx > 0 else math.inf,
            non_finite=not bool(np.all(np.isfinite(y))),
        )

    def to_dict(self, *fields: str) -> dict[str, Any]:
        """The metrics as a dict (only ``fields`` when given); ``non_finite`` only when set."""
        out = asdict(self)
        if not self.non_finite:
            out.pop("non_finite")
        return {k: out[k] for k in fields if k in out} if fields else out


def diff_metrics(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """:class:`DiffMetrics` of ``other`` against ``ref`` as a dict (max_abs, mean_abs, rel_l2, cosine, sqnr_db)."""
    return DiffMetrics.from_arrays(ref, other).to_dict()


def rel_l2_error(ref: np.ndarray, other: np.ndarray, chunk: int = 1 << 20) -> float:
    """||other - ref|| / ||ref|| of two same-size tensors in float32, in chunks through one small buffer: a 7B
    block's weights need no full-size difference array (whose page faults cost more than the arithmetic).
    Relative precision: a few 1e-7 (float32 dots over 1M-value chunks, summed in float64).

    When torch is already loaded (activation runs) the dots are torch's, which follow ``torch.set_num_threads``:
    numpy's OpenBLAS starts its own threads for long dots, and their spinning slows the background weight reads
    of a streamed run on a 2-core machine by ~15%."""
    r = np.asarray(ref, dtype=np.float32).reshape(-1)
    o = np.asarray(other, dtype=np.float32).reshape(-1)
    if r.size != o.size:
        raise ValueError(f"rel_l2_error: sizes differ ({r.size} vs {o.size})")
    torch = sys.modules.get("torch")
    if torch is not None:
        r, o = torch.from_numpy(np.ascontiguousarray(r)), torch.from_numpy(np.ascontiguousarray(o))
        buf, sub, dot = torch.empty(min(chunk, max(1, r.numel())), dtype=torch.float32), torch.sub, torch.dot
    else:
        buf, sub, dot = np.empty(min(chunk, max(1, r.size)), dtype=np.float32), np.subtract, np.dot
    num = den = 0.0
    n = int(buf.shape[0])
    for i in range(0, int(r.shape[0]), n):
        x, y = r[i:i + n], o[i:i + n]
        d = buf[:x.shape[0]]
        sub(y, x, out=d)
        num += float(dot(d, d))
        den += float(dot(x, x))
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


def tensor_stats(values: np.ndarray) -> dict[str, float]:
    v = values.astype(np.float64)
    return {"min": float(v.min()), "mean": float(v.mean()), "max": float(v.max())}


def next_token_metrics(ref_logits: np.ndarray, other_logits: np.ndarray) -> dict[str, float]:
    """How two language models' next-token distributions differ over the input tokens (the figures
    ``llama-perplexity --kl-divergence`` reports): mean and max KL(P_ref || P_other), top-1 agreement and the
    largest change of any token probability.  Logits ``[..., tokens, vocab]``, computed in float64."""
    a = ref_logits.astype(np.float64).reshape(-1, ref_logits.shape[-1])
    b = other_logits.astype(np.float64).reshape(-1, other_logits.shape[-1])
    la = a - a.max(axis=-1, keepdims=True)
    lb = b - b.max(axis=-1, keepdims=True)
    la -= np.log(np.exp(la).sum(axis=-1, keepdims=True))
    lb -= np.log(np.exp(lb).sum(axis=-1, keepdims=True))
    pa, pb = np.exp(la), np.exp(lb)
    kld = (pa * (la - lb)).sum(axis=-1)
    return {"kld_mean": float(kld.mean()), "kld_max": float(kld.max()),
            "top1_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1))),
            "max_abs_dp": float(np.abs(pa - pb).max()), "tokens": int(a.shape[0])}


def rss(values: list[float]) -> float:
    """Root of the sum of squares: the expected size of independent errors that add up."""
    return float(np.sqrt(np.sum(np.square(values)))) if values else 0.0


# -- input normalization (the preprocessing contract) ------------------------------------------------------

PIXEL_MAX = 255.0  # raw 8-bit pixels: HF image processors and llama.cpp's mtmd divide by 255 before mean/std


def canonical_mean_std(mean: Any, std: Any, rescale: float | None, do_normalize: bool | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per channel in units of ``pixels / 255``: ``(r * p - m) / s == (p / 255 - m') / s'`` with
    ``m' = m / (255 r)``, ``s' = s / (255 r)``.  No normalization is (0, 1); no rescale stated is taken as the
    caller's ``/ 255`` (``r = 1/255``)."""
    r = 1.0 / PIXEL_MAX if rescale is None else float(rescale)
    if do_normalize is False or mean is None or std is None:
        m, s = np.zeros(3), np.ones(3)
    else:
        m, s = np.asarray(mean, dtype=np.float64).reshape(-1), np.asarray(std, dtype=np.float64).reshape(-1)
    k = 1.0 / (PIXEL_MAX * r) if r else 1.0
    return m * k, s * k


def affine_to_mean_std(a: np.ndarray, b: np.ndarray, rescale: float) -> tuple[np.ndarray, np.ndarray]:
    """A per-channel affine ``y = a x + b`` written as ``(rescale * x - mean) / std``."""
    std = rescale / np.asarray(a, dtype=np.float64)
    return -np.asarray(b, dtype=np.float64) * std, std


def recover_input_affine(source_w: np.ndarray, source_b: np.ndarray | None, folded_w: np.ndarray,
                         folded_b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The per-input-channel affine ``x_src = a[c] * x + b[c]`` folded into a conv: ``W' = W * a[c]`` (input
    channel axis 1), ``b' = b + sum over (c, kh, kw) of W * b[c]`` (least squares over output channels).
    Returns (a, b, rel L2 of the refit W') or None when the shapes differ."""
    w = np.asarray(source_w, dtype=np.float64)
    wf = np.asarray(folded_w, dtype=np.float64)
    if w.shape != wf.shape or w.ndim < 2:
        return None
    c = w.shape[1]
    a = np.empty(c)
    for i in range(c):
        x, y = w[:, i].reshape(-1), wf[:, i].reshape(-1)
        denom = float(x @ x)
        a[i] = float(x @ y) / denom if denom else 1.0
    fit = w * a.reshape((1, c) + (1,) * (w.ndim - 2))
    err = float(np.linalg.norm(fit - wf) / max(np.linalg.norm(wf), 1e-30))
    bs = np.zeros(w.shape[0]) if source_b is None else np.asarray(source_b, dtype=np.float64).reshape(-1)
    bf = np.zeros(w.shape[0]) if folded_b is None else np.asarray(folded_b, dtype=np.float64).reshape(-1)
    design = w.reshape(w.shape[0], c, -1).sum(axis=2)  # d b'[o] / d b[c]
    shift, *_ = np.linalg.lstsq(design, bf - bs, rcond=None)
    return a, shift, err


# -- embedding outputs (pooling, L2 normalization) -----------------------------------------------------------

def pool_tokens(h: np.ndarray, mode: str, mask: np.ndarray | None = None) -> np.ndarray:
    """sentence-transformers' pooling of token states ``h`` [batch, seq, dim] with an attention mask."""
    h = np.asarray(h, dtype=np.float64)
    m = np.ones(h.shape[:2]) if mask is None else np.asarray(mask, dtype=np.float64).reshape(h.shape[:2])
    if mode == "cls":
        return h[:, 0]
    if mode == "last":  # the last non-padding token of each row (right padding)
        idx = np.maximum(m.sum(axis=1).astype(int) - 1, 0)
        return h[np.arange(h.shape[0]), idx]
    if mode == "max":
        return np.where(m[..., None] > 0, h, -np.inf).max(axis=1)
    total = (h * m[..., None]).sum(axis=1)
    count = np.maximum(m.sum(axis=1, keepdims=True), 1e-9)
    if mode == "mean_sqrt_len":
        return total / np.sqrt(count)
    return total / count  # mean


def l2_normalize(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """torch.nn.functional.normalize(v, p=2, dim=-1)."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), eps)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b``."""
    a = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    b = np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30)
