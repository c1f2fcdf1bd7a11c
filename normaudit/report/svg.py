"""Small inline SVG plots for the HTML report, generated in Python (no JavaScript, no plotting library):
a log-scale line plot along execution order with thresholds, a marked position and anomalies, and a
horizontal bar chart. Every marker carries a ``<title>`` (the browser shows it on hover)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

PALETTE = {"total": "#1f6feb", "local": "#e36209", "threshold": "#6e7781", "bad": "#cf222e", "ok": "#1a7f37",
           "muted": "#8c959f", "grid": "#d8dee4", "text": "#24292f"}


@dataclass
class Series:
    name: str
    values: Sequence[float | None]  # None / nan / inf: non-finite (marked at the top), <= 0: the zero band
    color: str
    line: bool = True
    dash: str = ""
    shapes: Sequence[str] | None = None  # per point: circle | square | diamond
    none_is_missing: bool = False  # None means "not computed" (skipped), not "non-finite" (marked)


@dataclass
class Plot:
    """A log-scale plot of series over positions 0..n-1 (execution order)."""

    title: str
    labels: Sequence[str]  # per position, for tooltips
    series: list[Series]
    y_label: str
    key: str  # data-plot attribute (tests, styling)
    thresholds: list[tuple[float, str]] = field(default_factory=list)  # horizontal dashed lines
    steps: list[Series] = field(default_factory=list)  # per-position thresholds (drawn as a step line)
    mark: tuple[int, str] | None = None  # vertical line at a position, with its label
    anomalies: set[int] = field(default_factory=set)  # positions ringed in red
    ticks: list[tuple[int, str]] = field(default_factory=list)  # x-axis labels at positions
    anomaly_label: str = "beyond threshold"
    x_label: str = "execution order (A)"
    width: int = 960
    height: int = 300


def _finite_pos(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _is_zero(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v) and v <= 0


def _fmt_decade(e: int) -> str:
    return f"1e{e}" if e not in (0, 1) else ("1" if e == 0 else "10")


def _marker(shape: str, x: float, y: float, color: str, hollow: bool = False, r: float = 3.2) -> str:
    fill = "white" if hollow else color
    if shape == "square":
        return (f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" fill="{fill}" '
                f'stroke="{color}" stroke-width="1.2"/>')
    if shape == "diamond":
        return (f'<path d="M{x:.1f},{y - r * 1.3:.1f} L{x + r * 1.3:.1f},{y:.1f} L{x:.1f},{y + r * 1.3:.1f} '
                f'L{x - r * 1.3:.1f},{y:.1f} Z" fill="{fill}" stroke="{color}" stroke-width="1.2"/>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{fill}" stroke="{color}" stroke-width="1.2"/>'


def log_plot(p: Plot) -> str:
    n = len(p.labels)
    everything = [v for s in p.series + p.steps for v in s.values] + [t for t, _ in p.thresholds]
    pos = [float(v) for v in everything if _finite_pos(v)]
    lo = math.floor(math.log10(min(pos))) if pos else -8
    hi = math.ceil(math.log10(max(pos))) if pos else 0
    if hi - lo < 2:  # one value or one decade: centre it
        lo, hi = lo - 1, hi + 1
    ml, mr, mt, mb = 64, 16, 50, 46
    zero_band = 18  # below the lowest decade: exact zeros
    top_band = 14  # above the highest decade: non-finite values
    w, h = p.width, p.height
    pw, ph = w - ml - mr, h - mt - mb - zero_band - top_band
    y0 = mt + top_band  # pixel of the highest decade

    def xpix(i: float) -> float:
        return ml + (pw * (i + 0.5) / n if n else 0)

    def ypix(v: float | None) -> float:
        if _finite_pos(v):
            frac = (math.log10(float(v)) - lo) / (hi - lo)  # type: ignore[arg-type]
            return y0 + ph * (1 - min(max(frac, 0.0), 1.0))
        if _is_zero(v):
            return y0 + ph + zero_band * 0.7
        return mt + top_band * 0.4  # non-finite

    out = [f'<svg class="plot" data-plot="{escape(p.key)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" '
           f'width="100%" role="img" aria-label="{escape(p.title)}" font-family="system-ui, sans-serif" '
           f'font-size="11">',
           f'<title>{escape(p.title)}</title>',
           f'<text x="{ml}" y="16" font-size="13" font-weight="600" fill="{PALETTE["text"]}">{escape(p.title)}</text>']
    # grid: decades, the zero band, the non-finite band
    every = max(1, math.ceil((hi - lo) / 8))  # at most ~9 labelled decades
    for e in range(lo, hi + 1):
        y = ypix(10.0 ** e)
        out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="{PALETTE["grid"]}" '
                   f'stroke-width="1"/>')
        if (hi - e) % every == 0:
            out.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{PALETTE["muted"]}">'
                       f'{_fmt_decade(e)}</text>')
    yz = ypix(0.0)
    out.append(f'<text x="{ml - 6}" y="{yz + 4:.1f}" text-anchor="end" fill="{PALETTE["muted"]}">0</text>')
    out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y0 + ph + 3:.1f}" y2="{y0 + ph + 3:.1f}" '
               f'stroke="{PALETTE["grid"]}" stroke-dasharray="2,3"/>')
    out.append(f'<text x="14" y="{y0 + ph / 2:.1f}" transform="rotate(-90 14 {y0 + ph / 2:.1f})" text-anchor="middle" '
               f'fill="{PALETTE["text"]}">{escape(p.y_label)} (log)</text>')
    # x ticks
    for i, label in p.ticks:
        x = xpix(i)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0 + ph + zero_band:.1f}" y2="{y0 + ph + zero_band + 4:.1f}" '
                   f'stroke="{PALETTE["muted"]}"/>')
        out.append(f'<text x="{x:.1f}" y="{h - mb + 18:.1f}" text-anchor="middle" fill="{PALETTE["muted"]}">'
                   f'{escape(label)}</text>')
    out.append(f'<text x="{ml + pw / 2:.1f}" y="{h - 8}" text-anchor="middle" fill="{PALETTE["text"]}">'
               f'{escape(p.x_label)}</text>')
    # thresholds
    for value, label in p.thresholds:
        if _finite_pos(value):
            y = ypix(value)
            out.append(f'<line class="threshold" x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="{PALETTE["threshold"]}" stroke-dasharray="6,4" stroke-width="1.2"/>')
            out.append(f'<text x="{w - mr - 4}" y="{y - 4:.1f}" text-anchor="end" fill="{PALETTE["threshold"]}">'
                       f'{escape(label)}</text>')
    for s in p.steps:
        pts = [(xpix(i - 0.5), xpix(i + 0.5), ypix(v)) for i, v in enumerate(s.values) if _finite_pos(v)]
        if pts:
            d = " ".join(f"M{x1:.1f},{y:.1f} H{x2:.1f}" for x1, x2, y in pts)
            out.append(f'<path class="threshold" d="{d}" stroke="{s.color}" stroke-dasharray="4,3" fill="none" '
                       f'stroke-width="1.2"><title>{escape(s.name)}</title></path>')
    # the marked position (first divergence)
    if p.mark is not None and 0 <= p.mark[0] < n:
        x = xpix(p.mark[0])
        out.append(f'<line class="mark" x1="{x:.1f}" x2="{x:.1f}" y1="{mt - 4:.1f}" y2="{y0 + ph + zero_band:.1f}" '
                   f'stroke="{PALETTE["bad"]}" stroke-width="1.5" stroke-dasharray="5,3"/>')
        anchor = "start" if p.mark[0] < n * 0.6 else "end"
        dx = 5 if anchor == "start" else -5
        out.append(f'<text class="mark-label" x="{x + dx:.1f}" y="{mt + 2:.1f}" text-anchor="{anchor}" '
                   f'fill="{PALETTE["bad"]}" font-weight="600">{escape(p.mark[1])}</text>')
    # series
    for s in p.series:
        if s.line:
            segs, cur = [], []
            for i, v in enumerate(s.values):
                if v is None or (isinstance(v, float) and not math.isfinite(v)):
                    if cur:
                        segs.append(cur)
                    cur = []
                    continue
                cur.append(f"{xpix(i):.1f},{ypix(v):.1f}")
            if cur:
                segs.append(cur)
            for seg in segs:
                if len(seg) > 1:
                    dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
                    out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{s.color}" stroke-width="1.6"'
                               f'{dash} opacity="0.85"/>')
        for i, v in enumerate(s.values):
            if v is None and s.none_is_missing:
                continue
            x, y = xpix(i), ypix(v)
            shape = s.shapes[i] if s.shapes else "circle"
            tip = f"{p.labels[i]}: {s.name} " + (f"{v:.3g}" if isinstance(v, (int, float)) and math.isfinite(v)
                                                  else "non-finite")
            if v is None or not math.isfinite(v):
                out.append(f'<g><title>{escape(tip)}</title><path d="M{x:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 4:.1f} '
                           f'L{x - 5:.1f},{y + 4:.1f} Z" fill="{PALETTE["bad"]}"/></g>')
                continue
            out.append(f'<g><title>{escape(tip)}</title>{_marker(shape, x, y, s.color, hollow=_is_zero(v))}</g>')
    for i in sorted(p.anomalies):
        if 0 <= i < n and p.series:
            v = p.series[0].values[i]
            out.append(f'<circle class="anomaly" cx="{xpix(i):.1f}" cy="{ypix(v):.1f}" r="7" fill="none" '
                       f'stroke="{PALETTE["bad"]}" stroke-width="1.6"><title>{escape(p.labels[i])}: '
                       f'{escape(p.anomaly_label)}</title></circle>')
    # legend: one row under the title
    lx = ml
    ly = 32
    items = [(s.name, s.color, s.dash) for s in p.series] + [(s.name, s.color, "4,3") for s in p.steps]
    if p.anomalies:
        items.append((p.anomaly_label, PALETTE["bad"], "ring"))
    for name, color, dash in items:
        if dash == "ring":
            out.append(f'<circle cx="{lx + 8}" cy="{ly}" r="5" fill="none" stroke="{color}" stroke-width="1.6"/>')
        else:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{lx}" x2="{lx + 16}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"'
                       f'{dash_attr}/>')
        out.append(f'<text x="{lx + 21}" y="{ly + 4}" fill="{PALETTE["text"]}">{escape(name)}</text>')
        lx += 30 + 6.2 * len(name)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], key: str, color: str = PALETTE["total"],
              width: int = 960, value_fmt: str = ".3g") -> str:
    """Horizontal bars (linear scale), one per label, largest first as given."""
    n = len(labels)
    row = 18
    ml = min(420, 12 + 6.4 * max((len(label) for label in labels), default=10))
    mr, mt = 90, 26
    h = mt + n * row + 8
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    top = max(finite, default=1.0) or 1.0
    out = [f'<svg class="plot" data-plot="{escape(key)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {h}" '
           f'width="100%" role="img" aria-label="{escape(title)}" font-family="system-ui, sans-serif" font-size="11">',
           f'<title>{escape(title)}</title>',
           f'<text x="8" y="16" font-size="13" font-weight="600" fill="{PALETTE["text"]}">{escape(title)}</text>']
    for i, (label, v) in enumerate(zip(labels, values)):
        y = mt + i * row
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        bw = (width - ml - mr) * (v / top) if ok and v > 0 else 0
        out.append(f'<text x="{ml - 6:.1f}" y="{y + 12}" text-anchor="end" fill="{PALETTE["text"]}">{escape(label)}</text>')
        out.append(f'<g><title>{escape(label)}: {format(v, value_fmt) if ok else "non-finite"}</title>'
                   f'<rect x="{ml:.1f}" y="{y + 3}" width="{max(bw, 1):.1f}" height="{row - 6}" fill="{color}"/></g>')
        out.append(f'<text x="{ml + bw + 6:.1f}" y="{y + 12}" fill="{PALETTE["muted"]}">'
                   f'{format(v, value_fmt) if ok else "non-finite"}</text>')
    out.append("</svg>")
    return "\n".join(out)


def band_plot(title: str, labels: Sequence[str], low: Sequence[float], mid: Sequence[float], high: Sequence[float],
              key: str, y_label: str, width: int = 960, height: int = 240) -> str:
    """A linear-scale line (``mid``) with a ``low``..``high`` band, over positions (e.g. weight mean with min-max)."""
    n = len(labels)
    vals = [v for v in list(low) + list(high) + list(mid) if isinstance(v, (int, float)) and math.isfinite(v)]
    if not n or not vals:
        return ""
    ymin, ymax = min(vals), max(vals)
    if ymax == ymin:
        ymin, ymax = ymin - 1, ymax + 1
    ml, mr, mt, mb = 64, 16, 30, 30
    pw, ph = width - ml - mr, height - mt - mb

    def xp(i: int) -> float:
        return ml + pw * (i + 0.5) / n

    def yp(v: float) -> float:
        return mt + ph * (1 - (v - ymin) / (ymax - ymin))

    out = [f'<svg class="plot" data-plot="{escape(key)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} '
           f'{height}" width="100%" role="img" aria-label="{escape(title)}" font-family="system-ui, sans-serif" '
           f'font-size="11">', f'<title>{escape(title)}</title>',
           f'<text x="{ml}" y="16" font-size="13" font-weight="600" fill="{PALETTE["text"]}">{escape(title)}</text>']
    for k in range(5):
        v = ymin + (ymax - ymin) * k / 4
        y = yp(v)
        out.append(f'<line x1="{ml}" x2="{width - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="{PALETTE["grid"]}"/>')
        out.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{PALETTE["muted"]}">{v:.3g}</text>')
    band = [f"{xp(i):.1f},{yp(v):.1f}" for i, v in enumerate(high)] + \
           [f"{xp(i):.1f},{yp(v):.1f}" for i, v in reversed(list(enumerate(low)))]
    out.append(f'<polygon points="{" ".join(band)}" fill="{PALETTE["total"]}" opacity="0.15"/>')
    out.append(f'<polyline points="{" ".join(f"{xp(i):.1f},{yp(v):.1f}" for i, v in enumerate(mid))}" fill="none" '
               f'stroke="{PALETTE["total"]}" stroke-width="1.6"/>')
    for i, v in enumerate(mid):
        out.append(f'<g><title>{escape(labels[i])}: mean {v:.4g} (min {low[i]:.4g}, max {high[i]:.4g})</title>'
                   f'{_marker("circle", xp(i), yp(v), PALETTE["total"])}</g>')
    out.append(f'<text x="14" y="{mt + ph / 2:.1f}" transform="rotate(-90 14 {mt + ph / 2:.1f})" text-anchor="middle" '
               f'fill="{PALETTE["text"]}">{escape(y_label)}</text>')
    out.append(f'<text x="{ml + pw / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="{PALETTE["text"]}">'
               f'layer order</text>')
    out.append("</svg>")
    return "\n".join(out)
