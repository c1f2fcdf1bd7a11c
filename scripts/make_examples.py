"""Build the broken files the README's worked examples compare, from the committed test models.

    python scripts/make_examples.py            # into ./examples/ (needs gguf-py: the core install has it)
    python scripts/make_examples.py --out DIR

Each is a correct conversion from testmodels/ with one thing broken by gguf-py (tests/breakers.py):

  bad-eps.gguf          qwen3 Q4_K_M with qwen3.attention.layer_norm_rms_epsilon rewritten to 1e-5 (llama.cpp#9310)
  noisy-ffn-down.gguf   qwen3 Q8_0 with blk.1.ffn_down.weight re-quantized with noise (0.2 x its std)
  swapped-mmproj.gguf   the qwen2_vl mmproj with clip.vision.image_mean and image_std exchanged (llama.cpp#13208)
  qwen3-rope100.gguf    qwen3 F32 with qwen3.rope.freq_base 100 instead of 10000 (only the runtime reads it)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from breakers import gguf_eps, gguf_kv, gguf_requantize_noisy, gguf_swap_kv  # noqa: E402

TM = ROOT / "testmodels"
EXAMPLES = {
    "bad-eps.gguf": lambda d: gguf_eps(TM / "real/gguf/qwen3-Q4_K_M.gguf", d, 1e-5),
    "noisy-ffn-down.gguf": lambda d: gguf_requantize_noisy(TM / "real/gguf/qwen3-q8_0.gguf", d,
                                                            "blk.1.ffn_down.weight", 0.2),
    "swapped-mmproj.gguf": lambda d: gguf_swap_kv(TM / "around/qwen2_vl/qwen2vl-mmproj-f32.gguf", d,
                                                  "clip.vision.image_mean", "clip.vision.image_std"),
    "qwen3-rope100.gguf": lambda d: gguf_kv(TM / "real/gguf/qwen3-f32.gguf", d, qwen3__rope__freq_base=100.0),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("examples"), help="folder to write into (default ./examples)")
    ns = ap.parse_args()
    ns.out.mkdir(parents=True, exist_ok=True)
    for name, build in EXAMPLES.items():
        build(ns.out / name)
        print(ns.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
