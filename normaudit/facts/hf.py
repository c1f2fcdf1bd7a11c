"""Hugging Face transformers facts: which model types compute ``x * (1 + w)``, which norm kind a model type
uses, which config.json keys hold an epsilon, and the GGUF architecture llama.cpp's converter writes."""

from __future__ import annotations

from ..model import NormKind

#: HF ``model_type`` values whose RMSNorm/LayerNorm computes ``x_hat * (1 + w)`` (weights stored zero-centred).
ONE_PLUS_MODEL_TYPES: frozenset[str] = frozenset({
    "gemma",  # GemmaRMSNorm
    "gemma2",  # Gemma2RMSNorm
    "gemma3", "gemma3_text",  # Gemma3RMSNorm
    "gemma3n", "gemma3n_text",  # Gemma3nRMSNorm (language model norms)
    "recurrent_gemma",  # RecurrentGemmaRMSNorm
    "paligemma",  # Gemma language model inside
    "nemotron",  # NemotronLayerNorm1P
    "qwen3_next",  # Qwen3NextRMSNorm (not the linear-attention gated norm)
})

#: module paths (suffix) inside a ONE_PLUS model type whose norm is a plain ``x * w`` norm
ONE_PLUS_EXCEPTIONS: tuple[str, ...] = ("linear_attn.norm",)  # Qwen3-Next's gated RMSNorm

#: HF ``model_type`` -> the norm kind its transformer norms are (a fallback when the module cannot be probed).
NORM_KIND: dict[str, NormKind] = {
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
        "phi", "nemotron", "whisper", "vit", "clip", "clip_text_model", "clip_vision_model", "siglip",
        "siglip_vision_model", "starcoder2", "cohere",
        "mpt", "stablelm", "olmo", "bart", "mbart", "marian",
    )},
}

#: config.json keys holding a norm epsilon, in the order they are tried, per norm kind.
EPS_KEYS: dict[NormKind, tuple[str, ...]] = {
    NormKind.RMS_NORM: ("rms_norm_eps", "rms_norm_epsilon", "norm_eps", "norm_epsilon", "layer_norm_epsilon",
                        "layer_norm_eps"),
    NormKind.LAYER_NORM: ("layer_norm_eps", "layer_norm_epsilon", "norm_eps", "norm_epsilon", "rms_norm_eps"),
    NormKind.BATCH_NORM: ("batch_norm_eps", "bn_eps", "norm_eps"),
    NormKind.GROUP_NORM: ("group_norm_eps", "norm_eps", "layer_norm_eps"),
    NormKind.INSTANCE_NORM: ("instance_norm_eps", "norm_eps"),
}

#: every config key that may hold an eps (to rewrite them all, e.g. for a GGUF replay)
ALL_EPS_KEYS: frozenset[str] = frozenset(k for keys in EPS_KEYS.values() for k in keys)

#: sub-configs of multimodal / composite configs where the language model's settings live
TEXT_CONFIG_KEYS: tuple[str, ...] = ("text_config", "language_config", "llm_config")

#: sub-configs of multimodal configs holding a tower's settings, and the module-path parts that put a module in
#: that tower (its norms take their eps from there, not from the language model's config)
TOWER_CONFIGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vision_config", ("vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder",
                       "multi_modal_projector", "vision_embed_tokens")),
    ("audio_config", ("audio_tower", "audio_encoder", "audio_model")),
)

#: module names of a multimodal projector: it belongs to the top-level model (a Gemma 3 projector's
#: ``mm_soft_emb_norm`` is a Gemma RMSNorm, x * (1 + w)), not to the tower whose sub-config holds its eps
PROJECTOR_MODULES: tuple[str, ...] = ("multi_modal_projector",)

#: HF ``model_type`` -> GGUF ``general.architecture`` as llama.cpp's converter writes it.
TO_GGUF_ARCH: dict[str, str] = {
    "llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen2_moe": "qwen2moe",
    "qwen3": "qwen3", "qwen3_moe": "qwen3moe", "qwen3_next": "qwen3next", "gemma": "gemma", "gemma2": "gemma2",
    "gemma3": "gemma3", "gemma3_text": "gemma3", "gemma3n": "gemma3n", "gemma3n_text": "gemma3n",
    "bert": "bert", "nomic_bert": "nomic-bert", "jina_bert": "jina-bert-v2", "gpt2": "gpt2",
    "gpt_neox": "gptneox", "phi": "phi2", "phi3": "phi3", "falcon": "falcon", "bloom": "bloom",
    "nemotron": "nemotron", "t5": "t5", "olmo": "olmo", "olmo2": "olmo2", "starcoder2": "starcoder2",
    "stablelm": "stablelm", "mpt": "mpt", "granite": "granite", "deepseek_v2": "deepseek2",
    "deepseek_v3": "deepseek2", "internlm2": "internlm2", "exaone": "exaone", "cohere": "command-r",
    "smollm3": "smollm3", "glm4": "glm4", "minicpm": "minicpm",
    "qwen2_vl": "qwen2vl", "qwen2_vl_text": "qwen2vl", "qwen2_5_vl": "qwen2vl", "qwen2_5_vl_text": "qwen2vl",
    "qwen3_vl": "qwen3vl", "qwen3_vl_text": "qwen3vl",
}
