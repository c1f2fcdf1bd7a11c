"""Per-architecture and per-format facts, kept as data (gguf-py style), not as if-chains.

Each entry says where it comes from.  Tensor names for GGUF come from gguf-py itself
(``gguf.TensorNameMap``); only what gguf-py does not know lives here.
"""

from __future__ import annotations

import re

from .model import NormKind

# --- Hugging Face ---------------------------------------------------------------------------------

#: HF ``model_type`` values whose RMSNorm/LayerNorm computes ``x_hat * (1 + w)`` (weights stored zero-centred).
HF_ONE_PLUS_MODEL_TYPES: frozenset[str] = frozenset({
    "gemma",  # GemmaRMSNorm
    "gemma2",  # Gemma2RMSNorm
    "gemma3", "gemma3_text",  # Gemma3RMSNorm
    "gemma3n", "gemma3n_text",  # Gemma3nRMSNorm (language model norms)
    "recurrent_gemma",  # RecurrentGemmaRMSNorm
    "paligemma",  # Gemma language model inside
    "nemotron",  # NemotronLayerNorm1P
    "qwen3_next",  # Qwen3NextRMSNorm (not the linear-attention gated norm)
})

#: HF ``model_type`` -> the norm kind its transformer norms are.
HF_NORM_KIND: dict[str, NormKind] = {
    **{t: NormKind.RMS_NORM for t in (
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next", "gemma",
        "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "recurrent_gemma", "paligemma",
        "t5", "mt5", "umt5",  # T5's "LayerNorm" is an RMSNorm (no mean centring, no bias)
        "phi3", "olmo2", "granite", "cohere2", "deepseek_v2", "deepseek_v3", "internlm2", "baichuan",
        "starcoder2_rms", "smollm3", "exaone", "ernie4_5", "glm4", "minicpm", "mamba2", "falcon_h1",
    )},
    **{t: NormKind.LAYER_NORM for t in (
        "bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2", "albert",
        "nomic_bert", "jina_bert", "modernbert", "gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon",
        "phi", "nemotron", "whisper", "vit", "clip", "clip_text_model", "siglip", "starcoder2", "cohere",
        "mpt", "stablelm", "olmo", "bart", "mbart", "marian",
    )},
}

#: config.json keys holding a norm epsilon, in the order they are tried, per norm kind.
HF_EPS_KEYS: dict[NormKind, tuple[str, ...]] = {
    NormKind.RMS_NORM: ("rms_norm_eps", "rms_norm_epsilon", "norm_eps", "norm_epsilon", "layer_norm_epsilon",
                        "layer_norm_eps"),
    NormKind.LAYER_NORM: ("layer_norm_eps", "layer_norm_epsilon", "norm_eps", "norm_epsilon", "rms_norm_eps"),
    NormKind.BATCH_NORM: ("batch_norm_eps", "bn_eps", "norm_eps"),
    NormKind.GROUP_NORM: ("group_norm_eps", "norm_eps", "layer_norm_eps"),
    NormKind.INSTANCE_NORM: ("instance_norm_eps", "norm_eps"),
}

#: HF ``model_type`` -> GGUF ``general.architecture`` as llama.cpp's converter writes it.
HF_TO_GGUF_ARCH: dict[str, str] = {
    "llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen2_moe": "qwen2moe",
    "qwen3": "qwen3", "qwen3_moe": "qwen3moe", "qwen3_next": "qwen3next", "gemma": "gemma", "gemma2": "gemma2",
    "gemma3": "gemma3", "gemma3_text": "gemma3", "gemma3n": "gemma3n", "gemma3n_text": "gemma3n",
    "bert": "bert", "nomic_bert": "nomic-bert", "jina_bert": "jina-bert-v2", "gpt2": "gpt2",
    "gpt_neox": "gptneox", "phi": "phi2", "phi3": "phi3", "falcon": "falcon", "bloom": "bloom",
    "nemotron": "nemotron", "t5": "t5", "olmo": "olmo", "olmo2": "olmo2", "starcoder2": "starcoder2",
    "stablelm": "stablelm", "mpt": "mpt", "granite": "granite", "deepseek_v2": "deepseek2",
    "deepseek_v3": "deepseek2", "internlm2": "internlm2", "exaone": "exaone", "cohere": "command-r",
    "smollm3": "smollm3", "glm4": "glm4", "minicpm": "minicpm",
}

# --- GGUF -----------------------------------------------------------------------------------------

#: GGUF architectures whose norm weights llama.cpp's converter stores as ``1 + w`` (it adds the 1 so
#: ggml can run a plain RMSNorm/LayerNorm).  Source: convert_hf_to_gguf ``modify_tensors`` of each model.
GGUF_STORES_ONE_PLUS: frozenset[str] = frozenset({
    "gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding",  # conversion/gemma.py: norm.weight + 1
    "nemotron",  # conversion/nemotron.py: layernorm1p
    "qwen3next",  # conversion/qwen.py: norm.weight + 1 (not linear_attn.norm)
    "minimax-m3",  # conversion/minimax.py: Gemma-style (1 + w) RMSNorm
})

#: GGUF architectures whose transformer norms are LayerNorm (with or without bias); others are RMSNorm
#: when ``{arch}.attention.layer_norm_rms_epsilon`` is present.
GGUF_LAYER_NORM_ARCHS: frozenset[str] = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "gpt2", "gptneox",
    "gptj", "falcon", "bloom", "phi2", "mpt", "starcoder", "starcoder2", "stablelm", "nemotron", "command-r",
    "olmo", "refact", "codeshell", "t5encoder",
})

#: GGUF tensor kinds (gguf-py MODEL_TENSOR names) that are qk-norms.
GGUF_QK_NORM_TENSORS: frozenset[str] = frozenset({"ATTN_Q_NORM", "ATTN_K_NORM", "INDEXER_K_NORM",
                                                  "V_ENC_ATTN_Q_NORM", "V_ENC_ATTN_K_NORM"})

# --- names in PyTorch state_dicts -----------------------------------------------------------------

#: last component of a module path that marks a norm layer
NORM_MODULE_RE = re.compile(
    r"(norm|layernorm|layer_norm|rmsnorm|batchnorm|groupnorm|instancenorm|"
    r"^ln(_?\d+|_f|_post|_pre|_q|_kv)?$|^bn\d*$|^gn\d*$|_ln$|_bn$|^lnorm)",
    re.IGNORECASE,
)
NORM_TENSOR_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
QK_NORM_RE = re.compile(r"(^|[._])(q|k|query|key)_?(norm|layernorm|ln)$", re.IGNORECASE)


def qk_role(module_path: str) -> str:
    """``qk_norm`` when the module's last name marks a query/key norm (q_norm, k_layernorm, ...)."""
    return "qk_norm" if QK_NORM_RE.search((module_path or "").rsplit(".", 1)[-1]) else ""


GROUP_NORM_RE = re.compile(r"(group_?norm|^gn\d*$)", re.IGNORECASE)
INSTANCE_NORM_RE = re.compile(r"instance_?norm", re.IGNORECASE)

# --- ONNX -----------------------------------------------------------------------------------------

#: fused ONNX ops -> (kind, index of scale input, index of bias input, epsilon default from the op spec)
ONNX_FUSED_OPS: dict[tuple[str, str], tuple[NormKind, int, int | None, float]] = {
    ("", "LayerNormalization"): (NormKind.LAYER_NORM, 1, 2, 1e-5),
    ("", "RMSNormalization"): (NormKind.RMS_NORM, 1, None, 1e-5),
    ("", "BatchNormalization"): (NormKind.BATCH_NORM, 1, 2, 1e-5),
    ("", "InstanceNormalization"): (NormKind.INSTANCE_NORM, 1, 2, 1e-5),
    ("", "GroupNormalization"): (NormKind.GROUP_NORM, 1, 2, 1e-5),
    ("com.microsoft", "SimplifiedLayerNormalization"): (NormKind.RMS_NORM, 1, None, 1e-5),
    ("com.microsoft", "SkipLayerNormalization"): (NormKind.LAYER_NORM, 2, 3, 1e-12),
    ("com.microsoft", "SkipSimplifiedLayerNormalization"): (NormKind.RMS_NORM, 2, None, 1e-12),
    ("com.microsoft", "EmbedLayerNormalization"): (NormKind.LAYER_NORM, 5, 6, 1e-12),
    ("com.microsoft", "GroupNorm"): (NormKind.GROUP_NORM, 1, 2, 1e-5),
    ("com.microsoft", "LayerNormalization"): (NormKind.LAYER_NORM, 1, 2, 1e-5),
    # ONNX Runtime registers SimplifiedLayerNormalization in the default domain too
    ("", "SimplifiedLayerNormalization"): (NormKind.RMS_NORM, 1, None, 1e-5),
}
# ONNX's own ops also appear with the "ai.onnx" domain spelling
for (_dom, _op), _v in list(ONNX_FUSED_OPS.items()):
    if _dom == "":
        ONNX_FUSED_OPS[("ai.onnx", _op)] = _v

#: GGUF architectures whose Q/K projection rows llama.cpp's converter permutes (HF rotate-half RoPE layout ->
#: GGML's interleaved layout); GGUF replay undoes it.  Source: LlamaModel.modify_tensors and subclasses.
GGUF_PERMUTED_QK_ARCHS: frozenset[str] = frozenset({"llama", "granite", "granitemoe", "minicpm", "deci", "mistral3"})
