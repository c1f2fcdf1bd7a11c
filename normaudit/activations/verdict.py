"""What quantization can and cannot explain.

normaudit sees three things a user cannot easily see: each quantized tensor's own error against its source
(measured as the layer-streamed replay materializes it), each layer's *local* error (B's layer re-run on A's
input), and the drift along the model.  From them:

- a norm whose local error is beyond float round-off (its weights are F32 in every llama.cpp / ONNX file) is a
  bug, whatever the quant type;
- a tensor whose error is beyond what its storage type gives (:mod:`normaudit.facts.quant`) is a bug, named;
- a block whose local error is beyond ``factor x`` what its weights' errors add up to (or whose weights are
  exact but whose output is not) adds error quantization cannot explain: a bug, with the block's tensors to blame;
- everything else is expected quantization drift, reported with the output KLD / top-1 agreement.
When B's weights cannot be measured (ONNX, .pt2, another HF dir: float conversions), a drift above the
activation thresholds is itself unexplained.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .. import kernels
from ..config import Thresholds
from ..facts.quant import error_bound, reference_text, typical_error
from .lazy import UNIT_RE, WeightStat

EXACT = ("F32", "F64")


def _block_of(unit: str) -> str | None:
    m = UNIT_RE.search(unit)
    return f"block.{m.group(1)}" if m else None


def weight_table(stats: list[WeightStat], gguf_names: dict[str, str]) -> list[dict[str, Any]]:
    """Per-tensor quantization error against the source, with the bound its storage type explains."""
    out = []
    for s in stats:
        bound = error_bound(s.qtype)
        out.append({"tensor": gguf_names.get(s.name, s.name), "source": s.name, "dtype": s.qtype,
                    "rel_l2": s.rel_l2, "typical": typical_error(s.qtype), "bound": bound,
                    "block": _block_of(s.unit), "explained": bool(s.rel_l2 <= bound)})
    return out


def block_expectations(weights: list[dict[str, Any]]) -> dict[str, tuple[float, list[dict[str, Any]]]]:
    """block.N -> (root-sum-square of its tensors' errors, its tensors sorted by error)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for w in weights:
        if w["block"]:
            by.setdefault(w["block"], []).append(w)
    return {k: (kernels.rss([w["rel_l2"] for w in v]), sorted(v, key=lambda w: -w["rel_l2"])) for k, v in by.items()}


def judge(points: list[Any], weights: list[dict[str, Any]] | None, first: Any, th: Thresholds,
          b_norm_dtypes: dict[str, str]) -> list[dict[str, Any]]:
    """The anomalies: what quantization (or float round-off) cannot explain."""
    anomalies: list[dict[str, Any]] = []
    for w in weights or []:
        if not w["explained"]:
            anomalies.append({
                "point": w["block"] or w["source"], "kind": "weight", "blame": [w["tensor"]],
                "local_rel_l2": w["rel_l2"], "bound": w["bound"],
                "message": f"tensor {w['tensor']} ({w['dtype']}) differs from its source {w['source']} by rel L2 "
                           f"{w['rel_l2']:.3g}, beyond what {w['dtype']} explains ({w['bound']:.3g}; typical "
                           f"{w['typical'] if w['typical'] is not None else '?'})"})
    expect = block_expectations(weights or [])
    for p in points:
        if p.metrics.get("non_finite"):
            anomalies.append({"point": p.a, "kind": "non_finite", "blame": [], "local_rel_l2": None, "bound": None,
                              "message": f"{p.b} holds NaN/inf"})
            continue
        if p.local_rel_l2 is None or not np.isfinite(p.local_rel_l2):
            continue
        if p.kind == "norm":
            dtype = b_norm_dtypes.get(p.a, "F32")
            bound = th.activation_norm_local if dtype in EXACT else max(th.activation_norm_local, error_bound(dtype))
            if p.local_rel_l2 > bound:
                anomalies.append({
                    "point": p.a, "kind": "norm", "blame": [p.b], "local_rel_l2": p.local_rel_l2, "bound": bound,
                    "message": f"norm {p.b} adds error that its {dtype} weights cannot explain: local rel L2 "
                               f"{p.local_rel_l2:.3g} (bound {bound:.3g}); check its eps, weights and convention"})
        elif p.kind == "block" and weights is not None:
            expected, tensors = expect.get(p.a, (0.0, []))
            bound = max(th.activation_block_floor, th.activation_block_factor * expected)
            if p.local_rel_l2 > bound:
                exact = expected <= 1e-6
                blame = [w["tensor"] for w in tensors[:3]]
                anomalies.append({
                    "point": p.a, "kind": "block", "blame": blame, "local_rel_l2": p.local_rel_l2, "bound": bound,
                    "expected_rel_l2": expected,
                    "message": (f"{p.a}: weights are exact but the block's output is not: local rel L2 "
                                f"{p.local_rel_l2:.3g}" if exact else
                                f"{p.a} adds error its weights cannot explain: local rel L2 {p.local_rel_l2:.3g}, "
                                f"its weights' errors add up to {expected:.3g} (bound {bound:.3g}); largest: "
                                + ", ".join(f"{w['tensor']} {w['dtype']} {w['rel_l2']:.3g}" for w in tensors[:3]))})
    if weights is None and first is not None and not any(a["point"] == first.a for a in anomalies):
        # nothing measured about B's weights (a float conversion): a drift above the thresholds is unexplained
        local = first.local_rel_l2
        where = ("this layer adds it" if local is not None and local >= 0.5 * first.metrics["rel_l2"] else
                 "inherited from upstream" if local is not None else "no local re-run here")
        anomalies.append({"point": first.a, "kind": "drift", "blame": [first.b], "local_rel_l2": local,
                          "bound": th.activation_rel_l2,
                          "message": f"unexplained drift at {first.a}: rel L2 {first.metrics['rel_l2']:.3g}, cosine "
                                     f"{first.metrics.get('cosine', float('nan')):.6f} ({where})"})
    return sorted(anomalies, key=lambda a: _position(a, points))


def _position(anomaly: dict[str, Any], points: list[Any]) -> float:
    """Execution order: a tensor's anomaly sits just before its block's output (after the block's norms);
    tensors outside blocks: the embedding first, the output head last."""
    index = {p.a: i for i, p in enumerate(points)}
    if anomaly["point"] in index:
        return index[anomaly["point"]] - (0.25 if anomaly["kind"] == "weight" else 0.0)
    return -1.0 if "embed" in anomaly["point"] else float(len(points))


def summary(weights: list[dict[str, Any]] | None, output: dict[str, Any] | None, points: list[Any],
            anomalies: list[dict[str, Any]], file_type: str | None) -> str:
    """One line for people: expected drift (with its figures) or the first anomaly."""
    if anomalies:
        first = anomalies[0]
        return (f"{len(anomalies)} {'anomaly' if len(anomalies) == 1 else 'anomalies'}, first at {first['point']} "
                f"({first['kind']})")
    out = next((p for p in points if p.kind == "output"), None)
    figures = [f"output rel L2 {out.metrics['rel_l2']:.3g}"] if out is not None and "rel_l2" in out.metrics else []
    if output:
        figures += [f"KLD {output['kld_mean']:.3g}", f"top-1 agreement {100 * output['top1_agreement']:.1f}%"]
    quant = [w["dtype"] for w in weights or [] if w["dtype"] not in EXACT]
    if weights and quant:
        kind = file_type or "/".join(t for t, _ in Counter(quant).most_common(3))
        ref = reference_text(file_type) if output else ""
        return f"expected quantization drift ({kind}): " + ", ".join(figures) + (f" ({ref})" if ref else "")
    return "activations match" + (f" ({', '.join(figures)})" if figures else "")
