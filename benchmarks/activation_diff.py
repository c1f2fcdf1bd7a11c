"""Benchmark: activation diff vs two plain forward passes of the same two models (time and peak memory).

    python benchmarks/activation_diff.py [--hidden 512] [--layers 8] [--seq 128] [--vocab 4000] [--qtype Q8_0]

Builds a random llama-style HF model in a temporary folder (nothing is downloaded), writes its GGUF with
gguf-py (as testmodels/generate.py does), then in fresh subprocesses measures
  plain: load the HF model and the GGUF replay, run each once (no capture)
  diff:  normaudit.activations.diff_activations(HF, GGUF) (loads, captures, diffs)
and prints the ratios diff / plain of wall time and of peak RSS above the post-import baseline.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(mode: str, hf: str, gguf: str, seq: int) -> None:
    import numpy as np
    import torch  # noqa: F401  (imports are part of the baseline, not of the measurement)
    import transformers  # noqa: F401

    from normaudit.activations import diff_activations
    from normaudit.activations.runners.replay import replay_model
    from normaudit.activations.runners.hf import hf_forward, load_hf_module

    base = _rss_mb()
    ids = {"input_ids": np.random.default_rng(0).integers(3, 1000, size=(1, seq), dtype=np.int64)}
    np.savez(Path(gguf).with_suffix(".npz"), **ids)
    t0 = time.perf_counter()
    if mode == "plain":
        a = load_hf_module(Path(hf))
        b, _ = replay_model(Path(hf), Path(gguf))
        with torch.no_grad():
            hf_forward(a, ids)
            hf_forward(b, ids)
    else:
        diff_activations(hf, gguf, input_npz=str(Path(gguf).with_suffix(".npz")))
    elapsed = time.perf_counter() - t0
    print(json.dumps({"mode": mode, "seconds": elapsed, "peak_mb": _rss_mb(), "baseline_mb": base}))


def build(folder: Path, hidden: int, layers: int, vocab: int, qtype: str) -> tuple[Path, Path]:
    import torch
    import transformers

    sys.path.insert(0, str(ROOT))
    from testmodels.generate import write_gguf

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3,
                                   num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 1),
                                   num_key_value_heads=max(hidden // 128, 1), max_position_embeddings=2048,
                                   rms_norm_eps=1e-6, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder / "hf", safe_serialization=True)
    gguf = folder / f"model-{qtype.lower()}.gguf"
    write_gguf("llama", model, cfg.to_dict(), gguf, qtype)
    return folder / "hf", gguf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--qtype", default="Q8_0", choices=["F32", "F16", "Q8_0", "Q4_0"])
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, hf, gguf, seq = args.child
        child(mode, hf, gguf, int(seq))
        return
    with tempfile.TemporaryDirectory() as tmp:
        hf, gguf = build(Path(tmp), args.hidden, args.layers, args.vocab, args.qtype)
        results = {}
        for mode in ("plain", "diff", "plain", "diff"):  # twice each, keep the faster run
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(hf), str(gguf), str(args.seq)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            if mode not in results or rec["seconds"] < results[mode]["seconds"]:
                results[mode] = rec
    plain, diff = results["plain"], results["diff"]
    t_ratio = diff["seconds"] / plain["seconds"]
    m_ratio = (diff["peak_mb"] - diff["baseline_mb"]) / max(plain["peak_mb"] - plain["baseline_mb"], 1e-9)
    print(f"model: llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}, seq {args.seq}, "
          f"GGUF {args.qtype}")
    print(f"plain (load both + 2 forwards): {plain['seconds']:.2f} s, peak +{plain['peak_mb'] - plain['baseline_mb']:.0f} MB")
    print(f"activation diff:                {diff['seconds']:.2f} s, peak +{diff['peak_mb'] - diff['baseline_mb']:.0f} MB")
    print(f"ratio diff/plain: time {t_ratio:.2f}x, peak memory {m_ratio:.2f}x")


if __name__ == "__main__":
    main()
