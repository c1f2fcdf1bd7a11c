"""What llama.cpp's converter (convert_hf_to_gguf.py) does that gguf-py's tables do not say.

Tensor names and kinds come from gguf-py (``gguf.constants.MODEL_TENSORS`` / ``TENSOR_NAMES`` /
``TensorNameMap``); metadata key spellings from ``gguf.constants.Keys``.
"""

from __future__ import annotations

#: GGUF architectures whose norm weights llama.cpp's converter stores as ``1 + w`` (it adds the 1 so
#: ggml can run a plain RMSNorm/LayerNorm).  Source: convert_hf_to_gguf ``modify_tensors`` of each model.
STORES_ONE_PLUS: frozenset[str] = frozenset({
    "gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding",  # conversion/gemma.py: norm.weight + 1
    "nemotron",  # conversion/nemotron.py: layernorm1p
    "qwen3next",  # conversion/qwen.py: norm.weight + 1 (not linear_attn.norm)
    "minimax-m3",  # conversion/minimax.py: Gemma-style (1 + w) RMSNorm
})

#: GGUF architectures whose transformer norms are LayerNorm (with or without bias); others are RMSNorm
#: when ``{arch}.attention.layer_norm_rms_epsilon`` is present.
LAYER_NORM_ARCHS: frozenset[str] = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "gpt2", "gptneox",
    "gptj", "falcon", "bloom", "phi2", "mpt", "starcoder", "starcoder2", "stablelm", "nemotron", "command-r",
    "olmo", "refact", "codeshell", "t5encoder",
})

#: GGUF tensor kinds (gguf-py MODEL_TENSOR names) that are qk-norms.
QK_NORM_TENSORS: frozenset[str] = frozenset({"ATTN_Q_NORM", "ATTN_K_NORM", "INDEXER_K_NORM",
                                             "V_ENC_ATTN_Q_NORM", "V_ENC_ATTN_K_NORM"})

#: GGUF architectures whose Q/K projection rows llama.cpp's converter permutes (HF rotate-half RoPE layout ->
#: GGML's interleaved layout); GGUF replay undoes it.  Source: LlamaModel.modify_tensors and subclasses.
PERMUTED_QK_ARCHS: frozenset[str] = frozenset({"llama", "granite", "granitemoe", "minicpm", "deci", "mistral3"})
