"""Wide test corpus for normaudit, written by the REAL converters.

    python testmodels/wide/generate.py                         # every family
    python testmodels/wide/generate.py --families phi3,t5      # only these (others kept in expected.json)
    python testmodels/wide/generate.py --out /tmp/wide         # elsewhere
    python testmodels/wide/generate.py --restore               # only the big files a clone lacks (CI does this)

For each family a tiny model is built from transformers' own model code (seeded random weights; hidden 32,
2 layers), every norm module gets randomised parameters (weight 1 +- 0.1, or 0 +- 0.1 where the module
computes ``x * (1 + w)``; bias +- 0.1; BatchNorm running mean ~ N(0, 0.1), running var ~ U(0.5, 1.5)) and,
where the config has one, a non-default eps.  Then it writes into ``<out>/<family>/``:

* ``hf/``                      ``save_pretrained`` (safetensors) + the tokenizer files llama.cpp's converter needs;
* ``<family>-f32.gguf``, ``<family>-q8_0.gguf``   llama.cpp's ``convert_hf_to_gguf.py`` (``--outtype f32`` / ``q8_0``);
* ``<family>-Q4_K_M.gguf``     llama.cpp's quantizer (``llama_cpp.llama_model_quantize``) from the f32 file;
* ``<family>-dynamo-opset18.onnx``, ``...-opset23.onnx``   ``torch.onnx.export(..., dynamo=True)`` (model defaults
  first; if that fails, once more with eager attention / batched_mm experts, both attempts recorded);
* ``<family>-legacy-opset17.onnx``                        ``torch.onnx.export(..., dynamo=False)`` (TorchScript);
* ``input.npz``                the example input the ONNX exports were traced with.

``<out>/expected.json`` holds the facts computed from the *source modules* (not from normaudit): every norm
module with its kind / eps / convention found by probing it against numpy references, the checkpoint key of
its parameters (matched by value in ``model.safetensors``), the config's eps keys, and a record of every
converted file (tool, version, flags, size, sha256, or the converter's error).  A failing step or family is
recorded there and does not stop the others.  llama.cpp's converter is taken from the llama-cpp-python
sdist (``--lcp-sdist``, extracted under ``--lcp-src``) with its own ``gguf-py`` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
LCP_VERSION = "0.3.36"
# llama.cpp's converter comes from the llama-cpp-python sdist: fetched from the package index (pip download)
# into the temp folder when not there, and extracted beside it
DEFAULT_SDIST = Path(tempfile.gettempdir()) / "normaudit-lcp" / f"llama_cpp_python-{LCP_VERSION}.tar.gz"
DEFAULT_LCP_SRC = Path(tempfile.gettempdir()) / "normaudit-lcp" / "src"
SEQ = 8
SPM_VOCAB = 128          # sentencepiece vocab trained here (BPE for llama-like, unigram for T5)
GPT2_VOCAB = 50257       # llama.cpp only accepts BPE tokenizers it recognises: GPT-2's own (from ggml-vocab-gpt-2.gguf)
COMMIT_MAX_BYTES = 600_000  # files above this are git-ignored and recreated by this script
THREADS = 1

# -- tokenizers -----------------------------------------------------------------------------------

_WORDS = ("the of and to in is was for on are as with his they at be this from have or by one had not but what "
          "all were when we there can an your which their said if do will each about how up out them then she "
          "many some so these would other into has more her two like him see time could no make than first been "
          "its who now people my made over did down only way find use may water long little very after words "
          "called just where most know norm layer weight bias epsilon mean variance scale shift gguf onnx model "
          "0 1 2 3 4 5 6 7 8 9 . , ! ? ' - ( ) : ; \" A B C D E F G H I J K L M N O P Q R S T U V W X Y Z").split()


def _spm_corpus() -> str:
    rng = np.random.default_rng(1234)
    lines = []
    for _ in range(3000):
        n = int(rng.integers(4, 14))
        lines.append(" ".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), n)))
    return "\n".join(lines) + "\n"


def train_spm(out: Path, model_type: str) -> None:
    """A tiny deterministic sentencepiece model (single thread, fixed corpus, identity normaliser)."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as td:
        txt = Path(td) / "corpus.txt"
        txt.write_text(_spm_corpus())
        with contextlib.redirect_stderr(io.StringIO()):
            spm.SentencePieceTrainer.train(
                input=str(txt), model_prefix=str(Path(td) / "m"), vocab_size=SPM_VOCAB, model_type=model_type,
                character_coverage=1.0, num_threads=1, normalization_rule_name="identity",
                unk_id=(2 if model_type == "unigram" else 0), bos_id=(-1 if model_type == "unigram" else 1),
                eos_id=1 if model_type == "unigram" else 2, pad_id=(0 if model_type == "unigram" else -1),
                shuffle_input_sentence=False, minloglevel=2, seed_sentencepiece_size=100000)
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString((Path(td) / "m.model").read_bytes())
        del proto.trainer_spec.input[:]  # the temp paths would make the file differ run to run
        proto.trainer_spec.input.append("corpus.txt")
        proto.trainer_spec.model_prefix = "m"
        out.write_bytes(proto.SerializeToString())


def write_spm_tokenizer(hf: Path, family: str, model_type: str) -> None:
    if model_type == "unigram":  # T5 layout: spiece.model, pad 0 / eos 1 / unk 2
        train_spm(hf / "spiece.model", "unigram")
        cfg = {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
               "extra_ids": 0, "model_max_length": 64}
    else:
        train_spm(hf / "tokenizer.model", "bpe")
        cls = {"gemma2": "GemmaTokenizer"}.get(family, "LlamaTokenizer")
        cfg = {"tokenizer_class": cls, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
               "add_bos_token": True, "add_eos_token": False, "model_max_length": 64}
    (hf / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


def write_gpt2_tokenizer(hf: Path, lcp: Path) -> None:
    """GPT-2's byte-level BPE rebuilt from llama.cpp's own models/ggml-vocab-gpt-2.gguf, saved as tokenizer.json.

    llama.cpp's converter only accepts a BPE tokenizer whose encoding of its check text hashes to a known value
    (``get_vocab_base_pre``), and those ids run up to 48101: no small BPE vocab passes, so these families carry
    GPT-2's 50257 tokens (chkhsh 3ce83efd..., "gpt-2")."""
    sys.path.insert(0, str(lcp / "gguf-py"))
    try:
        import gguf
        r = gguf.GGUFReader(str(lcp / "models" / "ggml-vocab-gpt-2.gguf"))
        toks = r.fields["tokenizer.ggml.tokens"]
        tokens = [bytes(toks.parts[i]).decode("utf-8") for i in toks.data]
        mf = r.fields["tokenizer.ggml.merges"]
        merges = [bytes(mf.parts[i]).decode("utf-8") for i in mf.data]
    finally:
        sys.path.pop(0)
    assert len(tokens) == GPT2_VOCAB, len(tokens)
    from transformers import GPT2Tokenizer

    tok = GPT2Tokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ")) for m in merges],
                        bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                        add_prefix_space=False, model_max_length=64)
    # transformers 5 maps olmo2 / stablelm to the tokenizers backend, which needs tokenizer.json
    tok.save_pretrained(str(hf))
    for extra in ("special_tokens_map.json", "vocab.json", "merges.txt"):
        (hf / extra).unlink(missing_ok=True)


# -- families ---------------------------------------------------------------------------------------

# name -> spec.  centre: initial norm weight (0 for modules computing x * (1 + w)); tokenizer: "spm" (sentencepiece
# BPE trained here, 128 tokens), "spm-unigram" (T5), "gpt2" (GPT-2 BPE, 50257 tokens), None; inp: ids / image /
# audio / wave; field: the output the ONNX wrapper returns; gguf: llama.cpp has a converter for the architecture
# (the converter is run on every family anyway, to record its refusal); moe: export with batched_mm experts.
FAMILIES: dict[str, dict] = {}


def family(name: str, *, centre: float = 1.0, tokenizer: str | None = "spm", inp: str = "ids",
           field: str = "logits", gguf: bool = True, moe: bool = False, note: str = ""):
    def deco(fn):
        FAMILIES[name] = dict(build=fn, centre=centre, tokenizer=tokenizer, inp=inp, field=field, gguf=gguf,
                              moe=moe, note=note)
        return fn
    return deco


def _lm(vocab: int) -> dict:
    return dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=64)


SPM_IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=None)
GPT2_IDS = dict(bos_token_id=50256, eos_token_id=50256, pad_token_id=None)


@family("phi3")
def _phi3():
    import transformers as t
    cfg = t.Phi3Config(**_lm(SPM_VOCAB), **SPM_IDS, num_key_value_heads=2, original_max_position_embeddings=64,
                       rms_norm_eps=3e-6, tie_word_embeddings=False)
    return t.Phi3ForCausalLM(cfg)


@family("mistral")
def _mistral():
    import transformers as t
    # intermediate 256: ffn_down rows are 256 long, so Q4_K_M really writes Q4_K / Q6_K blocks there (every other
    # tensor of these hidden-32 models has 32-long rows and falls back to Q5_0 / Q8_0)
    cfg = t.MistralConfig(**{**_lm(SPM_VOCAB), "intermediate_size": 256}, **SPM_IDS, num_key_value_heads=2, head_dim=8,
                          rms_norm_eps=4e-6,
                          sliding_window=None, tie_word_embeddings=False)
    return t.MistralForCausalLM(cfg)


@family("gemma2", centre=0.0)
def _gemma2():
    import transformers as t
    cfg = t.Gemma2Config(**_lm(SPM_VOCAB), bos_token_id=1, eos_token_id=2, pad_token_id=0, num_key_value_heads=2,
                         head_dim=8, query_pre_attn_scalar=8, sliding_window=32, rms_norm_eps=2e-6)
    return t.Gemma2ForCausalLM(cfg)


@family("nemotron", centre=0.0)
def _nemotron():
    import transformers as t
    cfg = t.NemotronConfig(**_lm(SPM_VOCAB), **SPM_IDS, num_key_value_heads=2, norm_eps=3e-5,
                           tie_word_embeddings=False)
    return t.NemotronForCausalLM(cfg)


@family("olmo2", tokenizer="gpt2")
def _olmo2():
    import transformers as t
    cfg = t.Olmo2Config(**_lm(GPT2_VOCAB), **GPT2_IDS, num_key_value_heads=2, rms_norm_eps=2e-6,
                        tie_word_embeddings=True)
    return t.Olmo2ForCausalLM(cfg)


@family("cohere", tokenizer="gpt2")
def _cohere():
    import transformers as t
    cfg = t.CohereConfig(**_lm(GPT2_VOCAB), **GPT2_IDS, num_key_value_heads=2, layer_norm_eps=3e-5,
                         logit_scale=0.125, use_qk_norm=False, tie_word_embeddings=True)
    return t.CohereForCausalLM(cfg)


@family("cohere_qk", tokenizer="gpt2", note="Cohere with use_qk_norm: per-head 2-D q/k LayerNorms (no bias)")
def _cohere_qk():
    import transformers as t
    cfg = t.CohereConfig(**_lm(GPT2_VOCAB), **GPT2_IDS, num_key_value_heads=2, layer_norm_eps=3e-5,
                         logit_scale=0.125, use_qk_norm=True, tie_word_embeddings=True)
    return t.CohereForCausalLM(cfg)


@family("falcon", tokenizer="gpt2", note="new_decoder_architecture: ln_attn + ln_mlp per layer")
def _falcon():
    import transformers as t
    cfg = t.FalconConfig(vocab_size=GPT2_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_kv_heads=2, new_decoder_architecture=True, parallel_attn=True, bias=False,
                         layer_norm_epsilon=2e-5, max_position_embeddings=64, tie_word_embeddings=True, **GPT2_IDS)
    return t.FalconForCausalLM(cfg)


@family("t5", tokenizer="spm-unigram", field="logits")
def _t5():
    import transformers as t
    cfg = t.T5Config(vocab_size=SPM_VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                     num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                     layer_norm_epsilon=3e-6, feed_forward_proj="relu", tie_word_embeddings=True,
                     pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, n_positions=64)
    return t.T5ForConditionalGeneration(cfg)


@family("gpt2", tokenizer="gpt2")
def _gpt2():
    import transformers as t
    cfg = t.GPT2Config(vocab_size=GPT2_VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                       layer_norm_epsilon=2e-5, **GPT2_IDS)
    return t.GPT2LMHeadModel(cfg)


@family("mixtral", moe=True, note="MoE: 4 experts, top-2; ONNX only with the batched_mm experts implementation")
def _mixtral():
    import transformers as t
    cfg = t.MixtralConfig(**_lm(SPM_VOCAB), **SPM_IDS, num_key_value_heads=2, head_dim=8, num_local_experts=4,
                          num_experts_per_tok=2, rms_norm_eps=5e-6, sliding_window=None, tie_word_embeddings=False)
    return t.MixtralForCausalLM(cfg)


@family("qwen2")
def _qwen2():
    import transformers as t
    cfg = t.Qwen2Config(**_lm(SPM_VOCAB), **SPM_IDS, num_key_value_heads=2, rms_norm_eps=4e-6,
                        tie_word_embeddings=False)
    return t.Qwen2ForCausalLM(cfg)


@family("granite")
def _granite():
    import transformers as t
    cfg = t.GraniteConfig(**_lm(SPM_VOCAB), **SPM_IDS, num_key_value_heads=2, rms_norm_eps=3e-6,
                          embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.25,
                          logits_scaling=2.0, tie_word_embeddings=False)
    return t.GraniteForCausalLM(cfg)


@family("stablelm", tokenizer="gpt2", note="qk_layernorm: one nn.LayerNorm per head (StableLmLayerNormPerHead)")
def _stablelm():
    import transformers as t
    cfg = t.StableLmConfig(**_lm(GPT2_VOCAB), **GPT2_IDS, num_key_value_heads=2, layer_norm_eps=2e-5,
                           qk_layernorm=True, use_parallel_residual=False, tie_word_embeddings=False)
    return t.StableLmForCausalLM(cfg)


@family("starcoder2", tokenizer="gpt2")
def _starcoder2():
    import transformers as t
    cfg = t.Starcoder2Config(**_lm(GPT2_VOCAB), **GPT2_IDS, num_key_value_heads=2, norm_epsilon=3e-5,
                             sliding_window=None, tie_word_embeddings=True)
    return t.Starcoder2ForCausalLM(cfg)


@family("vit", tokenizer=None, inp="image", gguf=False)
def _vit():
    import transformers as t
    cfg = t.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      image_size=32, patch_size=8, num_channels=3, layer_norm_eps=2e-6, num_labels=4)
    return t.ViTForImageClassification(cfg)


@family("clip_vision", tokenizer=None, inp="image", field="pooler_output", gguf=False,
        note="CLIPVisionModel; the export returns pooler_output so post_layernorm is in the graph")
def _clip_vision():
    import transformers as t
    cfg = t.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             image_size=32, patch_size=8, num_channels=3, layer_norm_eps=3e-6)
    return t.CLIPVisionModel(cfg)


@family("whisper_encoder", tokenizer=None, inp="audio", gguf=False,
        note="WhisperForAudioClassification = Whisper encoder + classifier; Whisper's LayerNorms use torch's "
             "default eps 1e-5 (no config key)")
def _whisper_encoder():
    import transformers as t
    cfg = t.WhisperConfig(vocab_size=64, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_source_positions=16, max_target_positions=16,
                          classifier_proj_size=16, num_labels=4)
    return t.WhisperForAudioClassification(cfg)


@family("resnet", tokenizer=None, inp="image", gguf=False, note="BatchNorm2d eps is torch's default 1e-5 (hard-coded)")
def _resnet():
    import transformers as t
    cfg = t.ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                         layer_type="bottleneck", hidden_act="relu", downsample_in_first_stage=False, num_labels=4)
    return t.ResNetForImageClassification(cfg)


@family("convnext", tokenizer=None, inp="image", gguf=False,
        note="ConvNextLayerNorm eps hard-coded 1e-6 (channels_first and channels_last); config layer_norm_eps "
             "only reaches the final nn.LayerNorm")
def _convnext():
    import transformers as t
    cfg = t.ConvNextConfig(num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                           layer_norm_eps=1e-7, image_size=32, num_labels=4)
    return t.ConvNextForImageClassification(cfg)


@family("efficientnet", tokenizer=None, inp="image", gguf=False,
        note="BatchNorm2d with eps from config batch_norm_eps (2e-3, not torch's 1e-5)")
def _efficientnet():
    import transformers as t
    cfg = t.EfficientNetConfig(num_channels=3, image_size=32, width_coefficient=0.1, depth_coefficient=1.0,
                               kernel_sizes=[3, 3], in_channels=[32, 16], out_channels=[16, 24],
                               depthwise_padding=[], strides=[1, 2], num_block_repeats=[1, 1],
                               expand_ratios=[1, 4], hidden_dim=128, batch_norm_eps=2e-3, num_labels=4,
                               dropout_rate=0.0, drop_connect_rate=0.0)
    return t.EfficientNetForImageClassification(cfg)


@family("wav2vec2", tokenizer=None, inp="wave", field="last_hidden_state", gguf=False,
        note="feat_extract_norm='group': GroupNorm(num_groups = channels) = instance norm over time")
def _wav2vec2():
    import transformers as t
    cfg = t.Wav2Vec2Config(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                           feat_extract_norm="group", num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                           layer_norm_eps=2e-6, do_stable_layer_norm=False, apply_spec_augment=False)
    return t.Wav2Vec2Model(cfg)


# -- norm discovery, randomisation, probing -------------------------------------------------------------

def _is_norm(mod: torch.nn.Module) -> bool:
    nn = torch.nn
    if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
                        nn.LayerNorm, nn.RMSNorm)):
        return True
    # model-specific norm classes (RMSNorm, LayerNorm1P, T5LayerNorm, CohereLayerNorm...): named *Norm* and
    # owning their weight directly (containers like StableLmLayerNormPerHead own nothing and are skipped)
    return "norm" in type(mod).__name__.lower() and isinstance(getattr(mod, "weight", None), torch.Tensor) \
        and "weight" in dict(mod.named_parameters(recurse=False))


def norm_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and _is_norm(m)]


def randomise_norms(model: torch.nn.Module, centre: float, gen: torch.Generator) -> None:
    with torch.no_grad():
        for _, m in norm_modules(model):
            w = getattr(m, "weight", None)
            b = getattr(m, "bias", None)
            if isinstance(w, torch.Tensor):
                w.copy_(centre + 0.1 * torch.randn(w.shape, generator=gen))
            if isinstance(b, torch.Tensor):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


EPS_ATTRS = ("eps", "variance_epsilon", "epsilon", "layer_norm_eps", "norm_eps", "rms_norm_eps")


def _eps_attr(m: torch.nn.Module) -> tuple[str | None, float | None]:
    for a in EPS_ATTRS:
        v = getattr(m, a, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return a, float(v)
    return None, None


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().to(torch.float64).cpu().numpy()


def _run(m: torch.nn.Module, x: np.ndarray, double: bool) -> np.ndarray:
    mm = copy.deepcopy(m).eval()
    if double:
        mm = mm.double()
    with torch.no_grad():
        y = mm(torch.from_numpy(x).to(torch.float64 if double else torch.float32))
    if isinstance(y, tuple):
        y = y[0]
    return y.detach().to(torch.float64).numpy()


def _normalise(x: np.ndarray, axes: tuple[int, ...], eps: float, centre: bool) -> np.ndarray:
    if centre:
        x = x - x.mean(axis=axes, keepdims=True)
    return x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)


def probe_norm(m: torch.nn.Module) -> dict:
    """What the module computes, found by running it on random inputs against numpy references."""
    nn = torch.nn
    rng = np.random.default_rng(7)
    w, b = _np(getattr(m, "weight", None)), _np(getattr(m, "bias", None))
    eps_name, eps = _eps_attr(m)
    res: dict = {}
    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
        C = m.num_channels if isinstance(m, nn.GroupNorm) else m.num_features
        spatial = {nn.BatchNorm1d: (5,), nn.InstanceNorm1d: (5,), nn.GroupNorm: (6,)}.get(type(m), (3, 3))
        if isinstance(m, (nn.BatchNorm3d, nn.InstanceNorm3d)):
            spatial = (2, 2, 2)
        shape = (2, C, *spatial)
        bshape = (1, C) + (1,) * len(spatial)
        g = (w if w is not None else np.ones(C)).reshape(bshape)
        bb = (b if b is not None else np.zeros(C)).reshape(bshape)
        x = rng.normal(0.5, 1.5, shape)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            kind = "batch_norm"
            rm, rv = _np(m.running_mean).reshape(bshape), _np(m.running_var).reshape(bshape)
            ref = (x - rm) / np.sqrt(rv + eps) * g + bb
            y = _run(m, x, double=True)
            r = (x - rm) / ((y - bb) / g)
            eps_probe = float(np.median(r * r - rv))
            res.update(running_stats=True)
        else:
            G = m.num_groups if isinstance(m, nn.GroupNorm) else C
            kind = "group_norm" if isinstance(m, nn.GroupNorm) else "instance_norm"
            xr = x.reshape(2, G, -1)
            ref = _normalise(xr, (2,), eps, True).reshape(shape) * g + bb
            y = _run(m, x, double=True)
            xs = rng.normal(0.0, np.sqrt(eps), shape)
            ys = _run(m, xs, double=True)
            n = ((ys - bb) / g).reshape(2, G, -1)
            xc = xs.reshape(2, G, -1)
            xc = xc - xc.mean(axis=2, keepdims=True)
            var = (xc * xc).mean(axis=2)
            s2 = (n * n).mean(axis=2)
            eps_probe = float(np.median(var * (1.0 / s2 - 1.0)))
            res.update(num_groups=int(G), per_channel=bool(G == C))
        err = float(np.abs(y - ref).max() / (np.abs(ref).max() + 1e-12))
        res.update(kind=kind, centres=True, convention="w", normalized_axes="channel (dim 1)", probe_rel_err=err)
    else:
        S = tuple(w.shape) if w is not None else tuple(m.normalized_shape)
        channels_first = getattr(m, "data_format", None) == "channels_first"
        if channels_first:
            shape, axis_sets, bshape = (2, S[0], 3, 3), [(1,)], (1, S[0], 1, 1)
        else:
            shape = (2, 3, *S)
            axis_sets = sorted({tuple(range(-k, 0)) for k in (1, len(S))}, key=len)
            bshape = S
        g0 = w.reshape(bshape) if w is not None else 1.0
        bb = b.reshape(bshape) if b is not None else 0.0
        x = rng.normal(2.0, 1.5, shape)
        y = _run(m, x, double=False)
        best = None
        for axes in axis_sets:
            for centre in (True, False):
                for conv, g in (("w", g0), ("1+w", 1.0 + g0)):
                    ref = _normalise(x, axes, eps or 0.0, centre) * g + bb
                    err = float(np.abs(y - ref).max() / (np.abs(ref).max() + 1e-12))
                    if best is None or err < best[0]:
                        best = (err, axes, centre, conv)
        err, axes, centre, conv = best
        g = g0 if conv == "w" else 1.0 + g0
        xs = rng.normal(0.0, np.sqrt(eps or 1e-6), shape)
        try:
            ys = _run(m, xs, double=True)
        except Exception:  # noqa: BLE001 - some modules insist on float32
            ys = _run(m, xs, double=False)
        n = (ys - bb) / g
        xc = xs - xs.mean(axis=axes, keepdims=True) if centre else xs
        var = (xc * xc).mean(axis=axes)
        s2 = (n * n).mean(axis=axes)
        eps_probe = float(np.median(var * (1.0 / s2 - 1.0)))
        res.update(kind="layer_norm" if centre else "rms_norm", centres=centre, convention=conv,
                   normalized_axes=("channel (dim 1, channels_first)" if channels_first
                                    else f"last {len(axes)} dim(s)"),
                   probe_rel_err=err)
    res.update(eps=eps, eps_attr=eps_name, eps_probed=eps_probe,
               eps_probe_ok=bool(eps is not None and abs(eps_probe - eps) <= 0.02 * eps + 1e-12))
    res["probe_ok"] = bool(res["probe_rel_err"] < 1e-4)
    return res


def qk_role(path: str) -> str | None:
    leaf = [p for p in path.split(".") if not p.isdigit()]
    names = " ".join(leaf[-2:]).lower()
    if re.search(r"\b(q_norm|q_layernorm|query_layernorm|q_ln|query_norm)\b", names):
        return "q"
    if re.search(r"\b(k_norm|k_layernorm|key_layernorm|k_ln|key_norm)\b", names):
        return "k"
    return None


def config_eps(cfg) -> dict:
    out: dict = {}

    def walk(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif re.search(r"eps|epsilon", str(k), re.I) and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[prefix + k] = v
    walk(cfg.to_dict(), "")
    return out


def checkpoint_keys(model: torch.nn.Module, hf: Path) -> dict[str, str | None]:
    """state_dict name -> key in model.safetensors, matched by identical values (norm parameters are random)."""
    from safetensors.numpy import load_file

    saved = {}
    for f in sorted(hf.glob("*.safetensors")):
        saved.update(load_file(str(f)))
    by_bytes: dict[bytes, list[str]] = {}
    for k, v in saved.items():
        by_bytes.setdefault(hashlib.sha1(v.astype(np.float32).tobytes() + str(v.shape).encode()).digest(), []).append(k)
    out = {}
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        a = t.detach().float().numpy()
        hits = by_bytes.get(hashlib.sha1(a.tobytes() + str(a.shape).encode()).digest(), [])
        if name in hits:
            out[name] = name
        elif len(hits) == 1:
            out[name] = hits[0]
        else:
            out[name] = hits[0] if hits else None
    return out


def norm_facts(model: torch.nn.Module, ckpt: dict[str, str | None]) -> list[dict]:
    facts = []
    for path, m in norm_modules(model):
        w = getattr(m, "weight", None)
        b = getattr(m, "bias", None)
        f = {"path": path, "class": type(m).__name__}
        try:
            f.update(probe_norm(m))
        except Exception as e:  # noqa: BLE001
            f.update(probe_error=f"{type(e).__name__}: {e}")
        f["weight_shape"] = list(w.shape) if isinstance(w, torch.Tensor) else None
        f["per_head"] = bool(isinstance(w, torch.Tensor) and w.dim() == 2)
        f["has_bias"] = isinstance(b, torch.Tensor)
        f["qk_role"] = qk_role(path)
        parent = path.rsplit(".", 2)
        if len(parent) == 3 and parent[1] == "norms":
            f["per_head_container"] = parent[0]
            f["head"] = int(parent[2])
            f["qk_role"] = qk_role(parent[0])
        keys = {}
        for pn in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(m, pn, None)
            if isinstance(t, torch.Tensor):
                keys[pn] = {"state_dict": f"{path}.{pn}", "checkpoint": ckpt.get(f"{path}.{pn}")}
        f["params"] = keys
        f["checkpoint_key"] = keys.get("weight", {}).get("checkpoint")
        f["renamed_in_checkpoint"] = any(v["checkpoint"] != v["state_dict"] for v in keys.values())
        facts.append(f)
    return facts


# -- inputs and export wrappers -----------------------------------------------------------------------

class Wrap(torch.nn.Module):
    """Exports take one tensor and return one tensor."""

    def __init__(self, m: torch.nn.Module, inp: str, field: str, seq2seq: bool) -> None:
        super().__init__()
        self.m, self.inp, self.field, self.seq2seq = m, inp, field, seq2seq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inp == "ids":
            kw = dict(input_ids=x, use_cache=False)
            if self.seq2seq:  # reversed ids: with the same ids the exporter shares the first enc/dec norm's math
                kw["decoder_input_ids"] = torch.flip(x, [-1])
            out = self.m(**kw)
        elif self.inp == "image":
            out = self.m(pixel_values=x)
        elif self.inp == "audio":
            out = self.m(input_features=x)
        else:
            out = self.m(input_values=x)
        return getattr(out, self.field)


def example_input(spec: dict, model: torch.nn.Module) -> tuple[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    if spec["inp"] == "ids":
        return "ids", torch.randint(3, cfg.vocab_size, (1, SEQ), generator=g)
    if spec["inp"] == "image":
        return "pixel_values", torch.randn(1, 3, 32, 32, generator=g)
    if spec["inp"] == "audio":
        return "input_features", torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g)
    return "input_values", torch.randn(1, 400, generator=g)


# -- converters ---------------------------------------------------------------------------------------

def lcp_root(args) -> Path:
    root = args.lcp_src / f"llama_cpp_python-{LCP_VERSION}" / "vendor" / "llama.cpp"
    if not (root / "convert_hf_to_gguf.py").is_file():
        args.lcp_src.mkdir(parents=True, exist_ok=True)
        if not args.lcp_sdist.is_file():
            args.lcp_sdist.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={LCP_VERSION}", "-d", str(args.lcp_sdist.parent)], check=True)
        with tarfile.open(args.lcp_sdist) as tf:
            tf.extractall(args.lcp_src, filter="data")
    return root


def _sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _short_error(e: BaseException) -> str:
    msg = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(e).__name__}: {e}")
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    if "## Exception summary" in lines:
        i = lines.index("## Exception summary")
        return "\n".join(lines[:1] + lines[i + 1:i + 4])
    return "\n".join(lines[:6])


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def file_record(root: Path, path: Path, **kw) -> dict:
    rec = {"path": str(path.relative_to(root)), **kw}
    if path.is_file():
        rec.update(produced=True, size=path.stat().st_size, sha256=_sha(path))
    else:
        rec.setdefault("produced", False)
    return rec


def convert_gguf(lcp: Path, hf: Path, out: Path, outtype: str) -> tuple[bool, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(lcp / "gguf-py"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS=str(THREADS), PYTHONHASHSEED="0")
    cmd = [sys.executable, str(lcp / "convert_hf_to_gguf.py"), str(hf), "--outfile", str(out), "--outtype", outtype]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0 or not out.is_file():
        out.unlink(missing_ok=True)
        return False, _tail(p.stderr + p.stdout)
    return True, ""


QUANT_SNIPPET = r"""
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
p.nthread = int(sys.argv[4])
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p))
sys.exit(rc)
"""


def quantize_gguf(src: Path, out: Path, qtype: str) -> tuple[bool, str]:
    p = subprocess.run([sys.executable, "-c", QUANT_SNIPPET, str(src), str(out), qtype, str(THREADS)],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0 or not out.is_file():
        out.unlink(missing_ok=True)
        return False, f"rc={p.returncode}: " + _tail(p.stderr + p.stdout)
    return True, ""


def gguf_norm_storage(lcp: Path, path: Path, facts: list[dict], model: torch.nn.Module) -> dict:
    """For each source norm parameter: the GGUF tensor llama.cpp wrote it to and whether it holds w or 1 + w.

    Tensor names are looked up with gguf-py's own name map (the one the converter uses); values are compared
    flattened, so per-head 2-D norms (and the stacked per-head StableLM norms) are covered too."""
    sys.path.insert(0, str(lcp / "gguf-py"))
    try:
        import gguf
        r = gguf.GGUFReader(str(path))
        arch = str(r.fields["general.architecture"].contents())
        arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
        n_blocks = int(r.fields[f"{arch}.block_count"].contents())
        tmap = gguf.get_tensor_name_map(arch_enum, n_blocks)
        tensors = {t.name: t for t in r.tensors}
        sd = model.state_dict()
        out = {}
        for f in facts:
            for pn, keys in f.get("params", {}).items():
                if pn not in ("weight", "bias"):
                    continue
                key = keys["checkpoint"] or keys["state_dict"]
                gname = tmap.get_name(key, try_suffixes=(".weight", ".bias"))
                if gname is None or gname not in tensors:
                    out[key] = {"gguf": gname, "stored": "not found under the mapped name"}
                    continue
                t = tensors[gname]
                got = np.asarray(t.data, dtype=np.float64).reshape(-1)
                src = sd[keys["state_dict"]].detach().double().numpy().reshape(-1)
                stored = "other"
                if got.shape == src.shape:
                    if np.allclose(got, src, rtol=0, atol=1e-6):
                        stored = "w" if pn == "weight" else "b"
                    elif pn == "weight" and np.allclose(got, src + 1.0, rtol=0, atol=1e-6):
                        stored = "1+w"
                out[key] = {"gguf": gname, "type": t.tensor_type.name, "shape": [int(x) for x in t.shape],
                            "stored": stored}
        return out
    except Exception as e:  # noqa: BLE001 - descriptive only
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        sys.path.pop(0)


def gguf_summary(lcp: Path, path: Path) -> dict:
    """Tensor types and norm-related metadata of a written GGUF (descriptive only)."""
    sys.path.insert(0, str(lcp / "gguf-py"))
    try:
        import gguf
        r = gguf.GGUFReader(str(path))
        types: dict[str, int] = {}
        norm_types: dict[str, str] = {}
        for t in r.tensors:
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
            if "norm" in t.name:
                norm_types[t.name] = f"{t.tensor_type.name}{list(int(s) for s in t.shape)}"
        meta = {}
        for k, f in r.fields.items():
            if re.search(r"eps|epsilon|architecture|file_type", k):
                v = f.contents() if hasattr(f, "contents") else None
                meta[k] = v
        return {"tensor_types": types, "norm_tensors": norm_types, "metadata": meta, "n_tensors": len(r.tensors)}
    finally:
        sys.path.pop(0)


NORM_OPS = ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "GroupNormalization",
            "InstanceNormalization", "BatchNormalization", "ReduceMean", "Sqrt", "Reciprocal", "Div", "Pow")


def onnx_summary(path: Path) -> dict:
    import onnx
    mdl = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}

    def walk(g):
        for n in g.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
    walk(mdl.graph)
    for f in mdl.functions:
        for n in f.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"opset": {o.domain or "ai.onnx": o.version for o in mdl.opset_import},
            "norm_related_ops": {k: ops[k] for k in NORM_OPS if k in ops},
            "n_nodes": sum(ops.values()), "n_initializers": len(mdl.graph.initializer)}


@contextlib.contextmanager
def _quiet_fds():
    """The TorchScript exporter prints whole IR graphs to the C-level stderr on failure."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def export_onnx(wrapped: torch.nn.Module, example: torch.Tensor, name: str, out: Path, opset: int,
                dynamo: bool) -> tuple[bool, str]:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), _quiet_fds():
            warnings.simplefilter("ignore")
            if dynamo:
                prog = torch.onnx.export(wrapped, (example,), dynamo=True, opset_version=opset, input_names=[name],
                                         optimize=True, verbose=False)
                prog.save(str(out))
            else:
                torch.onnx.export(wrapped, (example,), str(out), dynamo=False, opset_version=opset,
                                  input_names=[name], do_constant_folding=True)
        for extra in out.parent.glob(out.name + ".data"):
            return False, f"external data written ({extra.name})"
        return True, ""
    except Exception as e:  # noqa: BLE001
        out.unlink(missing_ok=True)
        return False, _short_error(e)


# -- one family ---------------------------------------------------------------------------------------

def generate_family(name: str, root: Path, args) -> dict:
    import transformers

    spec = FAMILIES[name]
    t0 = time.time()
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    hf = folder / "hf"
    hf.mkdir(parents=True)
    seed = zlib.crc32(name.encode()) & 0x7FFFFFFF
    torch.manual_seed(seed)
    model = spec["build"]().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    randomise_norms(model, spec["centre"], gen)
    entry: dict = {"family": name, "note": spec["note"], "model_type": model.config.model_type,
                   "llama_cpp_converter_expected": spec["gguf"],
                   "architecture": type(model).__name__, "seed": seed, "norm_init_centre": spec["centre"],
                   "config_eps": config_eps(model.config), "transformers": transformers.__version__,
                   "torch": torch.__version__, "files": []}

    # HF directory
    model.save_pretrained(str(hf))
    (hf / "generation_config.json").unlink(missing_ok=True)
    cfgj = json.loads((hf / "config.json").read_text())
    if spec["moe"]:
        cfgj.pop("experts_implementation", None)
    if name == "gpt2":
        cfgj["n_ctx"] = cfgj["n_positions"]  # transformers 5 no longer writes n_ctx; llama.cpp's converter reads it
    (hf / "config.json").write_text(json.dumps(cfgj, indent=2, sort_keys=True) + "\n")
    lcp = lcp_root(args)
    if spec["tokenizer"] == "spm":
        write_spm_tokenizer(hf, name, "bpe")
    elif spec["tokenizer"] == "spm-unigram":
        write_spm_tokenizer(hf, name, "unigram")
    elif spec["tokenizer"] == "gpt2":
        write_gpt2_tokenizer(hf, lcp)
    import sentencepiece
    tok_tool = {"spm": f"sentencepiece {sentencepiece.__version__} BPE trained by generate.py",
                "spm-unigram": f"sentencepiece {sentencepiece.__version__} unigram trained by generate.py",
                "gpt2": "GPT-2 BPE rebuilt from llama.cpp models/ggml-vocab-gpt-2.gguf"}.get(spec["tokenizer"])
    for p in sorted(hf.iterdir()):
        if p.name in ("config.json", "model.safetensors") or p.name.startswith("model-"):
            rec = file_record(root, p, tool="transformers save_pretrained", version=transformers.__version__,
                              format="hf")
        else:
            rec = file_record(root, p, tool=tok_tool, format="hf-tokenizer")
        entry["files"].append(rec)

    # expected facts from the source modules
    ckpt = checkpoint_keys(model, hf)
    facts = norm_facts(model, ckpt)
    entry["norms"] = facts
    entry["norm_count"] = len(facts)
    kinds: dict[str, int] = {}
    for f in facts:
        k = f.get("kind", "?") + ("(1+w)" if f.get("convention") == "1+w" else "")
        kinds[k] = kinds.get(k, 0) + 1
    entry["norm_kinds"] = kinds
    entry["module_eps"] = sorted({f["eps"] for f in facts if f.get("eps") is not None})
    entry["config_eps_not_used_by_any_module"] = {k: v for k, v in entry["config_eps"].items()
                                                  if v not in entry["module_eps"]}
    entry["modules_with_eps_not_in_config"] = [f["path"] for f in facts
                                               if f.get("eps") not in entry["config_eps"].values()]
    renamed = [(f["path"], f["checkpoint_key"]) for f in facts if f["renamed_in_checkpoint"]]
    entry["renamed_checkpoint_keys"] = len(renamed)
    entry["checkpoint_key_mapping"] = ("checkpoint key of each parameter found by identical values in "
                                       "model.safetensors (norm parameters are random, so unique)")
    entry["probe_failures"] = [f["path"] for f in facts if not f.get("probe_ok") or not f.get("eps_probe_ok")]

    # example input + ONNX
    in_name, example = example_input(spec, model)
    np.savez(folder / "input.npz", **{in_name: example.numpy()})
    entry["files"].append(file_record(root, folder / "input.npz", tool="numpy.savez (generate.py)", format="npz",
                                      input=in_name, shape=list(example.shape), dtype=str(example.dtype)))
    wrapped = Wrap(model, spec["inp"], spec["field"], name == "t5").eval()
    with torch.no_grad():
        y = wrapped(example)
    entry["example_output"] = {"name": spec["field"], "shape": list(y.shape), "finite": bool(torch.isfinite(y).all())}
    impl = getattr(model.config, "_attn_implementation", None)
    experts = getattr(model.config, "_experts_implementation", None) if spec["moe"] else None
    # the dynamo exporter is tried with the model's defaults first; on failure, once more with one setting changed:
    # T5 + sdpa fails in the exporter's decomposition step (eager exports); MoE experts need batched_mm (the
    # default grouped_mm is a custom op with no ONNX translation)
    fallbacks = []
    if impl not in (None, "eager"):
        fallbacks.append(("attn_implementation", "eager", model.set_attn_implementation, impl))
    if experts not in (None, "batched_mm"):
        fallbacks.append(("experts_implementation", "batched_mm", model.set_experts_implementation, experts))
    for opset, dyn in ((18, True), (23, True), (17, False)):
        out = folder / f"{name}-{'dynamo' if dyn else 'legacy'}-opset{opset}.onnx"
        ok, err = export_onnx(wrapped, example, in_name, out, opset, dyn)
        rec = dict(tool=f"torch.onnx.export(dynamo={dyn})", version=torch.__version__, opset=opset, format="onnx",
                   input=in_name, output=spec["field"], attn_implementation=impl,
                   flags=("optimize=True" if dyn else "do_constant_folding=True"))
        if experts:
            rec["experts_implementation"] = experts
        for key, value, setter, default in fallbacks if dyn else ():
            if ok:
                break
            rec.setdefault("failed_with_defaults", err)
            setter(value)
            try:
                ok, err = export_onnx(wrapped, example, in_name, out, opset, dyn)
            finally:
                setter(default)
            if ok:
                rec[key] = f"{value} (after the export with {default} failed)"
        rec = file_record(root, out, **rec)
        if ok:
            rec["summary"] = onnx_summary(out)
        else:
            rec["error"] = err
        entry["files"].append(rec)
        print(f"  {out.name}: {'ok' if ok else 'FAILED ' + err.splitlines()[0][:200]}", flush=True)

    # GGUF: the converter is tried on every family, so its refusal of an architecture is recorded too
    conv = f"llama.cpp convert_hf_to_gguf.py (llama-cpp-python {LCP_VERSION} sdist, vendored gguf-py)"
    f32 = folder / f"{name}-f32.gguf"
    for outtype in ("f32", "q8_0"):
        out = folder / f"{name}-{outtype}.gguf"
        if outtype == "f32" or f32.is_file():
            ok, err = convert_gguf(lcp, hf, out, outtype)
        else:
            ok, err = False, "skipped: the converter refused --outtype f32 (see that record)"
        rec = file_record(root, out, tool=conv, version=LCP_VERSION, format="gguf",
                          command=f"PYTHONPATH=vendor/llama.cpp/gguf-py python vendor/llama.cpp/convert_hf_to_gguf.py "
                                  f"{name}/hf --outfile {out.name} --outtype {outtype}")
        if ok:
            rec["summary"] = gguf_summary(lcp, out)
            if outtype == "f32":
                rec["norm_storage"] = gguf_norm_storage(lcp, out, facts, model)
        else:
            rec["error"] = err
        entry["files"].append(rec)
        print(f"  {out.name}: {'ok' if ok else 'FAILED ' + err.splitlines()[-1][:200]}", flush=True)
    out = folder / f"{name}-Q4_K_M.gguf"
    if f32.is_file():
        ok, err = quantize_gguf(f32, out, "Q4_K_M")
    else:
        ok, err = False, "skipped: no f32 GGUF (the converter refused this family)"
    rec = file_record(root, out, tool="llama_cpp.llama_model_quantize", version=LCP_VERSION, format="gguf",
                      command=f"llama_model_quantize({name}-f32.gguf, {out.name}, "
                              f"ftype=LLAMA_FTYPE_MOSTLY_Q4_K_M, nthread={THREADS}, other params default)")
    if ok:
        rec["summary"] = gguf_summary(lcp, out)
    else:
        rec["error"] = err
    entry["files"].append(rec)
    print(f"  {out.name}: {'ok' if ok else 'FAILED ' + err.splitlines()[-1][:200]}", flush=True)
    entry["seconds"] = round(time.time() - t0, 1)
    return entry


# -- driver -------------------------------------------------------------------------------------------

def write_ignore(root: Path, expected: dict) -> None:
    big = sorted(f["path"] for fam in expected["families"].values() for f in fam.get("files", [])
                 if f.get("produced") and not f.get("committed", True))
    (root / ".gitignore").write_text(
        "# written by generate.py: files above COMMIT_MAX_BYTES are recreated by `python generate.py`\n"
        + "".join(p + "\n" for p in big))


FIELDS = {
    "norms[].kind": "what the module computes, by probing it on random inputs against numpy references: layer_norm "
                    "(centres) / rms_norm (does not); batch_norm / group_norm / instance_norm by torch class, "
                    "checked against a numpy reference with the running stats / groups",
    "norms[].convention": "'w' if the output scales with the stored weight, '1+w' if with 1 + weight (probed)",
    "norms[].normalized_axes": "axes the statistics are taken over (per-head 2-D norms: last 1 dim; ConvNeXt "
                               "channels_first: dim 1)",
    "norms[].eps": "the module's own attribute (eps_attr names it); eps_probed recovers it from the output on an "
                   "input whose variance is about eps; eps_probe_ok: within 2 %",
    "norms[].params": "state_dict name -> checkpoint key in model.safetensors, matched by identical values",
    "norms[].qk_role": "q / k from the module path (q_norm, k_norm, q_layernorm, k_layernorm)",
    "config_eps": "every config key containing eps/epsilon, nested keys dotted",
    "files[]": "every file written or attempted: tool, version, command/flags, opset, size, sha256, or the "
               "converter's error; committed = size <= commit_max_bytes (others are in .gitignore)",
    "files[].norm_storage": "f32 GGUF only: the GGUF tensor each source norm parameter went to (gguf-py name map) "
                            "and whether it holds w, 1+w or the bias",
    "files[].failed_with_defaults": "ONNX: the error with the model's default attention / experts implementation "
                                    "before the retry that produced the file",
    "files[].summary": "descriptive: GGUF tensor types / norm tensors / eps metadata; ONNX opset and counts of "
                       "norm-related ops",
}


def restore(names: list[str], args) -> int:
    """Regenerate the missing uncommitted files of ``names`` (see --restore); 1 if one could not be recreated."""
    root = args.out.resolve()
    expected = json.loads((root / "expected.json").read_text())["families"]
    todo = {fam: [f for f in expected[fam].get("files", []) if f.get("produced") and not f.get("committed", True)
                  and not (root / f["path"]).exists()] for fam in names if fam in expected}
    todo = {fam: files for fam, files in todo.items() if files}
    if not todo:
        print("restore: every recorded file is present")
        return 0
    bad, t0 = 0, time.time()
    with tempfile.TemporaryDirectory(prefix="normaudit-wide-") as td:
        for fam, files in todo.items():
            print(f"== {fam}: regenerating {len(files)} missing files", flush=True)
            generate_family(fam, Path(td), args)
            for f in files:
                src, dst = Path(td) / f["path"], root / f["path"]
                if not src.is_file():
                    print(f"  {f['path']}: NOT produced this time", flush=True)
                    bad += 1
                    continue
                sha = _sha(src)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                same = sha == f.get("sha256")
                why = " (dynamo exports record the generator's path in their metadata)" if dst.suffix == ".onnx" else ""
                print(f"  {f['path']}: restored" + ("" if same else f" with other bytes than recorded (sha256 "
                                                                  f"{sha[:12]}, recorded {str(f.get('sha256'))[:12]})"
                                                                  + why), flush=True)
    print(f"restore: {sum(map(len, todo.values()))} files in {time.time() - t0:.0f} s, {bad} not produced")
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma list from: {', '.join(FAMILIES)}")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--lcp-sdist", type=Path, default=DEFAULT_SDIST)
    ap.add_argument("--lcp-src", type=Path, default=DEFAULT_LCP_SRC)
    ap.add_argument("--restore", action="store_true",
                    help="recreate only the files expected.json records as produced but too big to commit that are "
                         "missing under --out: each such family is regenerated in a temporary folder and those files "
                         "are copied in and checked against their recorded sha256; expected.json is left as it is")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}")
    if args.restore:
        sys.exit(restore(names, args))
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    exp_path = root / "expected.json"
    expected = json.loads(exp_path.read_text()) if exp_path.is_file() else {}
    expected.setdefault("families", {})
    t0 = time.time()
    for name in names:
        print(f"== {name}", flush=True)
        try:
            entry = generate_family(name, root, args)
        except Exception as e:  # noqa: BLE001 - one failing family must not stop the others
            traceback.print_exc()
            entry = {"family": name, "error": f"{type(e).__name__}: {e}", "traceback": _tail(traceback.format_exc(), 12)}
        for f in entry.get("files", []):
            f["committed"] = bool(f.get("produced")) and f.get("size", 0) <= COMMIT_MAX_BYTES
        expected["families"][name] = entry
        expected["families"] = dict(sorted(expected["families"].items()))
        expected["generator"] = {"script": "testmodels/wide/generate.py", "commit_max_bytes": COMMIT_MAX_BYTES,
                                 "llama_cpp_python": LCP_VERSION, "torch": torch.__version__,
                                 "python": sys.version.split()[0], "fields": FIELDS}
        exp_path.write_text(json.dumps(expected, indent=1, default=str) + "\n")
        write_ignore(root, expected)
        print(f"   {entry.get('seconds', '?')} s", flush=True)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
