"""Embedding-model facts: sentence-transformers' module files, GGUF pooling types and what llama.cpp and
llama-cpp-python do with embeddings (read from their code; each row says where)."""

from __future__ import annotations

#: sentence-transformers ``modules.json`` module types (suffix of ``type``)
ST_POOLING = "Pooling"
ST_NORMALIZE = "Normalize"

#: ``1_Pooling/config.json`` flag -> pooling (sentence_transformers.models.Pooling, in the order it checks them)
ST_POOLING_FLAGS: tuple[tuple[str, str], ...] = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "last"),
)
#: newer Pooling configs say ``"pooling_mode": "mean"``
ST_POOLING_MODES: dict[str, str] = {"mean": "mean", "cls": "cls", "max": "max", "lasttoken": "last",
                                    "mean_sqrt_len_tokens": "mean_sqrt_len", "weightedmean": "weightedmean"}

#: gguf-py ``PoolingType`` member name -> pooling (llama.cpp: LLAMA_POOLING_TYPE_*)
GGUF_POOLING: dict[str, str] = {"NONE": "none", "MEAN": "mean", "CLS": "cls", "LAST": "last", "RANK": "rank"}

#: what llama.cpp does with a GGUF's embeddings (llama.cpp as vendored in llama-cpp-python 0.3.36):
LLAMA_CPP_NO_POOLING = ("no {arch}.pooling_type key: llama.cpp runs with pooling none (src/llama-context.cpp: "
                        "UNSPECIFIED -> NONE) and returns one vector per token")
LLAMA_CPP_RUNTIME: tuple[str, ...] = (
    "the model returns the pooled vector unnormalized (llama_get_embeddings_seq); a GGUF has no normalization key",
    "llama-server and llama-embedding L2-normalize pooled vectors by default (common.h embd_normalize = 2, "
    "--embd-normalize; the server skips it with pooling none)",
    "llama-cpp-python's Llama.embed() / create_embedding() do not normalize unless normalize=True",
)
