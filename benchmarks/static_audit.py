"""Benchmark: a static `normaudit compare` of a 7B-shaped and a 70B-header-shaped HF-vs-GGUF pair, against the
physical floor (reading exactly the bytes the comparison needs) and a minimal safetensors + gguf-py script.

    python benchmarks/static_audit.py [--shape 7b 70b] [--reps 7] [--cold-reps 3] [--dir DIR] [--margin-mib 4]

What it builds (nothing is downloaded), in DIR (default: a temporary folder, removed afterwards; pass --dir to
keep and reuse it):
  7b   Llama-2-7B-shaped: 32 layers, hidden 4096, intermediate 11008, vocab 32000; an HF folder (config.json,
       model.safetensors.index.json, 2 F16 shards, 13.5 GB) and a Q4_K_M-shaped GGUF (Q4_K / Q6_K like
       llama.cpp's Q4_K_M mix, F32 norms, the full 32000-entry tokenizer arrays in the header, 4.1 GB).
  70b  Llama-2-70B-shaped headers: 80 layers, hidden 8192, intermediate 28672, 8 KV heads; 15 F16 shards
       (138 GB) and a Q4_K_M-shaped GGUF (41 GB).
The files are sparse: the headers, the norm tensors (random values around 1, the GGUF holding the same values
as float32) and MARGIN MiB of real random bytes on each side of every byte range the comparison needs are
written; everything else is a hole.  The margins are real data so that what the kernel reads around a small
read is counted as a disk read: a page fault on a memory map reads a window of read_ahead_kb centered on it
(8 MiB on the machine this was written on, so 4 MiB each side).  Holes cost no I/O: bytes read beyond the
margins would not be measured.

What it measures, each in a fresh child process (interpreter start included), repeated and interleaved:
  floor     os.pread of exactly the header and norm byte ranges (their offsets written down at build time),
            readahead off (POSIX_FADV_RANDOM)
  floor+np  the same reads, then `import numpy`, decoding the norms, their relative L2 and the eps check:
            the least a Python tool comparing the values can do
  script    a minimal safetensors.safe_open(framework="numpy") + gguf.GGUFReader comparison (~20 lines)
  normaudit `normaudit compare HF GGUF` (the CLI, table rendered to a pipe; its exit code must be 0)
Wall time (min and median), CPU time (user + sys of the child: steadier than wall time on a shared
machine), peak RSS (the child's VmHWM) and bytes read (the child's /proc/self/io:
read_bytes = from the block device, rchar = through read syscalls; memory-mapped reads show only in
read_bytes).  Warm: files in the page cache.  Cold: each model file's pages dropped from the page cache with
posix_fadvise(DONTNEED) before every run (Python's own files stay cached; the host below this VM may still
cache the disk, so cold wall times are an optimistic bound while cold bytes read are exact).
"""

from __future__ import annotations

import json
import os
import sys
import time

# -- children (kept first and light: nothing is imported that the measured tool would not import) --------


def _io_stats() -> dict[str, int]:
    """/proc/self/io, plus VmHWM (peak RSS of this program since exec; ru_maxrss would count the parent's
    memory at fork time)."""
    out = {}
    with open("/proc/self/io") as fh:
        for line in fh:
            k, v = line.split(":")
            out[k.strip()] = int(v)
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                out["vm_hwm_kb"] = int(line.split()[1])
    return out


def _child(tool: str, manifest_path: str) -> None:
    t0 = time.perf_counter()
    with open(manifest_path) as fh:
        m = json.load(fh)
    ok = True
    if tool == "floor":
        ok = sum(len(b) for b in _read_exact(m).values()) == m["exact_bytes"]
    elif tool == "floor+np":
        ok = _floor_np(m)
    elif tool == "script":
        ok = _minimal_script(m["hf"], m["gguf"])
    elif tool == "normaudit":
        from normaudit.cli import run

        sys.argv = ["normaudit", "compare", m["hf"], m["gguf"]]
        try:
            run()
        except SystemExit as exc:
            ok = exc.code in (0, None)
    else:
        raise SystemExit(f"unknown tool {tool}")
    rec = {"ok": ok, "inproc_s": time.perf_counter() - t0, "io": _io_stats()}
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump(rec, fh)


def _read_exact(m: dict) -> dict[tuple[str, int], bytes]:
    """Every needed byte range (headers and norms), with positioned reads and readahead off."""
    out = {}
    for path, ranges in m["ranges"].items():
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # exactly these bytes: no readahead around them
        for off, n in ranges:
            out[(path, off)] = os.pread(fd, n, off)
        os.close(fd)
    return out


def _floor_np(m: dict) -> bool:
    """The floor's reads, then numpy: the norms decoded and compared, the eps checked."""
    data = _read_exact(m)
    import numpy as np

    ok = np.float32(m["eps_hf"]) == np.float32(m["eps_gguf"])
    for (pa, oa, _, ta), (pb, ob, _, tb) in m["norm_pairs"]:
        x = np.frombuffer(data[(pa, oa)], dtype=ta).astype(np.float32)
        y = np.frombuffer(data[(pb, ob)], dtype=tb).astype(np.float32)
        ok &= bool(np.linalg.norm(x - y) <= 1e-3 * np.linalg.norm(x))
    return bool(ok) and len(m["norm_pairs"]) > 0


def _minimal_script(hf: str, gguf_path: str) -> bool:
    """What a user would write without normaudit: safe_open(numpy) + GGUFReader, llama names mapped by hand."""
    import re

    import numpy as np
    from gguf import GGUFReader
    from safetensors import safe_open

    cfg = json.load(open(os.path.join(hf, "config.json")))
    shards = set(json.load(open(os.path.join(hf, "model.safetensors.index.json")))["weight_map"].values())
    a = {}
    for shard in sorted(shards):
        with safe_open(os.path.join(hf, shard), framework="numpy") as f:
            a.update({k: f.get_tensor(k).astype(np.float32) for k in f.keys() if k.endswith("norm.weight")})
    r = GGUFReader(gguf_path)
    eps = r.fields["llama.attention.layer_norm_rms_epsilon"]
    ok = np.float32(eps.parts[eps.data[0]][0]) == np.float32(cfg["rms_norm_eps"])
    b = {t.name: np.array(t.data, dtype=np.float32) for t in r.tensors if t.name.endswith("norm.weight")}
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for k, x in a.items():
        mm = re.match(r"model\.layers\.(\d+)\.(\w+)\.weight", k)
        y = b[f"blk.{mm.group(1)}.{names[mm.group(2)]}.weight"] if mm else b["output_norm.weight"]
        ok &= bool(np.linalg.norm(x - y) <= 1e-3 * np.linalg.norm(x))
    return bool(ok) and len(a) == len(b)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--child":
    _child(sys.argv[2], sys.argv[3])
    sys.exit(0)

# -- building the pair ---------------------------------------------------------------------------------------

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    shards: int


SHAPES = {
    "7b": Shape("7b", 32, 4096, 11008, 32, 32, 32000, 2),
    "70b": Shape("70b", 80, 8192, 28672, 64, 8, 32000, 15),
}
EPS = 1e-5


def hf_tensors(s: Shape) -> list[tuple[str, tuple[int, ...]]]:
    kv = s.hidden // s.heads * s.kv_heads
    out = [("model.embed_tokens.weight", (s.vocab, s.hidden))]
    for i in range(s.layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (s.hidden,)),
                (p + "self_attn.q_proj.weight", (s.hidden, s.hidden)), (p + "self_attn.k_proj.weight", (kv, s.hidden)),
                (p + "self_attn.v_proj.weight", (kv, s.hidden)), (p + "self_attn.o_proj.weight", (s.hidden, s.hidden)),
                (p + "post_attention_layernorm.weight", (s.hidden,)),
                (p + "mlp.gate_proj.weight", (s.intermediate, s.hidden)),
                (p + "mlp.up_proj.weight", (s.intermediate, s.hidden)),
                (p + "mlp.down_proj.weight", (s.hidden, s.intermediate))]
    out += [("model.norm.weight", (s.hidden,)), ("lm_head.weight", (s.vocab, s.hidden))]
    return out


def gguf_name(hf: str) -> str:
    table = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    if hf.startswith("model.layers."):
        i, rest = hf[len("model.layers."):].split(".", 1)
        return f"blk.{i}.{table[rest[:-len('.weight')]]}.weight"
    return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}[hf]


class SparseWriter:
    """Writes chosen byte ranges of a large file, with MARGIN bytes of real random data around each; the rest
    of the file is a hole."""

    def __init__(self, path: Path, size: int, margin: int, filler: bytes) -> None:
        self.path, self.size, self.margin, self.filler = path, size, margin, filler
        self.parts: list[tuple[int, bytes]] = []
        self.ranges: list[tuple[int, int]] = []  # the exact ranges a comparison needs

    def put(self, offset: int, data: bytes) -> None:
        self.parts.append((offset, data))
        self.ranges.append((offset, len(data)))

    def _fill(self, fh, start: int, end: int) -> None:  # noqa: ANN001
        pos, end = max(0, start), min(self.size, end)
        while pos < end:
            n = min(len(self.filler), end - pos)
            fh.seek(pos)
            fh.write(self.filler[:n])
            pos += n

    def close(self) -> None:
        with open(self.path, "wb") as fh:
            fh.truncate(self.size)
            for offset, data in self.parts:  # margins first, then the data itself over any overlap
                self._fill(fh, offset - self.margin, offset)
                self._fill(fh, offset + len(data), offset + len(data) + self.margin)
            for offset, data in self.parts:
                fh.seek(offset)
                fh.write(data)


def build_hf(folder: Path, s: Shape, norms: dict[str, "np.ndarray"], margin: int, filler: bytes,
             manifest: dict) -> None:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s.hidden,
           "intermediate_size": s.intermediate, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
           "num_key_value_heads": s.kv_heads, "vocab_size": s.vocab, "rms_norm_eps": EPS, "torch_dtype": "float16",
           "max_position_embeddings": 4096, "hidden_act": "silu", "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    manifest["ranges"][str(folder / "config.json")] = [(0, (folder / "config.json").stat().st_size)]
    tensors = hf_tensors(s)
    total = sum(2 * int(np.prod(shape)) for _, shape in tensors)
    per_shard = total / s.shards
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[] for _ in range(s.shards)]
    acc = 0
    for name, shape in tensors:  # in model order, like transformers' save_pretrained
        shards[min(int(acc // per_shard), s.shards - 1)].append((name, shape))
        acc += 2 * int(np.prod(shape))
    weight_map = {}
    for i, members in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{s.shards:05d}.safetensors"
        header, offset = {}, 0
        for name, shape in sorted(members):  # safetensors writes tensors sorted by name
            n = 2 * int(np.prod(shape))
            header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = fname
        header["__metadata__"] = {"format": "pt"}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        data_start = 8 + len(raw)
        w = SparseWriter(folder / fname, data_start + offset, margin, filler)
        w.put(0, len(raw).to_bytes(8, "little") + raw)
        for name, _ in members:
            if name in norms:
                start = data_start + header[name]["data_offsets"][0]
                w.put(start, norms[name].astype(np.float16).tobytes())
                manifest["norm_offsets"][name] = (str(folder / fname), start, 2 * norms[name].size, "float16")
        w.close()
        manifest["ranges"][str(folder / fname)] = w.ranges
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    manifest["ranges"][str(folder / "model.safetensors.index.json")] = [
        (0, (folder / "model.safetensors.index.json").stat().st_size)]


def q4_k_m_type(name: str, layer: int, n_layers: int) -> str:
    """llama.cpp's Q4_K_M mix for llama: Q6_K for output and for attn_v / ffn_down of some layers, else Q4_K."""
    if name == "output.weight":
        return "Q6_K"
    if name.endswith(("attn_v.weight", "ffn_down.weight")):
        more = layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2
        return "Q6_K" if more else "Q4_K"
    return "Q4_K"


def build_gguf(path: Path, s: Shape, norms: dict[str, "np.ndarray"], margin: int, filler: bytes,
               manifest: dict) -> None:
    import gguf
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from normaudit.formats.gguf.reader import GgufFile

    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"llama-2-{s.name}-shaped")
    w.add_context_length(4096)
    w.add_embedding_length(s.hidden)
    w.add_block_count(s.layers)
    w.add_feed_forward_length(s.intermediate)
    w.add_rope_dimension_count(s.hidden // s.heads)
    w.add_head_count(s.heads)
    w.add_head_count_kv(s.kv_heads)
    w.add_layer_norm_rms_eps(EPS)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_tokenizer_model("llama")
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    while len(tokens) < s.vocab:  # word pieces of 2-10 letters, like SentencePiece's, unique
        t = "\u2581" * int(rng.integers(0, 2)) + "".join(rng.choice(letters, int(rng.integers(2, 11))))
        tokens.append(t + str(len(tokens)) if t in tokens[-50:] else t)
    w.add_token_list(tokens[:s.vocab])
    w.add_token_scores([float(-i) for i in range(s.vocab)])
    w.add_token_types([2 if i < 3 else 6 if i < 259 else 1 for i in range(s.vocab)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    order = []  # llama.cpp's order: token_embd, each block, output_norm, output
    for hf, shape in hf_tensors(s):
        name = gguf_name(hf)
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        qtype = "F32" if name.endswith("norm.weight") else "Q4_K" if name == "token_embd.weight" else \
            q4_k_m_type(name, layer, s.layers)
        order.append((name, shape, qtype))
    order.sort(key=lambda t: (0 if t[0] == "token_embd.weight" else 2 if not t[0].startswith("blk.") else 1,
                              int(t[0].split(".")[1]) if t[0].startswith("blk.") else 0,
                              t[0] == "output.weight"))
    for name, shape, qtype in order:
        q = gguf.GGMLQuantizationType[qtype]
        block, type_size = gguf.GGML_QUANT_SIZES[q]
        n = int(np.prod(shape)) // block * type_size
        w.add_tensor_info(name, shape, np.dtype(np.float32), n, raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    header_end = path.stat().st_size
    align = 32
    data = (header_end + align - 1) // align * align
    total = data + sum(-(-ti.nbytes // align) * align for ti in w.tensors[0].values())
    with open(path, "r+b") as fh:
        fh.truncate(total)
    gf = GgufFile(path)  # normaudit's reader, only to learn the offsets it validated
    with open(path, "rb") as fh:
        head = fh.read(header_end)
    sw = SparseWriter(path, total, margin, filler)
    sw.put(0, head)  # the file is rewritten on close: header, norms and the margins around them
    hf_of = {gguf_name(k): k for k in norms}
    for name, t in gf.tensors.items():
        if name in hf_of:
            sw.put(t.offset, norms[hf_of[name]].astype(np.float16).astype(np.float32).tobytes())
            manifest["gguf_offsets"][name] = (str(path), t.offset, t.nbytes, "float32")
            manifest["norm_pairs"].append((manifest["norm_offsets"][hf_of[name]], manifest["gguf_offsets"][name]))
    sw.close()
    manifest["ranges"][str(path)] = sw.ranges


def build(folder: Path, s: Shape, margin: int) -> dict:
    import numpy as np

    stamp = folder / "manifest.json"
    if stamp.is_file():
        m = json.loads(stamp.read_text())
        if m.get("shape") == s.name and m.get("margin") == margin:
            return m
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    filler = rng.integers(1, 255, size=1 << 22, dtype=np.uint8).tobytes()
    norms = {name: (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float16)
             for name, shape in hf_tensors(s) if name.endswith("norm.weight")}
    m = {"shape": s.name, "margin": margin, "hf": str(folder / "hf"), "gguf": str(folder / f"llama-{s.name}-Q4_K_M.gguf"),
         "ranges": {}, "norm_offsets": {}, "gguf_offsets": {}, "norm_pairs": [], "eps_hf": EPS, "eps_gguf": EPS}
    t0 = time.perf_counter()
    build_hf(Path(m["hf"]), s, norms, margin, filler, m)
    build_gguf(Path(m["gguf"]), s, norms, margin, filler, m)
    m["build_s"] = time.perf_counter() - t0
    m["exact_bytes"] = sum(n for ranges in m["ranges"].values() for _, n in ranges)
    m["apparent_bytes"] = sum(os.stat(p).st_size for p in m["ranges"])
    m["allocated_bytes"] = sum(os.stat(p).st_blocks * 512 for p in m["ranges"])
    stamp.write_text(json.dumps(m))
    return m


# -- measuring -----------------------------------------------------------------------------------------------

TOOLS = ["floor", "floor+np", "script", "normaudit"]


def evict(paths: list[str]) -> None:
    """Drop the files' pages from the page cache (clean pages only; nothing else on the machine is touched)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_child(tool: str, manifest_path: Path, m: dict, cold: bool) -> dict:
    if cold:
        evict(list(m["ranges"]))
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    env = {**os.environ, "BENCH_OUT": out, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    with open(os.devnull, "wb") as null, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "--child", tool, str(manifest_path)], stdout=null,
                                stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    try:
        with open(out) as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        raise SystemExit(f"{tool} failed (exit {proc.returncode}):\n{stderr[-2000:]}")
    finally:
        os.unlink(out)
    if not rec["ok"]:
        raise SystemExit(f"{tool} did not pass the comparison:\n{stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": rec["io"]["vm_hwm_kb"] / 1024,
            "read_bytes": rec["io"]["read_bytes"],
            "rchar": rec["io"]["rchar"], "inproc_s": rec["inproc_s"]}


def measure(m: dict, manifest_path: Path, reps: int, cold_reps: int) -> dict:
    results: dict[str, dict[str, list[dict]]] = {t: {"warm": [], "cold": []} for t in TOOLS}
    for t in TOOLS:  # one warm-up run each: page cache and Python's own files
        run_child(t, manifest_path, m, cold=False)
    for _ in range(reps):
        for t in TOOLS:
            results[t]["warm"].append(run_child(t, manifest_path, m, cold=False))
    for _ in range(cold_reps):
        for t in TOOLS:
            results[t]["cold"].append(run_child(t, manifest_path, m, cold=True))
    return results


def summary(runs: list[dict], key: str) -> tuple[float, float]:
    values = [r[key] for r in runs]
    return min(values), statistics.median(values)


def report(m: dict, results: dict, reps: int, cold_reps: int) -> dict:
    mb = 1e6
    print(f"\n== {m['shape']}-shaped pair: HF F16 {len(m['ranges']) - 3} shards + Q4_K_M-shaped GGUF; "
          f"{m['apparent_bytes'] / 1e9:.1f} GB apparent, {m['allocated_bytes'] / 1e9:.2f} GB written "
          f"(margins {m['margin'] >> 20} MiB), exact bytes needed {m['exact_bytes'] / mb:.2f} MB; "
          f"{reps} warm and {cold_reps} cold runs each")
    print(f"{'tool':10s} {'warm min s':>10s} {'warm med s':>10s} {'CPU min s':>9s} {'cold min s':>10s} "
          f"{'cold med s':>10s} {'peak RSS MB':>11s} {'cold read MB':>12s} {'cold rchar MB':>13s}")
    table = {}
    for t in TOOLS:
        w, c = results[t]["warm"], results[t]["cold"]
        row = {"warm_min_s": summary(w, "wall_s")[0], "warm_median_s": summary(w, "wall_s")[1],
               "cpu_min_s": summary(w, "cpu_s")[0], "cpu_median_s": summary(w, "cpu_s")[1],
               "cold_min_s": summary(c, "wall_s")[0] if c else None,
               "cold_median_s": summary(c, "wall_s")[1] if c else None,
               "rss_median_mb": summary(w, "rss_mb")[1], "rss_max_mb": max(r["rss_mb"] for r in w + c),
               "cold_read_median_mb": summary(c, "read_bytes")[1] / mb if c else None,
               "cold_rchar_median_mb": summary(c, "rchar")[1] / mb if c else None}
        table[t] = row
        cold = (f"{row['cold_min_s']:10.3f} {row['cold_median_s']:10.3f}" if c else f"{'-':>10s} {'-':>10s}")
        reads = (f"{row['cold_read_median_mb']:12.2f} {row['cold_rchar_median_mb']:13.2f}" if c
                 else f"{'-':>12s} {'-':>13s}")
        print(f"{t:10s} {row['warm_min_s']:10.3f} {row['warm_median_s']:10.3f} {row['cpu_min_s']:9.3f} {cold} "
              f"{row['rss_max_mb']:11.1f} "
              f"{reads}")
    na = table["normaudit"]
    ratios = {}
    for base in ("floor", "floor+np", "script"):
        b = table[base]
        ratios[base] = {
            "warm_min": na["warm_min_s"] / b["warm_min_s"], "warm_median": na["warm_median_s"] / b["warm_median_s"],
            "cpu_min": na["cpu_min_s"] / b["cpu_min_s"],
            "cold_median": na["cold_median_s"] / b["cold_median_s"] if cold_reps else None,
            "rss": na["rss_max_mb"] / b["rss_max_mb"],
            "cold_read": (na["cold_read_median_mb"] / b["cold_read_median_mb"]
                          if cold_reps and b["cold_read_median_mb"] else None)}
        r = ratios[base]
        print(f"normaudit / {base:8s}: time warm {r['warm_min']:.2f}x (min) {r['warm_median']:.2f}x (median)"
              f", CPU {r['cpu_min']:.2f}x (min)"
              + (f", cold {r['cold_median']:.2f}x (median)" if r["cold_median"] else "")
              + f"; peak RSS {r['rss']:.2f}x"
              + (f"; cold bytes read {r['cold_read']:.2f}x" if r["cold_read"] else ""))
    return {"table": table, "ratios": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs="+", default=["7b", "70b"], choices=sorted(SHAPES))
    ap.add_argument("--reps", type=int, default=7, help="warm runs per tool (default 7)")
    ap.add_argument("--cold-reps", type=int, default=3, help="cold runs per tool (default 3; 0 to skip)")
    ap.add_argument("--dir", help="build here and keep the files (reused when the shape and margin match)")
    ap.add_argument("--margin-mib", type=int, default=4,
                    help="real data around every needed byte range (default 4 MiB: half of an 8 MiB readahead)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="normaudit-bench-"))
    # an installed package has its bytecode compiled at install time; a checkout may not (PYTHONDONTWRITEBYTECODE)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "normaudit")], check=True)
    print(f"python {sys.version.split()[0]} ({sys.executable}); machine load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores", flush=True)
    out = {}
    try:
        for name in args.shape:
            folder = base / name
            m = build(folder, SHAPES[name], args.margin_mib << 20)
            print(f"built {name} in {folder} ({m.get('build_s', 0):.0f} s when first built)", flush=True)
            out[name] = report(m, measure(m, folder / "manifest.json", args.reps, args.cold_reps),
                               args.reps, args.cold_reps)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
