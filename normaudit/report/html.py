"""One self-contained HTML file for people (inline CSS, a few lines of inline JS for table filters, inline
SVG plots generated in :mod:`.svg`; nothing is fetched from the network).

compare: the verdict first; findings with their hints; where activations drift along the model (rel L2 and
1 - cosine per point in execution order, local vs inherited error, the first divergence and the points beyond
the thresholds marked, log scale); the eps and weight comparison of every aligned pair; the inputs, files
(sha256) and thresholds used. inspect: every norm layer, its eps and weight statistics along the model.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from . import svg
from .document import ACTIVATION_DRIFT, COMPARE_SCHEMA, divergence_verdict, is_failing
from .jsonout import clean
from .renderers import Renderer

_CSS = """
:root { --bad:#cf222e; --warn:#9a6700; --ok:#1a7f37; --info:#0969da; --muted:#57606a; --line:#d0d7de; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:#24292f; margin:0; background:#fff; }
main { max-width: 1180px; margin: 0 auto; padding: 0 20px 40px; }
header.verdict { padding: 18px 20px; border-bottom: 1px solid var(--line); background: var(--bg); }
header.verdict .inner { max-width: 1180px; margin: 0 auto; display:flex; gap:20px; align-items:center; flex-wrap:wrap; }
.badge { font-size: 30px; font-weight: 800; letter-spacing: .04em; padding: 6px 18px; border-radius: 8px; color:#fff; }
.badge.pass { background: var(--ok); } .badge.fail { background: var(--bad); } .badge.neutral { background: var(--info); }
.summary { font-size: 16px; font-weight: 600; }
.models { color: var(--muted); font-size: 13px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
h2 { margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); font-size: 19px; }
h3 { margin: 18px 0 8px; font-size: 15px; }
nav { margin: 10px 0 0; font-size: 13px; } nav a { margin-right: 14px; color: var(--info); text-decoration: none; }
.card { border: 1px solid var(--line); border-left: 5px solid var(--muted); border-radius: 6px; padding: 8px 12px;
        margin: 8px 0; }
.card.error { border-left-color: var(--bad); } .card.warning { border-left-color: var(--warn); }
.card.info { border-left-color: var(--info); } .card.suppressed { opacity: .7; border-left-style: dashed; }
.card .head { font-weight: 600; } .sev { text-transform: uppercase; font-size: 11px; font-weight: 700; padding: 1px 6px;
        border-radius: 4px; color: #fff; margin-right: 6px; }
.sev.error { background: var(--bad); } .sev.warning { background: var(--warn); } .sev.info { background: var(--info); }
.tag { font-size: 11px; border: 1px solid var(--line); border-radius: 10px; padding: 0 7px; margin-left: 6px;
       color: var(--muted); font-weight: 600; }
.hint { color: var(--muted); margin-top: 3px; } .msg { margin-top: 3px; }
.callout { border: 1px solid var(--bad); background: #ffebe9; border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.callout.ok { border-color: var(--ok); background: #dafbe1; }
figure { margin: 12px 0; } figcaption { color: var(--muted); font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; margin: 6px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.flag td { background: #fff8c5; } tr.first td { background: #ffebe9; font-weight: 600; }
input.filter { margin: 6px 0; padding: 4px 8px; width: 320px; border: 1px solid var(--line); border-radius: 6px; }
.dim { color: var(--muted); } details summary { cursor: pointer; color: var(--info); margin: 6px 0; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; }
dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; }
footer { color: var(--muted); font-size: 12px; margin-top: 30px; border-top: 1px solid var(--line); padding-top: 8px; }
"""

_JS = """
document.querySelectorAll('input.filter').forEach(function (box) {
  box.addEventListener('input', function () {
    var q = box.value.toLowerCase();
    document.querySelectorAll('#' + box.dataset.table + ' tbody tr').forEach(function (tr) {
      tr.style.display = tr.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
    });
  });
});
"""


def e(x: Any) -> str:
    return escape(str(x), quote=True)


def _g(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return "–"
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


def _eps(x: Any) -> str:
    if x is None:
        return "?"
    import numpy as np

    return str(np.float32(x)) if x != 0 else "0"


def _page(title: str, header: str, body: str, doc: dict[str, Any]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="normaudit {e(doc.get("normaudit_version", ""))}">'
            f"<title>{e(title)}</title><style>{_CSS}</style></head>\n<body>\n{header}\n<main>\n{body}\n"
            f'<footer>normaudit {e(doc.get("normaudit_version", ""))} · {e(doc.get("schema", ""))} · created '
            f'{e(doc.get("created", ""))}</footer>\n</main>\n<script>{_JS}</script>\n</body></html>\n')


def _model_line(label: str, side: dict[str, Any]) -> str:
    return (f'{label}<code>{e(side.get("path"))}</code> <span class="dim">[{e(side.get("format"))}/'
            f'{e(side.get("container"))}, {e(side.get("architecture") or "unknown architecture")}]</span>')


def _table(tid: str, heads: list[str], rows: list[tuple[str, list[str]]], num: set[int] = frozenset(),
           filter_box: bool = False) -> str:
    """``rows``: (css class, cells already escaped)."""
    out = []
    if filter_box:
        out.append(f'<input class="filter" type="search" placeholder="filter rows…" data-table="{e(tid)}">')
    out.append(f'<table id="{e(tid)}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr></thead><tbody>")
    for cls, cells in rows:
        out.append(f'<tr class="{cls}">' + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>"
                                                 for i, c in enumerate(cells)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


# -- compare ---------------------------------------------------------------------------------------------------

def _summary_text(doc: dict[str, Any]) -> str:
    findings = doc.get("findings", [])
    live = [f for f in findings if not f.get("suppressed")]
    n = {s: sum(f["severity"] == s for f in live) for s in ("error", "warning", "info")}
    text = f"{n['error']} errors, {n['warning']} warnings, {n['info']} info (fail on {doc.get('fail_on')})"
    if len(findings) != len(live):
        text += f", {len(findings) - len(live)} suppressed by baseline"
    act = doc.get("activations")
    if act is not None:
        text += f"; activations: {act.get('verdict') or 'compared'}"  # the terminal's verdict line says the same
    return text


def _finding_card(f: dict[str, Any], fail_on: str) -> str:
    sev = f["severity"]
    classes = f"card {sev}" + (" suppressed" if f.get("suppressed") else "")
    where = ""
    layers = (f.get("values") or {}).get("layers")
    if f.get("a") is None and f.get("b") is None:
        where = (f'<span class="dim">model-wide ({len(layers)} layers)</span>' if isinstance(layers, list)
                 else '<span class="dim">model</span>')
    elif f.get("a") == f.get("b"):
        where = f'<code>{e(f.get("a"))}</code>'
    else:
        where = f'<code>{e(f.get("a") or "–")}</code> → <code>{e(f.get("b") or "–")}</code>'
    tags = ""
    if f.get("suppressed"):
        tags += '<span class="tag">suppressed by baseline</span>'
    elif is_failing(f, fail_on):
        tags += '<span class="tag" style="color:var(--bad)">fails the run</span>'
    out = [f'<div class="{classes}" data-check="{e(f["check"])}"><div class="head"><span class="sev {e(sev)}">{e(sev)}'
           f'</span><code>{e(f["check"])}</code> · {where}{tags}</div>',
           f'<div class="msg">{e(f.get("message", ""))}</div>']
    if f.get("hint"):
        out.append(f'<div class="hint">hint: {e(f["hint"])}</div>')
    if f.get("suppressed"):
        out.append(f'<div class="hint">baseline reason: {e(f.get("reason") or "(none given)")}</div>')
    if isinstance(layers, list) and layers:
        items = "".join(f"<li><code>{e(a)}</code> → <code>{e(b)}</code></li>" for a, b in
                        (x if isinstance(x, list) and len(x) == 2 else (x, "") for x in layers))
        out.append(f"<details><summary>{len(layers)} layers</summary><ul>{items}</ul></details>")
    out.append("</div>")
    return "\n".join(out)


def _ticks(points: list[dict[str, Any]]) -> list[tuple[int, str]]:
    ticks = [(i, p["a"].split(".", 1)[1] if p["a"].startswith("block.") else "out")
             for i, p in enumerate(points) if p.get("kind") in ("block", "output")]
    step = max(1, math.ceil(len(ticks) / 40))
    return ticks[::step]


def _activations(doc: dict[str, Any]) -> str:
    act = doc["activations"]
    points = act.get("points", [])
    th = act.get("thresholds", {})
    fd = act.get("first_divergence")
    out = ['<section id="activations"><h2>Activations</h2>']
    anomalies = act.get("anomalies") or []
    out.append(f'<div class="callout{"" if anomalies else " ok"}" id="activation-verdict"><b>Verdict</b>: '
               f'{e(act.get("verdict"))}'
               + "".join(f'<div class="msg">anomaly ({e(an["kind"])}): {e(an["message"])}</div>' for an in anomalies)
               + "</div>")
    first_idx = None
    if fd is not None:
        first_idx = next((i for i, p in enumerate(points) if p["a"] == fd["a"] and p["b"] == fd["b"]), None)
        # the hint of the drift finding at this very point (an anomaly elsewhere, e.g. a weight, has its own card)
        drift = next((f for f in doc.get("findings", []) if f["check"] == ACTIVATION_DRIFT and f.get("a") == fd["a"]),
                     None)
        out.append(f'<div class="callout" id="first-divergence"><b>First divergence</b> (rel L2 above '
                   f'{e(th.get("rel_l2"))}): <code>{e(fd["a"])}</code> '
                   f'({e(fd["kind"])}) · rel L2 {_g(fd.get("rel_l2"), ".3g")} · cosine {_g(fd.get("cosine"), ".6f")} · '
                   f'local rel L2 {_g(fd.get("local_rel_l2"), ".3g")}<div class="msg">'
                   f'{e(divergence_verdict(fd.get("local_rel_l2"), fd.get("rel_l2"), act))}</div>'
                   + (f'<div class="hint">hint: {e(drift["hint"])}</div>' if drift else "")
                   + (" <span class=\"tag\">suppressed by baseline</span>" if drift and drift.get("suppressed") else "")
                   + "</div>")
    else:
        out.append(f'<div class="callout ok" id="first-divergence">No divergence: all {len(points)} points are within '
                   f'rel L2 {e(th.get("rel_l2"))} and cosine {e(th.get("cosine"))}.</div>')
    inp = act.get("inputs", {})
    shapes = ", ".join(f"{k} {v.get('shape')}" for k, v in inp.items() if isinstance(v, dict))
    out.append(f'<dl class="kv"><dt>A ran as</dt><dd>{e(act["backends"].get("a"))}</dd><dt>B ran as</dt>'
               f'<dd>{e(act["backends"].get("b"))}</dd><dt>inputs</dt><dd>{e(inp.get("source"))} ({e(shapes)})</dd>'
               f'<dt>points</dt><dd>{len(points)} (norm outputs, block outputs, final output)</dd></dl>')
    if points:
        labels = [f"{p['a']} ({p['kind']})" for p in points]
        shapes_ = ["square" if p["kind"] == "block" else "diamond" if p["kind"] == "output" else "circle"
                   for p in points]
        rel = [p.get("rel_l2") for p in points]
        local = [p.get("local_rel_l2") for p in points]
        cos = [None if p.get("cosine") is None else 1.0 - p["cosine"] for p in points]
        anomalies = {i for i, p in enumerate(points)
                     if p.get("rel_l2") is None or p["rel_l2"] > th.get("rel_l2", math.inf)
                     or (p.get("cosine") is not None and p["cosine"] < th.get("cosine", -math.inf))}
        mark = (first_idx, f"first divergence: {fd['a']}") if first_idx is not None and fd else None
        ticks = _ticks(points)
        rel_plot = svg.Plot("Relative L2 error of B against A, per point", labels, [
            svg.Series("rel L2 (total)", rel, svg.PALETTE["total"], shapes=shapes_),
            svg.Series("local rel L2 (B's layer on A's input)", local, svg.PALETTE["local"], line=False,
                       none_is_missing=True),
        ], "rel L2", "rel_l2", thresholds=[(th.get("rel_l2"), f"threshold {th.get('rel_l2')}")] if th.get("rel_l2")
            else [], mark=mark, anomalies=anomalies, ticks=ticks,
            x_label="execution order (A); ticks: block outputs by block number, out: final output")
        cos_th = 1.0 - th["cosine"] if th.get("cosine") is not None else None
        cos_plot = svg.Plot("1 − cosine similarity of B against A, per point", labels, [
            svg.Series("1 − cosine", cos, svg.PALETTE["total"], shapes=shapes_)], "1 − cosine", "cosine",
            thresholds=[(cos_th, f"threshold 1 − {th.get('cosine')}")] if cos_th else [], mark=mark,
            anomalies=anomalies, ticks=ticks,
            x_label="execution order (A); ticks: block outputs by block number, out: final output")
        out.append(f'<figure id="plot-rel-l2">{svg.log_plot(rel_plot)}<figcaption>Points in A\'s execution order '
                   "(circles: norm outputs, squares: block outputs, labelled by block number; diamond: final output). "
                   "Where the local error (orange) is close to the total (blue), that layer adds the error; where it "
                   "is far below, the error is inherited from upstream. Hollow markers on the 0 line are exact "
                   "matches; red triangles at the top are non-finite values.</figcaption></figure>")
        out.append(f'<figure id="plot-cosine">{svg.log_plot(cos_plot)}</figure>')
        rows = []
        for i, p in enumerate(points):
            cls = "first" if i == first_idx else "flag" if i in anomalies else ""
            rows.append((cls, [str(i), f"<code>{e(p['a'])}</code>", f"<code>{e(p['b'])}</code>" if p["b"] != p["a"]
                               else "", e(p["kind"]), _g(p.get("max_abs"), ".2e"), _g(p.get("mean_abs"), ".2e"),
                               _g(p.get("rel_l2"), ".2e"), _g(p.get("cosine"), ".6f"), _g(p.get("sqnr_db"), ".1f"),
                               _g(p.get("local_rel_l2"), ".2e"), e(p.get("note", ""))]))
        out.append(f"<details><summary>all {len(points)} points</summary>"
                   + _table("points-table", ["#", "point (A)", "B", "kind", "max abs", "mean abs", "rel L2", "cosine",
                                             "SQNR dB", "local rel L2", "note"], rows, num={0, 4, 5, 6, 7, 8, 9},
                            filter_box=True) + "</details>")
    sens = act.get("sensitivity") or []
    if sens:
        top = sens[:20]
        out.append("<h3>Sensitivity</h3>")
        chart = svg.bar_chart("Final-output rel L2 with one quantized tensor in the float model",
                              [f"{r['tensor']} ({r['dtype']})" for r in top], [r.get("output_rel_l2") for r in top],
                              "sensitivity")
        out.append(f'<figure id="plot-sensitivity">{chart}<figcaption>The {len(top)} tensors whose quantization '
                   f"alone moves the output most (of {len(sens)}).</figcaption></figure>")
    for note in act.get("notes", []):
        out.append(f'<p class="dim">note: {e(note)}</p>')
    out.append("</section>")
    return "\n".join(out)


def _flagged(doc: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(a, b) of a pair -> checks of the findings on it (model-wide findings included)."""
    out: dict[tuple[str, str], list[str]] = {}
    for f in doc.get("findings", []):
        if f["check"] == ACTIVATION_DRIFT:
            continue
        layers = (f.get("values") or {}).get("layers")
        keys = [tuple(x) for x in layers if isinstance(x, list) and len(x) == 2] if isinstance(layers, list) else []
        if f.get("a") is not None or f.get("b") is not None:
            keys.append((f.get("a"), f.get("b")))
        for k in keys:
            out.setdefault(k, []).append(f["check"])  # type: ignore[arg-type]
    return out


def _pairs(doc: dict[str, Any]) -> str:
    pairs = doc.get("pairs", [])
    th = doc.get("thresholds", {})
    out = ['<section id="pairs"><h2>Norm pairs: eps and weights</h2>',
           f'<p class="dim">{len(pairs)} aligned pairs; A has {len(doc["a"].get("norms", []))} norms, B has '
           f'{len(doc["b"].get("norms", []))}.</p>']
    if not pairs:
        out.append("</section>")
        return "\n".join(out)
    flagged = _flagged(doc)
    b_dtype = {n["id"]: n.get("dtype", "") for n in doc["b"].get("norms", [])}
    a_dtype = {n["id"]: n.get("dtype", "") for n in doc["a"].get("norms", [])}

    def tol(p: dict[str, Any]) -> float | None:
        if th.get("rel_l2_override") is not None:
            return th["rel_l2_override"]
        if p["aligned_by"].startswith("fold"):
            return th.get("fold_rel_l2")
        table = th.get("rel_l2") or {}
        vals = [table.get(d, 0.3) for d in (a_dtype.get(p["a"]), b_dtype.get(p["b"])) if d]
        return max(vals) if vals else None

    labels = [f"{p['a']} → {p['b']}" for p in pairs]
    rel = [(p.get("weight") or {}).get("rel_l2") for p in pairs]
    anomalies = {i for i, p in enumerate(pairs) if (p["a"], p["b"]) in flagged}
    plot = svg.Plot("Weight rel L2 (effective scale) per aligned pair", labels,
                    [svg.Series("weight rel L2", rel, svg.PALETTE["total"], none_is_missing=True)], "rel L2",
                    "weights", steps=[svg.Series("tolerance for the stored dtype", [tol(p) for p in pairs],
                                                 svg.PALETTE["threshold"])], anomalies=anomalies,
                    anomaly_label="pair with a finding", x_label="aligned pairs in A's order")
    out.append(f'<figure id="plot-weights">{svg.log_plot(plot)}<figcaption>Pairs in A\'s order; ringed: pairs with a '
               "finding. The dashed steps are the tolerance each pair's stored dtype allows.</figcaption></figure>")
    rows = []
    for i, p in enumerate(pairs):
        w = p.get("weight") or {}
        checks = flagged.get((p["a"], p["b"]), [])
        eps_differ = p.get("eps_a") is not None and p.get("eps_b") is not None and _eps(p["eps_a"]) != _eps(p["eps_b"])
        eps_b = f"<b>{_eps(p.get('eps_b'))}</b>" if eps_differ else _eps(p.get("eps_b"))
        rows.append(("flag" if checks else "", [str(i), f"<code>{e(p['a'])}</code>", f"<code>{e(p['b'])}</code>",
                                                e(p["kind"]), _eps(p.get("eps_a")), eps_b, e(p["aligned_by"]),
                                                e(p["convention"]), _g(w.get("rel_l2"), ".2e"),
                                                _g(w.get("cosine"), ".6f"), _g(w.get("max_abs"), ".2e"),
                                                e(", ".join(sorted(set(checks))))]))
    out.append(_table("pairs-table", ["#", "A", "B", "kind", "eps A", "eps B", "aligned by", "convention",
                                      "weight rel L2", "cosine", "max abs", "findings"], rows,
                      num={0, 4, 5, 8, 9, 10}, filter_box=len(pairs) > 12))
    out.append("</section>")
    return "\n".join(out)


def _files(doc: dict[str, Any], sides: list[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for label, side in sides:
        for f in side.get("files") or []:
            digest = (f"<code>{e(f['sha256'])}</code>" if f.get("sha256")
                      else f'<span class="dim">{e(f.get("note", ""))}; mtime {e(f.get("mtime", "?"))}</span>')
            rows.append(("", [e(label), f"<code>{e(f['name'])}</code>", f"{f['size']:,}", digest]))
    if not rows:
        return ""
    return "<h3>Files</h3>" + _table("files-table", ["model", "file", "bytes", "sha256"], rows, num={2})


def _thresholds(th: dict[str, Any]) -> str:
    items = []
    for k, v in th.items():
        if k == "rel_l2" and isinstance(v, dict):
            v = ", ".join(f"{d} {t:g}" for d, t in v.items())
        items.append(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>")
    return '<h3>Thresholds</h3><dl class="kv">' + "".join(items) + "</dl>"


def _inputs_section(doc: dict[str, Any]) -> str:
    out = ['<section id="inputs"><h2>Inputs and thresholds</h2>',
           _files(doc, [("A", doc["a"]), ("B", doc["b"])])]
    act = doc.get("activations")
    if act is not None:
        inp = act.get("inputs", {})
        rows = []
        for k, v in inp.items():
            if isinstance(v, dict):
                vals = v.get("values")
                preview = ""
                if isinstance(vals, list):
                    import numpy as np

                    flat = np.asarray(vals).ravel()
                    preview = " ".join(_g(x, ".4g") for x in flat[:24]) + (" …" if flat.size > 24 else "")
                rows.append(("", [f"<code>{e(k)}</code>", e(v.get("shape")), e(v.get("dtype")),
                                  f"<code>{e(preview)}</code>" if preview else '<span class="dim">not recorded</span>']))
        out.append(f'<h3>Activation inputs</h3><p>source: {e(inp.get("source"))}'
                   + (f', seed {e(inp.get("seed"))}' if inp.get("seed") is not None else "")
                   + ' <span class="dim">(repeat with <code>--input</code> and this report\'s JSON)</span></p>'
                   + _table("inputs-table", ["name", "shape", "dtype", "values"], rows))
    out.append(_thresholds(doc.get("thresholds", {})))
    bl = doc.get("baseline")
    if bl:
        out.append(f'<h3>Baseline</h3><p><code>{e(bl["path"])}</code>: {bl["suppressed"]} of {bl["entries"]} entries '
                   "matched a finding.</p>")
        if bl.get("stale"):
            items = "".join(f"<li><code>{e(s.get('check'))}</code> {e(s.get('a') or '(model)')} → "
                            f"{e(s.get('b') or '(model)')}: {e(s.get('message', ''))}</li>" for s in bl["stale"])
            out.append(f'<div class="card warning" id="stale-baseline"><div class="head">{len(bl["stale"])} baseline '
                       f"entries no longer occur</div><ul>{items}</ul></div>")
    out.append("</section>")
    return "\n".join(out)


def render_compare(doc: dict[str, Any]) -> str:
    passed = bool(doc.get("passed"))
    verdict = "PASS" if passed else "FAIL"
    header = (f'<header class="verdict"><div class="inner"><div class="badge {"pass" if passed else "fail"}" '
              f'id="verdict">{verdict}</div><div><div class="summary" id="summary">{e(_summary_text(doc))}</div>'
              f'<div class="models">{_model_line("A: ", doc["a"])}<br>{_model_line("B: ", doc["b"])}</div>'
              '<nav><a href="#findings">findings</a>' + ('<a href="#activations">activations</a>'
                                                         if doc.get("activations") is not None else "")
              + '<a href="#pairs">pairs</a><a href="#inputs">inputs and thresholds</a></nav></div></div></header>')
    findings = doc.get("findings", [])
    body = ['<section id="findings"><h2>Findings</h2>']
    if findings:
        body += [_finding_card(f, doc.get("fail_on", "error")) for f in findings]
    else:
        body.append(f'<p>No findings: every check passed on {len(doc.get("pairs", []))} aligned pairs.</p>')
    body.append("</section>")
    if doc.get("activations") is not None:
        body.append(_activations(doc))
    body.append(_pairs(doc))
    body.append(_inputs_section(doc))
    title = f"normaudit: {verdict} — {doc['a'].get('path')} vs {doc['b'].get('path')}"
    return _page(title, header, "\n".join(body), doc)


# -- inspect ---------------------------------------------------------------------------------------------------

def render_inspect(doc: dict[str, Any]) -> str:
    norms = doc.get("norms", [])
    counts = ", ".join(f"{v} {k}" for k, v in doc.get("counts", {}).items())
    header = (f'<header class="verdict"><div class="inner"><div class="badge neutral" id="verdict">INSPECT</div><div>'
              f'<div class="summary" id="summary">{len(norms)} norm layers: {e(counts)}</div>'
              f'<div class="models">{_model_line("", doc)}</div></div></div></header>')
    body = ['<section id="norms"><h2>Norm layers</h2>']
    if norms:
        labels = [n["id"] for n in norms]
        eps = [n.get("eps") for n in norms]
        eps_plot = svg.Plot("eps per layer", labels, [svg.Series("eps", eps, svg.PALETTE["total"],
                                                                 none_is_missing=True)], "eps", "eps",
                            x_label="norm layers in file order")
        body.append(f'<figure id="plot-eps">{svg.log_plot(eps_plot)}<figcaption>Layers in file order; a layer whose '
                    "eps differs from its neighbours stands out.</figcaption></figure>")
        stats = [n.get("weight_stats") for n in norms]
        if all(stats):
            body.append('<figure id="plot-weights">' + svg.band_plot(
                "Weight mean (line) and min–max (band) per layer", labels, [s["min"] for s in stats],
                [s["mean"] for s in stats], [s["max"] for s in stats], "weight_stats", "stored weight")
                + "</figure>")
    rows = []
    for n in norms:
        s = n.get("weight_stats")
        rows.append(("", [f"<code>{e(n['id'])}</code>", e(n["kind"]), _eps(n.get("eps")), e(n["eps_source"]),
                          e(n.get("eps_detail", "")), e("x".join(str(d) for d in n.get("shape", []))),
                          e(n.get("dtype", "")), e(n.get("convention", "")), e(n.get("role", "")),
                          f"{_g(s['min'])} / {_g(s['mean'])} / {_g(s['max'])}" if s else "–"]))
    body.append(_table("norms-table", ["id", "kind", "eps", "eps source", "eps detail", "shape", "dtype",
                                       "convention", "role", "weight min / mean / max"], rows, num={2},
                       filter_box=len(norms) > 12))
    for note in doc.get("notes", []):
        body.append(f'<p class="dim">note: {e(note)}</p>')
    body.append("</section>")
    body.append('<section id="inputs"><h2>Input</h2>' + _files(doc, [("model", doc)]) + "</section>")
    return _page(f"normaudit inspect — {doc.get('path')}", header, "\n".join(body), doc)


def render(doc: dict[str, Any]) -> str:
    doc = clean(doc)
    return render_compare(doc) if doc.get("schema") == COMPARE_SCHEMA else render_inspect(doc)


RENDERER = Renderer("html", "Write a self-contained HTML report to FILE (verdict, findings, drift plots, pairs, "
                            "inputs and thresholds).", ("compare", "inspect"), render,
                    help_for={"inspect": "Write a self-contained HTML report to FILE (eps and weight min/mean/max "
                                         "along the layers, every layer in a table)."})
