"""Embedding models in an activation diff: each side's output as it is deployed (pooled and L2-normalized as its
contract says), the distribution of the output vectors' norms on both sides and the cosine of the pooled
vectors.  Normalized vectors have norm 1; a dropped Normalize shows as other norms with cosine ~1 (the same
direction, another length)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from ..contracts import Embedding
from ..model import NormModel

DEFAULT_BATCH = 4  # default inputs for embedding models: a few sequences, so norms have a distribution
UNIT_TOL = 1e-3  # a vector norm within this of 1 is "normalized"


def contract(model: NormModel) -> Embedding | None:
    from ..checks.contracts import embedding_of

    return embedding_of(model)


class Tracker:
    """Turns each side's captured output into the vectors its deployment returns, and keeps their statistics."""

    def __init__(self, ea: Embedding | None, eb: Embedding | None, feeds: dict[str, np.ndarray]) -> None:
        self.ea, self.eb = ea, eb
        mask = feeds.get("attention_mask")
        self.mask = None if mask is None else np.asarray(mask)
        self.result: dict[str, Any] | None = None
        self.notes: list[str] = []

    def _vectors(self, out: np.ndarray, own: Embedding | None, other: Embedding | None, side: str
                 ) -> tuple[np.ndarray, str]:
        """[batch, dim] vectors of one side: its own output if already pooled, else pooled with its contract's
        pooling (or, when it leaves pooling to the caller, the other side's) and normalized if its contract does."""
        if out.ndim == 2:
            return out.astype(np.float64), f"{side}'s output as the model returns it"
        pooling = own.pooling if own is not None and own.pooling not in (None, "none") else \
            (other.pooling if other is not None and other.pooling not in (None, "none") else "mean")
        how = f"{side}'s token states, {pooling}-pooled"
        if own is None or own.pooling in (None, "none"):
            how += " (by the caller: the model does not pool)"
        vec = kernels.pool_tokens(out, pooling, self.mask if self.mask is not None and
                                  self.mask.shape == out.shape[:2] else None)
        if own is not None and own.normalize:
            vec, how = kernels.l2_normalize(vec), how + " and L2-normalized"
        return vec, how

    def output(self, a_out: np.ndarray, b_out: np.ndarray, record: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
        """The arrays the ``output`` point compares: unchanged when both sides have the same shape (token states
        against token states), else the deployed vectors; the statistics are computed either way."""
        va, how_a = self._vectors(a_out, self.ea, self.eb, "A")
        vb, how_b = self._vectors(b_out, self.eb, self.ea, "B")
        if va.shape == vb.shape and record:
            self.result = summarize(va, vb, how_a, how_b)
        if a_out.shape == b_out.shape:
            return a_out, b_out, ""
        if va.shape != vb.shape:
            return a_out, b_out, ""
        return va.astype(np.float32), vb.astype(np.float32), f"compared as deployed: {how_a}; {how_b}"


def _dist(values: np.ndarray) -> dict[str, float]:
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


def summarize(va: np.ndarray, vb: np.ndarray, how_a: str, how_b: str) -> dict[str, Any]:
    """Norms of each side's vectors and the cosine of each pair, with one line saying what they show."""
    na, nb = np.linalg.norm(va, axis=-1), np.linalg.norm(vb, axis=-1)
    cos = kernels.row_cosines(va, vb)
    unit_a, unit_b = bool(np.all(np.abs(na - 1) < UNIT_TOL)), bool(np.all(np.abs(nb - 1) < UNIT_TOL))
    same_dir = bool(cos.min() > 0.9999)
    if unit_a and not unit_b and same_dir:
        verdict = ("same directions (cosine >= 0.9999), other lengths: B's vectors are not L2-normalized, A's are")
    elif unit_b and not unit_a and same_dir:
        verdict = "same directions, other lengths: B's vectors are L2-normalized, A's are not"
    elif same_dir and np.allclose(na, nb, rtol=1e-3):
        verdict = "B's vectors match A's (direction and length)"
    elif same_dir:
        verdict = "same directions, other lengths"
    else:
        verdict = f"B's vectors point elsewhere (cosine down to {cos.min():.6f}): pooling or the model differs"
    return {"vectors": int(va.shape[0]), "dim": int(va.shape[-1]), "a": {"norm": _dist(na), "unit": unit_a,
                                                                          "how": how_a},
            "b": {"norm": _dist(nb), "unit": unit_b, "how": how_b}, "cosine": _dist(cos), "verdict": verdict}
