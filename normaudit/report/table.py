"""Rich tables for people."""

from __future__ import annotations

import numpy as np
from rich.markup import escape
from rich.table import Table

from ..model import NormModel


def fmt_eps(eps: float | None) -> str:
    """An eps as its shortest float32 spelling (9.99999997e-07 -> 1e-06)."""
    if eps is None:
        return "?"
    return str(np.float32(eps)) if eps != 0 else "0"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def inspect_table(model: NormModel, stats: bool = True) -> Table:
    counts = ", ".join(f"{v} {k}" for k, v in model.counts().items())
    title = f"{model.path}  [{model.format}/{model.container}, {model.architecture or 'unknown architecture'}]"
    table = Table(title=title, caption=f"{len(model.norms)} norm layers: {counts}", title_justify="left")
    table.add_column("id", overflow="fold")
    table.add_column("kind")
    table.add_column("eps", justify="right")
    table.add_column("eps source")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("conv.")
    if stats:
        table.add_column("weight min / mean / max", justify="right")
    for n in model.norms:
        row = [n.id + (f" [dim]({n.role})[/dim]" if n.role == "qk_norm" else ""), n.kind.value, fmt_eps(n.eps),
               n.eps_source.value, "x".join(str(d) for d in n.shape), n.dtype,
               n.convention.value if n.convention_known else "?"]
        if stats:
            if n.weight is not None:
                w = n.weight.load()
                row.append(f"{_fmt(w.min())} / {_fmt(w.mean())} / {_fmt(w.max())}")
            else:
                row.append("-")
        table.add_row(*row)
    return table


_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def compare_tables(report) -> list:  # report: checks.CompareReport
    """Matched pairs, then findings (errors first)."""
    a, b = report.a, report.b
    pairs = Table(title=f"A: {a.path} [{a.format}]  vs  B: {b.path} [{b.format}]", title_justify="left",
                  caption=f"{len(report.pairs)} aligned pairs; A has {len(a.norms)} norms, B has {len(b.norms)}")
    for col, kw in (("A", {"overflow": "fold"}), ("B", {"overflow": "fold"}), ("kind", {}), ("eps A", {"justify": "right"}),
                    ("eps B", {"justify": "right"}), ("aligned by", {}), ("convention", {}),
                    ("rel L2", {"justify": "right"}), ("cosine", {"justify": "right"})):
        pairs.add_column(col, **kw)
    for p in report.pairs:
        w = p.weight or {}
        pairs.add_row(p.a, p.b, p.kind, fmt_eps(p.eps_a), fmt_eps(p.eps_b), p.aligned_by, p.convention,
                      f"{w['rel_l2']:.2e}" if "rel_l2" in w else "-", f"{w['cosine']:.6f}" if "cosine" in w else "-")
    findings = Table(title="findings", title_justify="left")
    for col in ("severity", "check", "A", "B", "message"):
        findings.add_column(col, overflow="fold")
    for f in report.findings:
        msg = f.message + (f"\n[dim]hint: {f.hint}[/dim]" if f.hint else "")
        findings.add_row(f"[{_SEVERITY_STYLE[f.severity.value]}]{f.severity.value}[/]", f.check, f.a or "(model)",
                         f.b or "(model)", msg)
    return [pairs, findings] if report.findings else [pairs]


def activation_tables(act) -> list:  # act: activations.ActivationReport
    """Per-point metrics with the first divergence marked, then the sensitivity ranking."""
    inp = ", ".join(f"{k} {v['shape']}" for k, v in act.inputs.items() if isinstance(v, dict))
    table = Table(title=f"activations  A: {act.backends['a']}\n             B: {act.backends['b']}",
                  title_justify="left", caption=f"inputs: {act.inputs.get('source')} ({inp})")
    for col, kw in (("", {}), ("point (A)", {"overflow": "fold"}), ("B", {"overflow": "fold"}), ("kind", {}),
                    ("max abs", {"justify": "right"}), ("mean abs", {"justify": "right"}),
                    ("rel L2", {"justify": "right"}), ("cosine", {"justify": "right"}),
                    ("SQNR dB", {"justify": "right"}), ("local rel L2", {"justify": "right"})):
        table.add_column(col, **kw)
    first = act.first_divergence
    anomalous = {a["point"] for a in act.anomalies}
    for p in act.points:
        m = p.metrics
        mark = "[bold red]!![/]" if p.a in anomalous else "[yellow]>>[/]" if p is first else ""
        local = "-" if p.local_rel_l2 is None else f"{p.local_rel_l2:.2e}"
        sq = m.get("sqnr_db")
        table.add_row(mark, p.a, p.b if p.b != p.a else "", p.kind, f"{m.get('max_abs', float('nan')):.2e}",
                      f"{m.get('mean_abs', float('nan')):.2e}", f"{m.get('rel_l2', float('nan')):.2e}",
                      f"{m.get('cosine', float('nan')):.6f}", "inf" if sq == float("inf") else f"{sq:.1f}" if sq
                      is not None else "-", local)
    out = [table]
    if first is not None:
        local = first.local_rel_l2
        if local is None:
            verdict = "no local replay for this point"
        elif local >= 0.5 * first.metrics["rel_l2"]:
            verdict = f"this layer adds the error (local rel L2 {local:.2e} of {first.metrics['rel_l2']:.2e})"
        else:
            verdict = (f"inherited: B's layer on A's input is within {local:.2e}; the drift comes from upstream "
                       f"(embeddings or non-norm weights)")
        out.append(f"[yellow]first divergence[/] (rel L2 > {act.thresholds.get('rel_l2')}): {first.a} ({first.kind}): "
                   f"{verdict}")
    if act.output:
        o = act.output
        out.append(f"next-token distributions over {o['tokens']} tokens: KLD mean {o['kld_mean']:.3g} (max "
                   f"{o['kld_max']:.3g}), top-1 agreement {100 * o['top1_agreement']:.1f}%, max |dp| {o['max_abs_dp']:.3g}")
    for a in act.anomalies:
        out.append(f"[bold red]anomaly[/] ({a['kind']}) {escape(a['message'])}")
    out.extend(runtime_tables(act))
    if act.sensitivity:
        sens = Table(title="sensitivity: one quantized tensor at a time (its block's output on A's input)",
                     title_justify="left")
        for col in ("tensor", "source", "dtype", "scope", "rel L2", "cosine"):
            sens.add_column(col)
        for r in act.sensitivity[:20]:
            cos = "-" if r.get("output_cosine") is None else f"{r['output_cosine']:.6f}"
            sens.add_row(r["tensor"], r["source"], r["dtype"], r.get("scope", ""), f"{r['output_rel_l2']:.3e}", cos)
        out.append(sens)
    return out


_CAUSE_STYLE = {"conversion": "bold red", "runtime": "bold magenta", "conversion+runtime": "bold red"}


def runtime_tables(act) -> list:  # act: activations.ActivationReport
    """What the llama.cpp backend adds: the three-way attribution and the tokenizer comparison."""
    out: list = []
    att = act.attribution
    if att:
        t = Table(title="three-way attribution  (A vs replay: the file's tensors and eps in the source architecture; "
                        "replay vs llama.cpp: what the runtime does beyond them)", title_justify="left",
                  caption=f"the runtime leg diverges above rel L2 {att['runtime_rel_l2']:.1e} (llama.cpp's measured "
                          "precision for this file's weights, or --act-rel-l2)")
        for col in ("point (A)", "A vs replay", "replay vs llama.cpp", "A vs llama.cpp", "cause"):
            t.add_column(col, justify="left" if col in ("point (A)", "cause") else "right")

        def rel(m) -> str:
            return "-" if not m or m.get("rel_l2") is None else f"{m['rel_l2']:.2e}"

        for r in att["points"]:
            cause = r["cause"]
            t.add_row(r["point"], rel(r["a_vs_replay"]), rel(r["replay_vs_runtime"]), rel(r["a_vs_runtime"]),
                      f"[{_CAUSE_STYLE.get(cause, '')}]{cause}[/]" if cause else "")
        for leg, label in (("a_vs_replay", "A vs replay"), ("replay_vs_runtime", "replay vs llama.cpp")):
            o = att["output"].get(leg)
            if o:
                t.add_section()
                t.add_row(f"next-token: {label}", f"KLD {o['kld_mean']:.3g}", f"max {o['kld_max']:.3g}",
                          f"top-1 {100 * o['top1_agreement']:.1f}%", f"max |dp| {o['max_abs_dp']:.3g}")
        out.append(t)
        conv, rt = att["first"].get("conversion"), att["first"].get("runtime")
        out.append(f"[bold]attribution[/]: conversion (A vs replay) {'first diverges at ' + conv if conv else 'matches'}; "
                   f"runtime (replay vs llama.cpp) {'first diverges at ' + rt if rt else 'matches'}")
    tok = act.tokenization
    if tok is not None:
        n = f"{len(tok['hf'])} HF / {len(tok['gguf'])} llama.cpp tokens, {tok['source']}"
        if tok["match"]:
            out.append(f"tokenization: the GGUF's vocabulary and the HF tokenizer agree ({n})")
        elif tok.get("body_match"):
            out.append(f"[yellow]tokenization[/]: same text pieces, different special tokens added ({n})")
        else:
            d = tok.get("first_difference", {})
            out.append(f"[bold red]tokenization[/]: differs from HF token {d.get('hf_index')} ({n})")
    return out
