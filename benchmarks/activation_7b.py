"""Activation diff at 7B scale on a laptop: peak memory and wall time of `normaudit compare --activations`
against loading and running the source model once with transformers.

    python benchmarks/activation_7b.py --dir /big/disk/bench            # 7B-shaped pair (~20 GB of disk)
    python benchmarks/activation_7b.py --dir /tmp/bench --small          # hidden 512, 8 layers (seconds)
    python benchmarks/activation_7b.py --dir /big/disk/bench --onnx-2gb  # a >2 GB ONNX (external data) runs

Builds locally (nothing downloaded, not committed): an HF directory with Llama-2-7B's shapes (32 layers, hidden
4096, intermediate 11008, vocab 32000; F16 safetensors in two shards, random finite weights, norm weights
1 +- 0.1) and a GGUF of the same weights quantized with gguf-py (Q8_0 by default, --qtype Q4_0), written with
llama.cpp's tensor names, metadata keys and Q/K row permutation.  Then, each in a fresh process:

  baseline   transformers.AutoModelForCausalLM.from_pretrained(HF dir, dtype=float16) + one forward pass
  normaudit  normaudit compare HF GGUF --activations --json ...

and prints wall time and peak RSS of each (``os.wait4`` ru_maxrss), and their ratios.

Page cache: the 7B pair is 19 GB of files and the baseline itself holds 13 GB, so on a 24 GB machine whichever
command runs second finds part of its files evicted, and its time depends on the disk.  Each measured command
is therefore preceded by a sequential read of exactly its own input files (timed and printed separately) and one
import of the packages it uses (a 19 GB read evicts them), so both are measured warm; ``--no-prewarm`` measures
whatever the cache holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

SEQ = 16


def shapes(hidden: int, inter: int, layers: int, vocab: int, heads: int) -> list[tuple[str, tuple[int, ...]]]:
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (hidden,)),
                (p + "self_attn.q_proj.weight", (hidden, hidden)), (p + "self_attn.k_proj.weight", (hidden, hidden)),
                (p + "self_attn.v_proj.weight", (hidden, hidden)), (p + "self_attn.o_proj.weight", (hidden, hidden)),
                (p + "post_attention_layernorm.weight", (hidden,)),
                (p + "mlp.gate_proj.weight", (inter, hidden)), (p + "mlp.up_proj.weight", (inter, hidden)),
                (p + "mlp.down_proj.weight", (hidden, inter))]
    return out + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def values(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Deterministic per tensor, so the HF and GGUF files hold the same model (F16-rounded)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name.endswith("norm.weight"):
        return (1 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)
    return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)


def build(out: Path, hidden: int, inter: int, layers: int, vocab: int, heads: int, qtype: str) -> tuple[Path, Path]:
    import gguf
    from gguf import quants

    from normaudit import kernels

    hf, gguf_path = out / "hf", out / f"llama-{qtype.lower()}.gguf"
    if (hf / "config.json").is_file() and gguf_path.is_file():
        return hf, gguf_path
    hf.mkdir(parents=True, exist_ok=True)
    table = shapes(hidden, inter, layers, vocab, heads)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": heads, "vocab_size": vocab, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "torch_dtype": "float16", "hidden_act": "silu"}
    (hf / "config.json").write_text(json.dumps(config))
    # two safetensors shards, written streaming (header first: offsets follow from the shapes)
    half = len(table) // 2
    shards = [table[:half], table[half:]]
    weight_map = {}
    files = []
    for k, part in enumerate(shards):
        name = f"model-{k + 1:05d}-of-00002.safetensors"
        header, off = {}, 0
        for tname, shape in part:
            n = int(np.prod(shape)) * 2
            header[tname] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
            weight_map[tname] = name
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        fh = open(hf / name, "wb")
        fh.write(len(raw).to_bytes(8, "little") + raw)
        files.append((fh, part))
    total = sum(int(np.prod(shape)) * 2 for _, shape in table)
    (hf / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                "weight_map": weight_map}))
    # the GGUF: llama.cpp names (gguf-py's TensorNameMap), permuted Q/K rows, F32 norms, qtype matrices
    q = getattr(gguf.GGMLQuantizationType, qtype)
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    w = gguf.GGUFWriter(str(gguf_path), "llama")
    w.add_block_count(layers)
    w.add_context_length(4096)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else gguf.LlamaFileType.MOSTLY_Q4_0)
    plan = []
    for tname, shape in table:
        gname = tmap.get_name(tname, try_suffixes=(".weight",))
        is_norm = tname.endswith("norm.weight")
        tq = gguf.GGMLQuantizationType.F32 if is_norm else q
        byte_shape = shape if is_norm else quants.quant_shape_to_byte_shape(shape, tq)
        nbytes = int(np.prod(byte_shape)) * (4 if is_norm else 1)
        w.add_tensor_info(gname, byte_shape, np.dtype(np.float32) if is_norm else np.dtype(np.uint8), nbytes,
                          raw_dtype=tq)
        plan.append((tname, shape, is_norm, tq))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    shard_of = {tname: k for k, (_, part) in enumerate(files) for tname, _ in part}
    t0 = time.time()
    for i, (tname, shape, is_norm, tq) in enumerate(plan):
        v = values(tname, shape, 0)
        files[shard_of[tname]][0].write(v.tobytes())
        f = v.astype(np.float32)
        if tname.endswith(("q_proj.weight", "k_proj.weight")):
            f = kernels.permute_qk(f, heads)
        w.write_tensor_data(f if is_norm else quants.quantize(f, tq))
        print(f"\r  building {i + 1}/{len(plan)} tensors ({time.time() - t0:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    w.close()
    for fh, _ in files:
        fh.close()
    return hf, gguf_path


BASELINE = """
import sys, time, torch, transformers
t = time.time()
m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float16, local_files_only=True)
ids = torch.arange(3, 3 + {seq}).reshape(1, -1)
with torch.no_grad():
    m(input_ids=ids, use_cache=False)
print(time.time() - t)
"""


def prewarm(paths: list[Path], imports: str) -> str:
    """Read the files once, sequentially (into the page cache), then import the command's packages once in a
    throwaway process (reading 19 GB evicts the packages' own files); how long the file reads took."""
    t, total = time.perf_counter(), 0
    for path in paths:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                total += len(chunk)
    took = time.perf_counter() - t
    subprocess.run([sys.executable, "-c", imports], check=True, capture_output=True)
    return f"pre-read {total / 2**30:.2f} GiB in {took:.1f} s"


BASELINE_IMPORTS = "import torch, transformers; transformers.AutoModelForCausalLM, transformers.LlamaForCausalLM"
NORMAUDIT_IMPORTS = BASELINE_IMPORTS + "; import gguf, normaudit.cli, normaudit.activations.lockstep"


def run_one(cmd: list[str], ok: tuple[int, ...] = (0, 1)) -> tuple[float, float, str]:
    """Each measured command in its own child (RUSAGE_CHILDREN of a fresh wrapper is that command's peak)."""
    wrapper = ("import json, resource, subprocess, sys, time\n"
               "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "print(json.dumps({'wall': time.perf_counter() - t, 'rc': p.returncode, 'err': p.stderr[-800:],\n"
               "  'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 'out': p.stdout[-2000:]}))")
    res = json.loads(subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                                    check=True).stdout)
    if res["rc"] not in ok:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({res['rc']}): {res['err']}")
    return res["wall"], res["rss"], res["out"]


def onnx_2gb(out: Path) -> None:
    """A >2 GB ONNX model (external data): `compare --activations` of it against itself runs from the file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = out / "big" / "big.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        rows, dim = 8_500_000, 64  # 2.18 GB of float32 embedding: past protobuf's 2 GB, so written by hand
        data = path.parent / "big.data"
        rng = np.random.default_rng(0)
        with data.open("wb") as fh:  # in chunks: the benchmark itself should not need 2 GB of RAM
            for start in range(0, rows, 500_000):
                rng.standard_normal((min(500_000, rows - start), dim), dtype=np.float32).tofile(fh)
        emb = TensorProto(name="emb", data_type=TensorProto.FLOAT, dims=[rows, dim],
                          data_location=TensorProto.EXTERNAL)
        for k, v in (("location", data.name), ("offset", "0"), ("length", str(rows * dim * 4))):
            entry = emb.external_data.add()
            entry.key, entry.value = k, v
        g = helper.make_graph(
            [helper.make_node("Gather", ["emb", "ids"], ["x"]),
             helper.make_node("LayerNormalization", ["x", "ln_w", "ln_b"], ["y"], epsilon=1e-5, axis=-1),
             helper.make_node("MatMul", ["y", "head"], ["logits"])],
            "big", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, SEQ])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, SEQ, 100])],
            [emb, numpy_helper.from_array(np.ones(dim, np.float32), "ln_w"),
             numpy_helper.from_array(np.zeros(dim, np.float32), "ln_b"),
             numpy_helper.from_array(np.random.default_rng(1).standard_normal((dim, 100), dtype=np.float32), "head")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        onnx.save(m, str(path))  # the graph itself is a few kB; the weights stay in big.data
    np.savez(out / "big" / "ids.npz", ids=np.arange(3, 3 + SEQ, dtype=np.int64).reshape(1, SEQ))
    report = out / "big" / "report.json"
    wall, rss, _ = run_one([sys.executable, "-m", "normaudit", "compare", str(path), str(path), "--activations",
                            "--input", str(out / "big" / "ids.npz"), "--json", str(report)])
    act = json.loads(report.read_text())["activations"]
    size = (path.parent / "big.data").stat().st_size / 2**30
    print(f">2 GB ONNX ({size:.2f} GiB external data): compare --activations ran in {wall:.1f} s, peak RSS "
          f"{rss:.0f} MiB, {len(act.get('points', []))} points, passed={act.get('passed')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="where to build the models (not committed)")
    ap.add_argument("--small", action="store_true", help="hidden 512, 8 layers, vocab 32000 instead of 7B")
    ap.add_argument("--qtype", default="Q8_0", choices=["Q8_0", "Q4_0"])
    ap.add_argument("--onnx-2gb", action="store_true", help="also run a >2 GB ONNX model with external data")
    ap.add_argument("--only-onnx-2gb", action="store_true", help="run only the >2 GB ONNX model")
    ap.add_argument("--no-prewarm", dest="prewarm", action="store_false",
                    help="do not read each command's files just before it (measure whatever the page cache holds)")
    ns = ap.parse_args()
    if ns.only_onnx_2gb:
        onnx_2gb(ns.dir)
        return 0
    dims = (512, 1376, 8, 32000, 8) if ns.small else (4096, 11008, 32, 32000, 32)
    out = ns.dir / ("small" if ns.small else "7b")
    t0 = time.time()
    hf, g = build(out, *dims, ns.qtype)
    size = sum(f.stat().st_size for f in hf.glob("*.safetensors")) / 2**30
    print(f"models: {hf} ({size:.2f} GiB F16), {g.name} ({g.stat().st_size / 2**30:.2f} GiB) "
          f"[built/found in {time.time() - t0:.0f} s]")
    from gguf.constants import GGMLQuantizationType

    from normaudit.formats.gguf import ggml

    fast = ggml.dequantizer(GGMLQuantizationType[ns.qtype]) is not None
    print(f"{ns.qtype} dequantized by {'ggml (llama-cpp-python installed)' if fast else 'gguf-py'}"
          + ("" if fast else " (NORMAUDIT_DEQUANT=gguf-py, or no llama-cpp-python)"))
    hf_files = sorted(p for p in hf.iterdir() if p.is_file())
    warm_a = prewarm(hf_files, BASELINE_IMPORTS) if ns.prewarm else "no pre-read"
    base_wall, base_rss, _ = run_one([sys.executable, "-c", BASELINE.format(seq=SEQ), str(hf)], ok=(0,))
    np.savez(out / "ids.npz", input_ids=np.arange(3, 3 + SEQ, dtype=np.int64).reshape(1, SEQ))
    report = out / "report.json"
    warm_b = prewarm(hf_files + [g], NORMAUDIT_IMPORTS) if ns.prewarm else "no pre-read"
    na_wall, na_rss, _ = run_one([sys.executable, "-m", "normaudit", "compare", str(hf), str(g), "--activations",
                                  "--input", str(out / "ids.npz"), "--json", str(report)])
    act = json.loads(report.read_text())["activations"]
    print(f"baseline (transformers load F16 + one forward): {base_wall:7.1f} s  peak RSS {base_rss:7.0f} MiB"
          f"  [{warm_a}]")
    print(f"normaudit compare --activations (lockstep):     {na_wall:7.1f} s  peak RSS {na_rss:7.0f} MiB"
          f"  [{warm_b}]")
    print(f"ratios normaudit/baseline: time {na_wall / base_wall:.2f}x, peak memory {na_rss / base_rss:.2f}x")
    print(f"verdict: {act['verdict']}  (passed={act['passed']}, {len(act['points'])} points)")
    if ns.onnx_2gb:
        onnx_2gb(ns.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
