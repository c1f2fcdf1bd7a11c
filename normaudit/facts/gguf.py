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

# -- multimodal projectors (mmproj GGUFs, general.architecture "clip") -----------------------------------------

#: tensor-name prefix -> the modality whose ``clip.<modality>.attention.layer_norm_epsilon`` key sets its eps
#: (tools/mtmd/clip.cpp reads one eps per modality, ``KEY_LAYER_NORM_EPS`` "clip.%s.attention.layer_norm_epsilon")
CLIP_MODALITY_PREFIXES: tuple[tuple[str, str], ...] = (("mm.a.", "audio"), ("a.", "audio"), ("v.", "vision"),
                                                       ("mm.", "vision"), ("resampler.", "vision"))

#: eps llama.cpp uses when the key is absent (tools/mtmd/clip-model.h: ``float eps = 1e-6``)
CLIP_DEFAULT_EPS = 1e-6


class ClipNorm:
    """How llama.cpp runs one projector norm that the bias rule (bias: LayerNorm, none: RMSNorm) does not say."""

    def __init__(self, kind: str, stored_one_plus: bool = False, eps: float | None = None, source: str = "") -> None:
        self.kind, self.stored_one_plus, self.eps, self.source = kind, stored_one_plus, eps, source


#: (clip.projector_type, tensor base name) -> what llama.cpp does with that norm
CLIP_NORMS: dict[tuple[str, str], ClipNorm] = {
    # Gemma3VisionModel.modify_tensors adds 1 to soft_emb_norm (Gemma3RMSNorm); siglip.cpp: ggml_rms_norm(eps)
    ("gemma3", "mm.soft_emb_norm"): ClipNorm("rms_norm", stored_one_plus=True,
                                            source="conversion/gemma.py stores 1 + w; tools/mtmd/models/siglip.cpp"),
    # siglip.cpp (LFM2-VL): ggml_norm(cur, 1e-5), "default nn.LayerNorm"
    ("lfm2", "mm.input_norm"): ClipNorm("layer_norm", eps=1e-5, source="tools/mtmd/models/siglip.cpp hard-codes 1e-5"),
}

#: what llama.cpp's mmproj converter keeps of a multimodal checkpoint: MmprojModel.filter_tensors drops every
#: tensor whose name contains this (the language model goes to the text GGUF)
MMPROJ_DROPS = "language_model."
