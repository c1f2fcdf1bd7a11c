"""The terminal view of a document: verdict and findings first, tables under ``--verbose``.

Everything here renders the document dicts (``AuditReport.to_dict()``, ``inspect_document()``); text taken
from models (layer ids, paths, messages) is never read as rich markup. Tables are used when their rows fit
the console; on narrow consoles (80 columns) each row becomes two lines instead of names folded into pieces.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Iterable

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .document import divergence_verdict, is_failing

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def fmt_eps(eps: float | None) -> str:
    """An eps as its shortest float32 spelling (9.99999997e-07 -> 1e-06)."""
    if eps is None:
        return "?"
    return str(np.float32(eps)) if eps != 0 else "0"


def _g(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _model_label(side: dict[str, Any], width: int = 0, lead: int = 0) -> Text:
    """``path  [format/container, architecture]``; the bracket goes to its own line when the two do not fit in
    ``width`` columns (``lead``: columns already used on the line)."""
    path = str(side.get("path"))
    info = f"[{side.get('format')}/{side.get('container')}, {side.get('architecture') or 'unknown architecture'}]"
    t = Text(path, style="bold")
    wrap = width and lead + len(path) + 2 + len(info) > width
    t.append(("\n    " if wrap else "  ") + info, style="dim")
    return t


# -- verdict -------------------------------------------------------------------------------------------------

def verdict_block(doc: dict[str, Any], width: int) -> Text:
    """The verdict line wrapped at word boundaries for ``width`` columns (``--quiet`` prints it unwrapped)."""
    line = verdict_line(doc)
    wrapped = indented(line.plain, width, indent=0)
    wrapped.stylize(str(line.spans[0].style), 0, 4) if line.spans else None
    return wrapped


def verdict_line(doc: dict[str, Any]) -> Text:
    """``PASS|FAIL: N errors, N warnings (fail on X)[, N suppressed by baseline][; activations: ...]``."""
    live = [f for f in doc.get("findings", []) if not f.get("suppressed")]
    count = {s: sum(f["severity"] == s for f in live) for s in ("error", "warning", "info")}
    suppressed = len(doc.get("findings", [])) - len(live)
    t = Text("PASS" if doc.get("passed") else "FAIL", style="bold green" if doc.get("passed") else "bold red")
    t.append(f": {count['error']} errors, {count['warning']} warnings (fail on {doc.get('fail_on')})")
    if suppressed:
        t.append(f", {suppressed} suppressed by baseline")
    act = doc.get("activations")
    if act is not None:
        t.append(f"; activations: {act.get('verdict') or 'compared'}")
    return t


# -- findings --------------------------------------------------------------------------------------------------

def finding_block(f: dict[str, Any], fail_on: str, width: int = 80) -> Text:
    head = Text()
    sev = f["severity"]
    if f.get("suppressed"):
        head.append("~ ", style="dim")
        head.append(sev, style="dim")
    else:
        head.append("x " if is_failing(f, fail_on) else "! " if sev == "warning" else "i ",
                    style=_SEVERITY_STYLE.get(sev, ""))
        head.append(sev, style=_SEVERITY_STYLE.get(sev, ""))
    head.append("  ")
    head.append(f["check"], style="bold")
    head.append("  ")
    if f.get("a") is None and f.get("b") is None:
        layers = (f.get("values") or {}).get("layers")
        head.append(f"model-wide ({_plural(len(layers), 'layer')})" if isinstance(layers, list) else "model",
                    style="dim")
    elif f.get("a") == f.get("b"):
        head.append(str(f.get("a")))
    else:
        head.append(str(f.get("a") or "-"))
        head.append(" -> ", style="dim")
        head.append(str(f.get("b") or "-"))
    body = Text()
    body.append_text(indented(f.get("message", ""), width))
    if f.get("hint"):
        body.append("\n")
        body.append_text(indented(f"hint: {f['hint']}", width, "dim"))
    if f.get("suppressed"):
        body.append("\n")
        body.append_text(indented("suppressed by baseline: " + (f.get("reason") or "(no reason given)"), width,
                                  "dim"))
    head.append("\n")
    head.append_text(body)
    return head


def findings_view(doc: dict[str, Any], width: int = 80) -> list[RenderableType]:
    findings = doc.get("findings", [])
    if not findings:
        return []
    out: list[RenderableType] = [Text("findings", style="bold underline")]
    out += [finding_block(f, doc.get("fail_on", "error"), width) for f in findings]
    return out


# -- adaptive tables -------------------------------------------------------------------------------------------

def _fits(width: int, columns: Iterable[int]) -> bool:
    cols = list(columns)
    return sum(cols) + 3 * len(cols) + 1 <= width


def indented(text: str, width: int, style: str = "", indent: int = 4) -> Text:
    """``text`` wrapped at word boundaries to ``width`` and indented (names are never cut: a name longer than
    the line stays whole)."""
    lines = []
    for para in text.split("\n"):
        lines += textwrap.wrap(para, max(20, width - indent), break_long_words=False, break_on_hyphens=False) or [""]
    return Text("\n".join(" " * indent + line for line in lines), style=style)


def _stacked(rows: list[tuple[Text, str]], width: int) -> Text:
    """Two lines per row: a head (names) and its details, indented."""
    out = Text()
    for i, (head, detail) in enumerate(rows):
        if i:
            out.append("\n")
        out.append_text(head)
        out.append("\n")
        out.append_text(indented(detail, width, "dim"))
    return out


def pairs_view(doc: dict[str, Any], width: int) -> RenderableType:
    a, b = doc["a"], doc["b"]
    pairs = doc.get("pairs", [])
    title = Text("aligned pairs", style="bold")
    rows = []
    for p in pairs:
        w = p.get("weight") or {}
        rows.append([p["a"], p["b"], p["kind"], fmt_eps(p.get("eps_a")), fmt_eps(p.get("eps_b")), p["aligned_by"],
                     p["convention"], _g(w.get("rel_l2"), ".2e"), _g(w.get("cosine"), ".6f")])
    heads = ["A", "B", "kind", "eps A", "eps B", "aligned by", "convention", "rel L2", "cosine"]
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(heads)]
    if _fits(width, widths):
        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False)
        for i, h in enumerate(heads):
            table.add_column(h, no_wrap=True, justify="right" if i in (3, 4, 7, 8) else "left")
        for r in rows:
            table.add_row(*(Text(str(c)) for c in r))
        return table
    stacked = []
    for r in rows:
        head = Text(r[0])
        head.append(" -> ", style="dim")
        head.append(r[1])
        stacked.append((head, f"{r[2]}  eps {r[3]} / {r[4]}  {r[5]}  {r[6]}\nweight rel L2 {r[7]}  cosine {r[8]}"))
    return Group(title, _stacked(stacked, width))


def activations_summary(act: dict[str, Any], width: int = 80) -> list[RenderableType]:
    points = act.get("points", [])
    out: list[RenderableType] = [Text("activations", style="bold underline")]
    inp = act.get("inputs", {})
    shapes = ", ".join(f"{k} {v['shape']}" for k, v in inp.items() if isinstance(v, dict))
    out.append(indented(f"A: {act['backends'].get('a')}\nB: {act['backends'].get('b')}\ninputs: "
                        f"{inp.get('source')} ({shapes}); {len(points)} points compared", width, "dim", indent=0))
    fd = act.get("first_divergence")
    out.append(indented(act.get("verdict") or "", width, "bold red" if act.get("anomalies") else "green", indent=0))
    if act.get("embedding"):
        out.append(embedding_summary(act["embedding"], width))
    o = act.get("output")
    if o:
        out.append(indented(f"next-token distributions over {o['tokens']} tokens: KLD mean {_g(o['kld_mean'], '.3g')} "
                            f"(max {_g(o['kld_max'], '.3g')}), top-1 agreement {100 * o['top1_agreement']:.1f}%, max "
                            f"|dp| {_g(o['max_abs_dp'], '.3g')}", width, indent=0))
    for an in act.get("anomalies") or []:
        t = indented(f"anomaly ({an['kind']}) {an['message']}", width, indent=0)
        t.stylize("bold red", 0, len("anomaly"))
        out.append(t)
    if fd is not None:
        t = Text("first divergence", style="yellow")
        rest = indented(f"first divergence (rel L2 > {act.get('thresholds', {}).get('rel_l2')}): {fd['a']} "
                        f"({fd['kind']}): rel L2 {_g(fd.get('rel_l2'), '.3g')}, cosine {_g(fd.get('cosine'), '.6f')}; "
                        + divergence_verdict(fd.get('local_rel_l2'), fd.get('rel_l2'), act), width, indent=0)
        t.append(rest.plain[len("first divergence"):])
        out.append(t)
    else:
        worst = max(points, key=lambda p: p.get("rel_l2") if isinstance(p.get("rel_l2"), (int, float)) and
                    not math.isnan(p["rel_l2"]) else -1, default=None)
        if worst is not None:
            out.append(indented(f"no divergence; largest rel L2 {_g(worst.get('rel_l2'), '.2e')} at {worst['a']}",
                                width, indent=0))
    return out


def activation_points_view(act: dict[str, Any], width: int) -> RenderableType:
    fd = act.get("first_divergence")
    anomalous = {an["point"] for an in act.get("anomalies") or []}
    heads = ["", "point (A)", "B", "kind", "max abs", "mean abs", "rel L2", "cosine", "SQNR dB", "local rel L2"]
    rows = []
    for p in act.get("points", []):
        first = p["a"] in anomalous or (not anomalous and fd is not None and p["a"] == fd["a"] and p["b"] == fd["b"])
        sq = p.get("sqnr_db")
        if sq is None and p.get("max_abs") == 0:
            sq = math.inf  # identical: infinite SQNR (null in JSON)
        rows.append((first, [("!!" if p["a"] in anomalous else ">>") if first else "", p["a"], p["b"] if p["b"] != p["a"] else "", p["kind"],
                             _g(p.get("max_abs"), ".2e"), _g(p.get("mean_abs"), ".2e"), _g(p.get("rel_l2"), ".2e"),
                             _g(p.get("cosine"), ".6f"), _g(sq, ".1f"), _g(p.get("local_rel_l2"), ".2e")]))
    title = Text("activations, in execution order", style="bold")
    widths = [max([len(h)] + [len(str(r[i])) for _, r in rows]) for i, h in enumerate(heads)]
    if _fits(width, widths):
        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False)
        for i, h in enumerate(heads):
            table.add_column(h, no_wrap=True, justify="right" if i >= 4 else "left")
        for first, r in rows:
            table.add_row(*(Text(str(c), style="bold red" if first else "") for c in r))
        return table
    stacked = []
    for first, r in rows:
        head = Text((">> " if first else "") + r[1], style="bold red" if first else "")
        if r[2]:
            head.append(" -> " + r[2], style="dim")
        head.append(f" ({r[3]})", style="dim")
        stacked.append((head, f"rel L2 {r[6]}  cos {r[7]}  local {r[9]}  max {r[4]}  mean {r[5]}  SQNR {r[8]}"))
    return Group(title, _stacked(stacked, width))


def runtime_summary(act: dict[str, Any], width: int = 80) -> list[RenderableType]:
    """What the llama.cpp backend adds: which leg of the three-way comparison diverges first, the next-token
    figures of both legs, and whether the GGUF's vocabulary tokenizes like the HF tokenizer."""
    out: list[RenderableType] = []
    att = act.get("attribution")
    if att:
        first = att.get("first", {})
        conv, rt = first.get("conversion"), first.get("runtime")
        line = (f"three-way attribution: conversion (A vs replay: the file's tensors and eps) "
                f"{'first diverges at ' + conv if conv else 'matches'}; runtime (replay vs llama.cpp: what only the "
                f"runtime does) {'first diverges at ' + rt if rt else 'matches'} (runtime leg bound rel L2 "
                f"{_g(att.get('runtime_rel_l2'), '.2g')})")
        t = indented(line, width, indent=0)
        t.stylize("bold", 0, len("three-way attribution"))
        out.append(t)
        for leg, label in (("a_vs_replay", "A vs replay"), ("replay_vs_runtime", "replay vs llama.cpp")):
            o = (att.get("output") or {}).get(leg)
            if o:
                out.append(indented(f"next-token {label}: KLD mean {_g(o['kld_mean'], '.3g')} (max "
                                    f"{_g(o['kld_max'], '.3g')}), top-1 agreement {100 * o['top1_agreement']:.1f}%, "
                                    f"max |dp| {_g(o['max_abs_dp'], '.3g')}", width, indent=0))
    tok = act.get("tokenization")
    if tok is not None:
        n = f"{len(tok['hf'])} HF / {len(tok['gguf'])} llama.cpp tokens, {tok['source']}"
        if tok["match"]:
            out.append(indented(f"tokenization: the GGUF's vocabulary and the HF tokenizer agree ({n})", width,
                                indent=0))
        elif tok.get("body_match"):
            t = indented(f"tokenization: same text pieces, different special tokens added ({n})", width, indent=0)
            t.stylize("yellow", 0, len("tokenization"))
            out.append(t)
        else:
            d = tok.get("first_difference", {})
            t = indented(f"tokenization: differs from HF token {d.get('hf_index')} ({n})", width, indent=0)
            t.stylize("bold red", 0, len("tokenization"))
            out.append(t)
    return out


_CAUSE_STYLE = {"conversion": "bold red", "runtime": "bold magenta", "conversion+runtime": "bold red"}


def attribution_view(act: dict[str, Any], width: int) -> RenderableType:
    """Per point: A vs replay (the file's tensors and eps), replay vs llama.cpp (the runtime), A vs llama.cpp."""
    att = act["attribution"]
    heads = ["point (A)", "A vs replay", "replay vs llama.cpp", "A vs llama.cpp", "cause"]

    def rel(m: dict[str, Any] | None) -> str:
        return _g((m or {}).get("rel_l2"), ".2e")

    rows = [[r["point"], rel(r.get("a_vs_replay")), rel(r.get("replay_vs_runtime")), rel(r.get("a_vs_runtime")),
             r.get("cause") or ""] for r in att.get("points", [])]
    title = Text("three-way attribution (rel L2 per point)", style="bold")
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(heads)]
    if _fits(width, widths):
        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False)
        for i, h in enumerate(heads):
            table.add_column(h, no_wrap=True, justify="right" if i in (1, 2, 3) else "left")
        for r in rows:
            table.add_row(*(Text(str(c), style=_CAUSE_STYLE.get(r[4], "") if i == 4 else "") for i, c in enumerate(r)))
        return table
    stacked = []
    for r in rows:
        head = Text(r[0])
        if r[4]:
            head.append(f"  {r[4]}", style=_CAUSE_STYLE.get(r[4], ""))
        stacked.append((head, f"A vs replay {r[1]}  replay vs llama.cpp {r[2]}  A vs llama.cpp {r[3]}"))
    return Group(title, _stacked(stacked, width))


def sensitivity_view(act: dict[str, Any], limit: int = 20) -> RenderableType | None:
    """The ``limit`` tensors whose quantization costs most (asked for with --sensitivity: shown without --verbose)."""
    sens = act.get("sensitivity") or []
    if not sens:
        return None
    more = f"; top {limit} of {len(sens)}" if len(sens) > limit else ""
    table = Table(box=box.SIMPLE_HEAD, title=Text("sensitivity: one quantized tensor at a time (its block's output on "
                                                  f"A's input; weight error for tensors outside blocks{more})",
                                                  style="bold"),
                  title_justify="left", pad_edge=False)
    for col in ("tensor", "dtype", "scope", "rel L2", "cosine"):
        table.add_column(col, no_wrap=col != "tensor", justify="right" if col in ("rel L2", "cosine") else "left")
    for r in sens[:limit]:
        table.add_row(Text(str(r["tensor"])), Text(str(r["dtype"])), Text(str(r.get("scope", ""))),
                      _g(r.get("output_rel_l2"), ".3e"), _g(r.get("output_cosine"), ".6f"))
    return table


def baseline_view(doc: dict[str, Any]) -> list[RenderableType]:
    bl = doc.get("baseline")
    if not bl:
        return []
    t = Text(f"baseline {bl['path']}: {bl['suppressed']} of {_plural(bl['entries'], 'entry').replace('entrys', 'entries')} "
             "matched", style="dim")
    out: list[RenderableType] = [t]
    stale = bl.get("stale") or []
    if stale:
        warn = Text(f"{_plural(len(stale), 'baseline entry').replace('entrys', 'entries')} no longer "
                    f"{'occurs' if len(stale) == 1 else 'occur'} (remove them or rewrite with --write-baseline):",
                    style="yellow")
        out.append(warn)
        for e in stale:
            out.append(Text(f"    {e.get('check')}  {e.get('a') or '(model)'} -> {e.get('b') or '(model)'}"))
    return out


def compare_view(doc: dict[str, Any], width: int, verbose: bool = False) -> list[RenderableType]:
    """Verdict, models, findings, activation summary, baseline; with ``verbose`` every pair and point."""
    out: list[RenderableType] = [verdict_block(doc, width)]
    head = Text()
    for label, side in (("A: ", doc["a"]), ("\nB: ", doc["b"])):
        head.append(label, style="dim")
        head.append_text(_model_label(side, width, 3))
        for note in side.get("notes", []):
            head.append(f"\n    {note}", style="dim")
    n = len(doc.get("pairs", []))
    head.append(f"\n{n} aligned pairs; A has {len(doc['a'].get('norms', []))} norms, B has "
                f"{len(doc['b'].get('norms', []))}" + ("" if verbose else " (--verbose lists them)"), style="dim")
    out.append(head)
    out += findings_view(doc, width)
    act = doc.get("activations")
    if act is not None:
        out += activations_summary(act, width)
        out += runtime_summary(act, width)
    out += baseline_view(doc)
    if verbose:
        out += contracts_view(doc["a"], width, "A: ") + contracts_view(doc["b"], width, "B: ")
        out.append(pairs_view(doc, width))
        if act is not None:
            out.append(activation_points_view(act, width))
            if act.get("attribution"):
                out.append(attribution_view(act, width))
    if act is not None:
        sens = sensitivity_view(act, 20 if verbose else 5)  # asked for explicitly: shown without --verbose too
        if sens is not None:
            out.append(sens)
        out += [Text(f"note: {note}", style="dim") for note in act.get("notes", [])]
    if verbose:
        out.append(verdict_block(doc, width))
    return out


# -- contracts around the model --------------------------------------------------------------------------------

def _vals(v: Any) -> str:
    return "-" if v is None else "[" + ", ".join(f"{x:.6g}" for x in v) + "]"


def preprocess_lines(p: dict[str, Any]) -> list[str]:
    """The preprocessing contract in a few lines: where it happens, its values and where each was read."""
    head = f"preprocess ({p['where']})"
    if p["where"] == "unknown":
        return [head + ": " + "; ".join(p.get("notes") or ["not stated by this file"])]
    rescale = p.get("rescale")
    parts = [f"rescale {'1/255' if rescale and abs(rescale - 1 / 255) < 1e-9 else _g(rescale)}"
             if rescale is not None else "rescale not stated (pixels / 255 expected)"]
    if p.get("do_normalize") is False:
        parts.append("no mean/std normalization")
    else:
        parts.append(f"mean {_vals(p.get('mean'))}, std {_vals(p.get('std'))}")
    canon = p.get("canonical")
    if canon and (canon["mean"] != p.get("mean") or canon["std"] != p.get("std")):
        parts.append(f"= mean {_vals(canon['mean'])}, std {_vals(canon['std'])} of pixels / 255")
    lines = [head + ": " + ", ".join(parts)]
    for key, src in (p.get("sources") or {}).items():
        lines.append(f"    {key}: {src}")
    lines += [f"    note: {n}" for n in p.get("notes") or []]
    return lines


def embedding_lines(e: dict[str, Any]) -> list[str]:
    norm = {True: "L2-normalized", False: "not normalized", None: "normalization left to the runtime"}[e["normalize"]]
    lines = [f"embedding ({e['where']}): pooling {e['pooling'] or 'not stated'}, {norm}"
             + (f", dim {e['dim']}" if e.get("dim") else "")]
    for key, src in (e.get("sources") or {}).items():
        lines.append(f"    {key}: {src}")
    lines += [f"    runtime: {r}" for r in e.get("runtime") or []]
    lines += [f"    note: {n}" for n in e.get("notes") or []]
    return lines


def contracts_view(doc: dict[str, Any], width: int, label: str = "") -> list[RenderableType]:
    """The preprocessing / embedding contracts a document's model states (nothing when it states none)."""
    out: list[RenderableType] = []
    for key, fn in (("preprocess", preprocess_lines), ("embedding", embedding_lines)):
        if doc.get(key):
            lines = fn(doc[key])
            text = Text(label + lines[0], style="bold")
            for line in lines[1:]:
                text.append("\n")
                text.append_text(indented(line.strip(), width, "dim", indent=4))
            out.append(text)
    return out


def embedding_summary(emb: dict[str, Any], width: int = 80) -> Text:
    a, b, c = emb["a"]["norm"], emb["b"]["norm"], emb["cosine"]
    return indented(f"output vectors ({emb['vectors']} x {emb['dim']}): norm min / median / max A {_g(a['min'])} / "
                    f"{_g(a['median'])} / {_g(a['max'])}, B {_g(b['min'])} / {_g(b['median'])} / {_g(b['max'])}; "
                    f"cosine A-B min {c['min']:.6f}, median {c['median']:.6f}: {emb['verdict']}", width, indent=0)


# -- inspect ---------------------------------------------------------------------------------------------------

def inspect_caption(doc: dict[str, Any]) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in doc.get("counts", {}).items())
    return f"{len(doc.get('norms', []))} norm layers: {counts}"


def inspect_view(doc: dict[str, Any], width: int, verbose: bool = False) -> list[RenderableType]:
    """The norm layers of one model: a table (two lines per layer on narrow consoles), then the counts."""
    title = _model_label(doc)
    heads = ["id", "kind", "eps", "eps source", "shape", "dtype", "conv."]
    stats = any("weight_stats" in n for n in doc.get("norms", []))
    if stats:
        heads.append("weight min / mean / max")
    if verbose:
        heads.append("eps detail")
    rows = []
    for n in doc.get("norms", []):
        ident = n["id"] + (" (qk_norm)" if n.get("role") in ("qk_norm", "attn_q_norm", "attn_k_norm") else "")
        row = [ident, n["kind"], fmt_eps(n.get("eps")), n["eps_source"], "x".join(str(d) for d in n.get("shape", [])),
               n.get("dtype", ""), n.get("convention", "?")]
        if stats:
            s = n.get("weight_stats")
            row.append(f"{_g(s['min'])} / {_g(s['mean'])} / {_g(s['max'])}" if s else "-")
        if verbose:
            row.append(n.get("eps_detail", ""))
        rows.append(row)
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(heads)]
    caption = Text(inspect_caption(doc))
    if _fits(width, widths) or verbose and _fits(width, widths[:-1]):
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for h in heads:
            table.add_column(h, no_wrap=h != "eps detail",
                             justify="right" if h in ("eps", "weight min / mean / max") else "left")
        for r in rows:
            table.add_row(*(Text(str(c)) for c in r))
        body: RenderableType = table
    else:
        stacked = []
        for r in rows:
            detail = f"{r[1]}  eps {r[2]} ({r[3]})  {r[4]} {r[5]}  conv. {r[6]}"
            if stats:
                detail += f"\nweight min / mean / max {r[7]}"
            if verbose:
                detail += f"\n{r[-1]}"
            stacked.append((Text(r[0]), detail))
        body = Group(title, _stacked(stacked, width))
    out: list[RenderableType] = [body, caption]
    out += contracts_view(doc, width)
    return out
