"""Rich tables for people."""

from __future__ import annotations

import numpy as np
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
