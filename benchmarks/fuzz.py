"""The long fuzz run (issue #7): thousands of seeded mutated files per format through normaudit's CLI.

    python benchmarks/fuzz.py --cases-per-format 2000 [--formats gguf,onnx,...] [--seed S] [--jobs 2]
                              [--timeout 20] [--mem-cap-mib 1024] [--json failures.json] [--keep DIR]
    python benchmarks/fuzz.py --replay gguf:123456789 [--debug]

Each case runs in a child forked from this process (tests/fuzzing.py has the mutators, the runner and the
oracle).  Prints, per format: cases run, outcomes by class, failures grouped by cause (class, the normaudit
function that failed, the normalized message) with example seeds, the worst wall time and the worst peak RSS of
a case.  Exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fuzzing as F  # noqa: E402


def _progress(fmt: str, total: int, t0: float):
    state = {"n": 0, "bad": 0}

    def on_result(r: F.Result) -> None:
        state["n"] += 1
        state["bad"] += not r.ok
        if state["n"] % 100 == 0 or state["n"] == total:
            rate = state["n"] / max(time.monotonic() - t0, 1e-6)
            print(f"  [{fmt}] {state['n']}/{total} cases, {state['bad']} failed, {rate:.1f} cases/s",
                  file=sys.stderr, flush=True)

    return on_result


def report_format(fmt: str, results: list[F.Result], seconds: float) -> list[str]:
    counts = collections.Counter(r.outcome for r in results)
    out = [f"== {fmt}: {len(results)} cases in {seconds:.0f}s; outcomes: "
           + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))]
    if results:
        w = max(results, key=lambda r: r.wall)
        m = max(results, key=lambda r: r.peak_rss_mb)
        out.append(f"   worst wall time {w.wall:.2f}s (seed {w.case.seed}, {w.case.mutation}, {w.outcome}); "
                   f"worst peak RSS +{m.peak_rss_mb:.0f} MiB (seed {m.case.seed}, {m.case.mutation}, {m.outcome})")
    groups = F.group_failures(results)
    if groups:
        out.append(f"   {len(groups)} distinct failure causes:")
    for (_, outcome, where, msg), rs in groups.items():
        muts = collections.Counter(r.case.mutation for r in rs).most_common(3)
        ex = rs[0]
        out.append(f"   {len(rs):5d} x {outcome:14s} {where or '?'}")
        out.append(f"            {(msg or ex.message)[:200]}")
        out.append(f"            mutations: {', '.join(f'{k} ({v})' for k, v in muts)}; e.g. seed {ex.case.seed} "
                   f"[{ex.case.argv[0]} {ex.case.mutation}: {ex.case.detail[:90]}]; seeds "
                   + " ".join(str(r.case.seed) for r in rs[:6]))
    return out


def _group_json(fmt: str, results: list[F.Result]) -> list[dict]:
    out = []
    for (_, outcome, where, msg), rs in F.group_failures(results).items():
        out.append({"format": fmt, "class": outcome, "where": where, "message": msg or rs[0].message,
                    "count": len(rs),
                    "cases": [{"seed": r.case.seed, "command": r.case.argv[0], "mutation": r.case.mutation,
                               "detail": r.case.detail, "exit": r.exit_code, "signal": r.signal,
                               "wall": round(r.wall, 3), "peak_rss_mib": round(r.peak_rss_mb, 1),
                               "reasons": r.reasons, "message": r.message,
                               "debug_trace_tail": r.debug_trace[-1500:]} for r in rs[:25]]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases-per-format", type=int, default=2000)
    ap.add_argument("--formats", default=",".join(F.FORMATS), help="comma-separated: " + ",".join(F.FORMATS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first case index (to split a run)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--mem-cap-mib", type=int, default=1024, help="RSS growth per case before it is killed")
    ap.add_argument("--json", type=Path, help="write the failure groups (with all their seeds) here")
    ap.add_argument("--keep", type=Path, help="build the cases under this folder and keep them")
    ap.add_argument("--replay", metavar="FORMAT:SEED", help="run one case and show everything about it")
    ap.add_argument("--debug", action="store_true", help="with --replay: run with NORMAUDIT_DEBUG=1")
    args = ap.parse_args(argv)
    limits = F.Limits(timeout=args.timeout, mem_cap=args.mem_cap_mib * 2**20)

    if args.replay:
        fmt, seed = args.replay.split(":")
        res = F.replay(fmt, int(seed), debug=args.debug, keep=args.keep, limits=limits)
        print(F.describe(res))
        return 0 if res.ok else 1

    formats = [f for f in args.formats.split(",") if f]
    for f in formats:
        if f not in F.FORMATS:
            ap.error(f"unknown format {f!r}; one of {', '.join(F.FORMATS)}")
    t_all = time.monotonic()
    F.prepare(formats)
    lines: list[str] = []
    all_groups: list[dict] = []
    failed = 0
    for fmt in formats:
        t0 = time.monotonic()
        results = F.fuzz_format(fmt, args.cases_per_format, args.seed, start=args.start, jobs=args.jobs,
                                limits=limits, root=args.keep / fmt if args.keep else None, keep=bool(args.keep),
                                on_result=_progress(fmt, args.cases_per_format, t0))
        block = report_format(fmt, results, time.monotonic() - t0)
        print("\n".join(block), flush=True)
        lines += block
        all_groups += _group_json(fmt, results)
        failed += sum(not r.ok for r in results)
    print(f"\n{failed} failing cases; seed {args.seed}, {args.cases_per_format} cases per format, "
          f"{time.monotonic() - t_all:.0f}s. Replay one: python benchmarks/fuzz.py --replay FORMAT:SEED --debug")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "cases_per_format": args.cases_per_format,
                                         "timeout": args.timeout, "groups": all_groups}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
