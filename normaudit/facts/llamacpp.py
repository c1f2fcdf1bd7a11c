"""What llama.cpp's runtime graph calls its tensors, and what each one holds.

llama.cpp's model builders (``src/models/*.cpp``) name intermediate tensors with ``cb(cur, "attn_norm", il)``;
the eval callback (``cb_eval``) reports them as ``attn_norm-3`` (layer 3) or ``result_norm`` (no layer).
Each name here is mapped to the GGUF tensor kind (gguf-py ``MODEL_TENSOR`` name) whose *output* it is, so a
runtime tensor lines up with the GGUF norm record ``blk.3.attn_norm`` and, through gguf-py's
TensorNameMap (:mod:`normaudit.match`), with the source module (``model.layers.3.input_layernorm``) and the
replay's point of the same name.

What each tensor holds (checked on the shared corpus with llama-cpp-python 0.3.36, see tests/test_llamacpp.py):

- ``norm-N`` is the bare RMS_NORM / NORM op, ``x / rms(x)``, **before** the weight multiply; the name is
  reused by every norm of layer N (and Gemma3's post-FFN norm calls it plain ``norm``).  It is not captured:
  the weighted output below is what the source's module returns (asking for it would also split ggml-cpu's
  fused RMS_NORM+MUL kernel; on the corpus the results stay bit-identical either way).
- ``attn_norm-N``, ``ffn_norm-N``, ``attn_post_norm-N``, ``ffn_post_norm-N``, ``result_norm`` are **after**
  the multiply by the stored weight (and the bias add for LayerNorm): the same value as the source module's
  output.  For Gemma the GGUF stores ``1 + w``, so the plain multiply equals HF's ``x * (1 + w)``.
- ``Qcur_normed-N`` / ``Kcur_normed-N``: the per-head qk-norm outputs, ggml shape ``[head_dim, n_head, T]``
  (numpy ``[T, n_head, head_dim]``), before RoPE.  (The name ``Qcur-N`` is reused for the projection, its
  reshape and its RoPE output.)
- ``l_out-N``: the residual stream after block N (the source's decoder-layer output).  The last block's
  ``l_out`` holds only the rows whose logits were requested, so the runner requests logits for every token.
- ``result_output``: the logits, ``[n_vocab, T]`` in ggml order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimePoint:
    """One named runtime tensor: what it is the output of, and how its ggml dimensions read."""

    kind: str  # norm | block | output
    tensor: str | None = None  # gguf-py MODEL_TENSOR name of the norm this is the output of
    layout: str = "rows"  # rows: ggml [width, T] -> [1, T, width]; heads: [head_dim, n_head, T] -> [1, T, n_head, head_dim]


#: runtime name (without the ``-N`` layer suffix) -> what it holds, for every architecture.
#: Source: the ``cb(...)`` names of llama.cpp's model builders (attn_norm 125 builders, ffn_norm 122, ...).
RUNTIME_POINTS: dict[str, RuntimePoint] = {
    "attn_norm": RuntimePoint("norm", "ATTN_NORM"),
    "ffn_norm": RuntimePoint("norm", "FFN_NORM"),
    "attn_post_norm": RuntimePoint("norm", "ATTN_POST_NORM"),
    "ffn_post_norm": RuntimePoint("norm", "FFN_POST_NORM"),
    "attn_out_norm": RuntimePoint("norm", "ATTN_OUT_NORM"),
    "Qcur_normed": RuntimePoint("norm", "ATTN_Q_NORM", "heads"),
    "Kcur_normed": RuntimePoint("norm", "ATTN_K_NORM", "heads"),
    "result_norm": RuntimePoint("norm", "OUTPUT_NORM"),
    "l_out": RuntimePoint("block"),
    "result_output": RuntimePoint("output"),
}

#: architectures whose builders name a norm differently: GGUF architecture -> {runtime name: point}
ARCH_RUNTIME_POINTS: dict[str, dict[str, RuntimePoint]] = {
    "glm4": {"post_attn_norm": RuntimePoint("norm", "ATTN_POST_NORM"),
             "post_mlp_norm": RuntimePoint("norm", "FFN_POST_NORM")},
    "hunyuan-moe": {"Qcur_norm": RuntimePoint("norm", "ATTN_Q_NORM", "heads"),
                    "Kcur_norm": RuntimePoint("norm", "ATTN_K_NORM", "heads")},
}

#: architectures run through the runtime on the shared corpus: every norm of their GGUF is captured under the
#: names above (tests assert it); for others the names are llama.cpp's usual ones and the report says so.
VERIFIED_ARCHS: frozenset[str] = frozenset({"llama", "qwen3", "gemma3"})

#: how far llama.cpp may drift from the replay of the same file (relative L2 of any captured point) before the
#: three-way attribution blames the runtime, by the weight class of the file's matrices.  Measured on the
#: corpus (2-block models, 16 tokens, F32 KV cache, no flash attention): F32 files <= 4.1e-4 (ggml-cpu's GELU
#: reads an FP16 table: Gemma3's first FFN), F16 files <= 1.0e-3 (activations rounded to F16 for the F16
#: matmuls), Q8_0 / K-quant files <= 2.4e-2 (activations quantized to 8 bits for the quantized matmuls).  The
#: user's --act-rel-l2 applies when it is larger.
RUNTIME_REL_L2: dict[str, float] = {"F32": 2e-3, "F16": 1e-2, "quantized": 6e-2}

#: text the GGUF vocabulary and the HF tokenizer both tokenize when no --text is given (no special-token
#: literals: those are parsed differently on purpose by each library)
TOKENIZER_PROBE_TEXT = ("The quick brown fox jumps over the lazy dog. 1234 + 5678 = 6912\n"
                        "  Two spaces, a\ttab, ünïcödé, ß, 日本語, emoji 🙂 and a trailing space ")

#: how ``compare --activations`` runs a GGUF side (``--backend``)
BACKENDS = ("replay", "llama.cpp", "both")

#: the pip extra that installs the runtime
INSTALL_HINT = "pip install 'normaudit[llamacpp]'"


def runtime_points(arch: str) -> dict[str, RuntimePoint]:
    """Runtime name -> point for one GGUF architecture (the common names plus the architecture's own)."""
    return {**RUNTIME_POINTS, **ARCH_RUNTIME_POINTS.get(arch, {})}
