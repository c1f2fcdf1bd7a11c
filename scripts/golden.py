"""Record / check the JSON documents normaudit writes for every clean pair of a corpus (a refactoring guard).

    python scripts/golden.py record DIR [--corpus ../shared/corpus]   # writes DIR/*.json from the current code
    python scripts/golden.py check DIR  [--corpus ../shared/corpus]   # re-runs and diffs against DIR

Covers `inspect --json` of every corpus file and `compare --json` of every clean pair the corpus sweep uses
(HF vs each GGUF / ONNX, ONNX vs GGUF, GGUF vs GGUF, the CNN exports). Paths are made relative to the corpus
so a record made in one checkout checks in another. Exit 1 when any document differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cases(corpus: Path) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    files = [p for p in sorted((corpus / "hf").iterdir()) if p.is_dir()]
    files += sorted((corpus / "gguf").glob("*.gguf")) + sorted((corpus / "onnx").glob("*.onnx"))
    files += [corpus / "onnx/cnn.pt2", corpus / "onnx/cnn.pt"]
    for f in files:
        rel = f.relative_to(corpus)
        out.append((f"inspect__{str(rel).replace('/', '_')}", ["inspect", str(rel), "--json", "-"]))
    pairs = []
    for model in ("llama", "qwen3", "gemma3"):
        for g in sorted((corpus / "gguf").glob(f"{model}-*.gguf")):
            pairs.append((f"hf/{model}", f"gguf/{g.name}"))
        for o in sorted((corpus / "onnx").glob(f"{model}-*.onnx")):
            pairs.append((f"hf/{model}", f"onnx/{o.name}"))
            pairs.append((f"onnx/{o.name}", f"gguf/{model}-Q4_K_M.gguf"))
        pairs.append((f"gguf/{model}-f32.gguf", f"gguf/{model}-Q4_K_M.gguf"))
    pairs += [("hf/bert", f"onnx/{o.name}") for o in sorted((corpus / "onnx").glob("bert-*.onnx"))]
    pairs += [("onnx/cnn.pt2", f"onnx/{o.name}") for o in sorted((corpus / "onnx").glob("cnn-*.onnx"))]
    pairs += [("onnx/cnn.pt", f"onnx/{o.name}") for o in sorted((corpus / "onnx").glob("cnn-*.onnx"))]
    for a, b in pairs:
        name = f"compare__{a.replace('/', '_')}__{b.replace('/', '_')}"
        out.append((name, ["compare", a, b, "--json", "-"]))
    return out


# run-dependent keys, and `files` (the input files' names, sizes and hashes: provenance, not audit results)
_VOLATILE = {"created", "normaudit_version", "sha256", "timings", "duration_s", "files"}


def _strip(doc):
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if k not in _VOLATILE}
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


def run(corpus: Path, args: list[str]) -> dict:
    # this checkout's normaudit, not whichever one the environment has installed (an editable install of
    # another worktree would otherwise be what gets checked)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-m", "normaudit", *args], cwd=corpus, capture_output=True, text=True,
                          timeout=600, env=env)
    if proc.returncode not in (0, 1):
        return {"exit": proc.returncode, "stderr": proc.stderr.strip()}
    return {"exit": proc.returncode, "doc": _strip(json.loads(proc.stdout))}


def diff_paths(want, got, path: str = "") -> list[str]:
    """Where two documents differ: JSON paths (list indices as [i]), values shown when short."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(want) | set(got)):
            if k not in got:
                out.append(f"{path}.{k}: removed")
            elif k not in want:
                out.append(f"{path}.{k}: added")
            else:
                out += diff_paths(want[k], got[k], f"{path}.{k}")
        return out
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (w, g) in enumerate(zip(want, got)) for d in diff_paths(w, g, f"{path}[{i}]")]
    if want == got:
        return []
    short = lambda v: json.dumps(v)[:80]  # noqa: E731
    return [f"{path}: {short(want)} -> {short(got)}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["record", "check"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--show", type=int, default=20, help="check: print up to this many differing paths per document")
    ns = ap.parse_args()
    corpus = ns.corpus.resolve()
    ns.dir.mkdir(parents=True, exist_ok=True)
    bad = 0
    todo = cases(corpus)
    for i, (name, args) in enumerate(todo, 1):
        got = run(corpus, args)
        target = ns.dir / f"{name}.json"
        if ns.mode == "record":
            target.write_text(json.dumps(got, indent=1, sort_keys=True))
        else:
            want = json.loads(target.read_text()) if target.is_file() else None
            if want != json.loads(json.dumps(got, sort_keys=True)):
                bad += 1
                print(f"DIFFERS: {name}", flush=True)
                for d in diff_paths(want, json.loads(json.dumps(got, sort_keys=True)))[:ns.show]:
                    print(f"    {d}", flush=True)
        print(f"[{i}/{len(todo)}] {name}", file=sys.stderr, flush=True)
    print(f"{len(todo)} documents, {bad} differ" if ns.mode == "check" else f"recorded {len(todo)} documents")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
