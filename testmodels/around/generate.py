"""Test data for the normalization *around* the model (issue #14), written by the real tools.

    python testmodels/around/generate.py                     # every family, into testmodels/around/
    python testmodels/around/generate.py --families vit      # only these
    python testmodels/around/generate.py --out /tmp/around   # elsewhere

Tiny models from transformers' own code with seeded random weights (nothing downloaded); norm parameters
randomised as in testmodels/wide (weight 1 +- 0.1, or 0 +- 0.1 where the module computes x * (1 + w); bias
+- 0.1).  The preprocessing and sentence-transformers files are written by hand from their documented formats
(PIL/torchvision and sentence-transformers are not installed here), with the values transformers' own image
processor classes use by default.

``vit/``          ViTForImageClassification + ``preprocessor_config.json`` (ViTImageProcessor with ImageNet's
                  mean/std, as DeiT / timm ViTs: distinct per channel, so a swap is visible); ONNX by
                  ``torch.onnx.export(dynamo=True, opset 18)``:
                  ``vit-plain.onnx``      takes ``pixel_values`` (already normalized: preprocessing outside);
                  ``vit-norm.onnx``       a wrapper doing ``(pixels / 255 - mean) / std`` in the graph;
                  ``vit-norm-legacy.onnx`` the same wrapper through the TorchScript exporter (opset 17);
                  ``vit-folded.onnx``     the normalization folded into the patch-embedding conv (its weight
                                          scaled per input channel, its bias shifted), nothing on the input;
                  ``input.npz``           ``pixels`` (0..255) and the matching ``pixel_values``.
``gemma3_vlm/``   Gemma3ForConditionalGeneration (SigLIP vision tower, 2 layers; 1 text layer) saved in the hub's
                  checkpoint layout (``vision_tower.vision_model.*``: transformers 5.24's save_pretrained writes
                  ``vision_tower.*``, which llama.cpp's converter refuses with "Can not map tensor"; transformers
                  loads both to identical weights) + ``preprocessor_config.json`` (Gemma3ImageProcessor defaults);
                  ``gemma3-mmproj-f32.gguf`` by ``convert_hf_to_gguf.py --mmproj --outtype f32`` and the language
                  model, ``gemma3-text-f32.gguf``, by ``convert_hf_to_gguf.py --outtype f32`` (a 128-piece
                  sentencepiece tokenizer for it; the converter pads the vocabulary to the config's 300).
``qwen2_vl/``     Qwen2VLForConditionalGeneration (3 vision blocks, merger; 1 text layer) + preprocessor_config.json
                  (Qwen2VLImageProcessor defaults: OpenAI CLIP's mean/std, which differ: a swap is visible);
                  ``qwen2vl-mmproj-f32.gguf`` by ``convert_hf_to_gguf.py --mmproj --outtype f32``.
``st_bert/``      a sentence-transformers folder: BertModel at the root, ``modules.json`` (Transformer, Pooling,
                  Normalize), ``1_Pooling/config.json`` (mean tokens), ``sentence_bert_config.json``; ONNX
                  (dynamo, opset 18, inputs ``input_ids`` + ``attention_mask``, dynamic batch and sequence):
                  ``st-bert-tokens.onnx``      the transformer only (Pooling and Normalize dropped);
                  ``st-bert-pooled.onnx``      + masked mean pooling (Normalize dropped);
                  ``st-bert-normalized.onnx``  + mean pooling + L2 normalization (the whole pipeline);
                  ``st-bert-cls.onnx``         CLS pooling + L2 normalization (the wrong pooling).
``st_qwen2/``     a sentence-transformers folder around Qwen2Model (last-token pooling, Normalize) with a
                  128-piece sentencepiece tokenizer; ``st-qwen2-f32.gguf`` by ``convert_hf_to_gguf.py`` (it
                  reads ``modules.json`` / ``1_Pooling`` into ``qwen2.pooling_type``).

``MANIFEST.json`` records every file (tool, flags, size, sha256).  llama.cpp's converter comes from the
llama-cpp-python sdist (``--lcp-src``), run with its own gguf-py first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DEFAULT_LCP = Path("/work/lcp-src/llama_cpp_python-0.3.36/vendor/llama.cpp")
FAMILIES = ("vit", "gemma3_vlm", "qwen2_vl", "st_bert", "st_qwen2")

# transformers' constants (image_utils): IMAGENET_STANDARD_MEAN/STD are what ViT/Gemma3/SigLIP processors default to
IMAGENET_STANDARD = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
IMAGENET_DEFAULT = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # DeiT / timm ViTs, ResNet, ConvNeXt
OPENAI_CLIP = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])  # Qwen2VLImageProcessor
RESCALE = 1 / 255


def _wide():
    """testmodels/wide/generate.py (train_spm, randomise_norms), imported by path."""
    spec = importlib.util.spec_from_file_location("wide_generate", HERE.parent / "wide" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _record(root: Path, path: Path, **kw) -> dict:
    return {"path": str(path.relative_to(root)), "size": path.stat().st_size, "sha256": _sha(path), **kw}


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _export(module: torch.nn.Module, args: tuple, names: list[str], out: Path, *, dynamo: bool = True,
            opset: int = 18, dynamic: dict | None = None) -> None:
    module.eval()
    with _quiet(), torch.no_grad():
        if dynamo:
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=names,
                                     output_names=["output"], optimize=True, dynamic_shapes=dynamic)
            prog.save(str(out))
        else:
            torch.onnx.export(module, args, str(out), dynamo=False, opset_version=opset, input_names=names,
                              output_names=["output"], do_constant_folding=True)
    extra = out.parent / (out.name + ".data")
    if extra.exists():
        raise RuntimeError(f"{out.name}: the exporter wrote external data")


def _convert(lcp: Path, hf: Path, out: Path, *extra: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(lcp / "gguf-py"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    cmd = [sys.executable, str(lcp / "convert_hf_to_gguf.py"), str(hf), "--outfile", str(out), "--outtype", "f32",
           *extra]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0 or not out.is_file():
        raise RuntimeError(f"convert_hf_to_gguf failed: {(p.stderr + p.stdout)[-2000:]}")
    return " ".join(["convert_hf_to_gguf.py", hf.name, "--outfile", out.name, "--outtype", "f32", *extra])


def _preprocessor(path: Path, processor: str, size: int, mean: list[float], std: list[float], **extra) -> None:
    doc = {"image_processor_type": processor, "do_resize": True, "size": {"height": size, "width": size},
           "resample": 2, "do_rescale": True, "rescale_factor": RESCALE, "do_normalize": True,
           "image_mean": mean, "image_std": std, **extra}
    path.write_text(json.dumps(doc, indent=2) + "\n")


# -- vit ---------------------------------------------------------------------------------------------------

class _Logits(torch.nn.Module):
    def __init__(self, m: torch.nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.m(pixel_values=pixel_values).logits


class _Normalized(torch.nn.Module):
    """What an export "with the preprocessing in the graph" does: raw 0..255 pixels in."""

    def __init__(self, m: torch.nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.m = m
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels / 255.0 - self.mean) / self.std
        return self.m(pixel_values=x).logits


def fold_into_conv(conv: torch.nn.Conv2d, scale: float, mean: list[float], std: list[float]) -> None:
    """conv((scale * p - mean) / std) == conv'(p): W' = W * scale / std (per input channel),
    b' = b - sum over (c, kh, kw) of W * mean / std."""
    m = torch.tensor(mean).reshape(1, -1, 1, 1)
    s = torch.tensor(std).reshape(1, -1, 1, 1)
    with torch.no_grad():
        w = conv.weight.detach().clone()
        conv.weight.copy_(w * scale / s)
        conv.bias.copy_(conv.bias - (w * m / s).sum(dim=(1, 2, 3)))


def gen_vit(root: Path, wide, lcp: Path) -> list[dict]:
    from transformers import ViTConfig, ViTForImageClassification

    out = root / "vit"
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                    patch_size=8, num_labels=4, layer_norm_eps=2e-6)
    cfg.architectures = ["ViTForImageClassification"]
    model = ViTForImageClassification(cfg).eval()
    wide.randomise_norms(model, 1.0, torch.Generator().manual_seed(1))
    with _quiet():
        model.save_pretrained(hf)
    (hf / "generation_config.json").unlink(missing_ok=True)
    mean, std = IMAGENET_DEFAULT  # distinct per channel and mean != std: a swap is visible
    _preprocessor(hf / "preprocessor_config.json", "ViTImageProcessor", 32, mean, std)

    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (1, 3, 32, 32), generator=g).float()
    pixel_values = (pixels * RESCALE - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1)
    np.savez(out / "input.npz", pixels=pixels.numpy(), pixel_values=pixel_values.numpy())
    files = [_record(root, hf / "config.json"), _record(root, hf / "model.safetensors"),
             _record(root, hf / "preprocessor_config.json",
                     tool="written in ViTImageProcessor's format with ImageNet's mean/std (as DeiT/timm ViTs)")]

    _export(_Logits(model), (pixel_values,), ["pixel_values"], out / "vit-plain.onnx")
    files.append(_record(root, out / "vit-plain.onnx", preprocess="outside (pixel_values in)",
                         tool=f"torch.onnx.export dynamo opset 18 (torch {torch.__version__})"))
    _export(_Normalized(model, mean, std), (pixels,), ["pixels"], out / "vit-norm.onnx")
    files.append(_record(root, out / "vit-norm.onnx", tool="torch.onnx.export dynamo opset 18",
                         preprocess="in the graph: (pixels / 255 - mean) / std"))
    _export(_Normalized(model, mean, std), (pixels,), ["pixels"], out / "vit-norm-legacy.onnx", dynamo=False, opset=17)
    files.append(_record(root, out / "vit-norm-legacy.onnx", tool="torch.onnx.export dynamo=False opset 17",
                         preprocess="in the graph: (pixels / 255 - mean) / std"))
    folded = copy.deepcopy(model)
    fold_into_conv(folded.vit.embeddings.patch_embeddings.projection, RESCALE, mean, std)
    with torch.no_grad():
        assert torch.allclose(_Logits(folded)(pixels), _Logits(model)(pixel_values), atol=1e-4)
    _export(_Logits(folded), (pixels,), ["pixels"], out / "vit-folded.onnx")
    files.append(_record(root, out / "vit-folded.onnx", tool="torch.onnx.export dynamo opset 18",
                         preprocess="folded into vit.embeddings.patch_embeddings.projection"))
    return files


# -- gemma3 vlm ----------------------------------------------------------------------------------------------

def gen_gemma3_vlm(root: Path, wide, lcp: Path) -> list[dict]:
    from safetensors.torch import load_file, save_file
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    out = root / "gemma3_vlm"
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = Gemma3Config(
        text_config=dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=2e-6,
                         sliding_window=16, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, layer_norm_eps=3e-6, vision_use_head=False),
        mm_tokens_per_image=4, image_token_index=299, boi_token_index=297, eoi_token_index=298)
    cfg.architectures = ["Gemma3ForConditionalGeneration"]
    model = Gemma3ForConditionalGeneration(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # Gemma3RMSNorm computes x * (1 + w): centre 0; SigLIP's LayerNorms: centre 1
        for name, mod in model.named_modules():
            if wide._is_norm(mod):
                centre = 0.0 if type(mod).__name__ == "Gemma3RMSNorm" else 1.0
                mod.weight.copy_(centre + 0.1 * torch.randn(mod.weight.shape, generator=gen))
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen))
    with _quiet():
        model.save_pretrained(hf)
    (hf / "generation_config.json").unlink(missing_ok=True)
    # the hub layout llama.cpp's converter maps (transformers 5 loads it to the same weights)
    sd = load_file(str(hf / "model.safetensors"))
    hub = {("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v
           for k, v in sd.items()}
    save_file(hub, str(hf / "model.safetensors"), metadata={"format": "pt"})
    with _quiet():
        again = Gemma3ForConditionalGeneration.from_pretrained(str(hf)).state_dict()
    mine = model.state_dict()
    assert all(torch.equal(mine[k], again[k]) for k in mine), "hub layout does not load to the same weights"
    mean, std = IMAGENET_STANDARD
    _preprocessor(hf / "preprocessor_config.json", "Gemma3ImageProcessor", 32, mean, std, image_seq_length=4,
                  processor_class="Gemma3Processor")
    wide.write_spm_tokenizer(hf, "gemma2", "bpe")  # the text conversion needs one (the mmproj does not)
    files = [_record(root, hf / "config.json"), _record(root, hf / "model.safetensors"),
             _record(root, hf / "preprocessor_config.json", tool="written from Gemma3ImageProcessor's defaults"),
             _record(root, hf / "tokenizer.model", tool="sentencepiece, 128 pieces (testmodels/wide train_spm)")]
    target = out / "gemma3-mmproj-f32.gguf"
    cmd = _convert(lcp, hf, target, "--mmproj")
    files.append(_record(root, target, tool=f"llama.cpp {cmd}"))
    text = out / "gemma3-text-f32.gguf"
    cmd = _convert(lcp, hf, text)
    files.append(_record(root, text, tool=f"llama.cpp {cmd}"))
    return files


def gen_qwen2_vl(root: Path, wide, lcp: Path) -> list[dict]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    out = root / "qwen2_vl"
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=64,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}),
        # depth 3: the converter maps visual.merger.mlp.{bid} only for bid < block_count (mlp.2 needs 3 blocks)
        vision_config=dict(depth=3, embed_dim=32, hidden_size=32, num_heads=4, patch_size=8, spatial_merge_size=2,
                           temporal_patch_size=2, mlp_ratio=2),
        image_token_id=299, video_token_id=298, vision_start_token_id=296, vision_end_token_id=297,
        bos_token_id=None, eos_token_id=None)
    cfg.architectures = ["Qwen2VLForConditionalGeneration"]
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    wide.randomise_norms(model, 1.0, torch.Generator().manual_seed(1))
    with _quiet():
        model.save_pretrained(hf)
    (hf / "generation_config.json").unlink(missing_ok=True)
    mean, std = OPENAI_CLIP
    _preprocessor(hf / "preprocessor_config.json", "Qwen2VLImageProcessor", 32, mean, std, patch_size=8,
                  temporal_patch_size=2, merge_size=2, min_pixels=1024, max_pixels=4096)
    files = [_record(root, hf / "config.json"), _record(root, hf / "model.safetensors"),
             _record(root, hf / "preprocessor_config.json", tool="written from Qwen2VLImageProcessor's defaults")]
    target = out / "qwen2vl-mmproj-f32.gguf"
    cmd = _convert(lcp, hf, target, "--mmproj")
    files.append(_record(root, target, tool=f"llama.cpp {cmd}"))
    return files


# -- sentence-transformers ------------------------------------------------------------------------------------

def _st_layout(hf: Path, dim: int, pooling: str, max_len: int) -> None:
    """modules.json, 1_Pooling/config.json, sentence_bert_config.json, config_sentence_transformers.json as
    sentence-transformers writes them (Normalize saves no files of its own)."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (hf / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (hf / "1_Pooling").mkdir(exist_ok=True)
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
    pool = {"word_embedding_dimension": dim, **{f"pooling_mode_{m}": m == pooling for m in modes},
            "include_prompt": True}
    (hf / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2) + "\n")
    (hf / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len, "do_lower_case": False},
                                                             indent=2) + "\n")
    (hf / "config_sentence_transformers.json").write_text(json.dumps(
        {"__version__": {"sentence_transformers": "5.1.0"}, "prompts": {}, "default_prompt_name": None,
         "similarity_fn_name": "cosine"}, indent=2) + "\n")


class _Encoder(torch.nn.Module):
    """The sentence-transformers pipeline, cut where exports cut it."""

    def __init__(self, m: torch.nn.Module, pooling: str | None, normalize: bool) -> None:
        super().__init__()
        self.m, self.pooling, self.normalize = m, pooling, normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling is None:
            return h
        if self.pooling == "mean":  # sentence_transformers.models.Pooling, mean_tokens
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            out = (h * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
        else:  # cls
            out = h[:, 0]
        return torch.nn.functional.normalize(out, p=2, dim=1) if self.normalize else out


def gen_st_bert(root: Path, wide, lcp: Path) -> list[dict]:
    from torch.export import Dim
    from transformers import BertConfig, BertModel

    out = root / "st_bert"
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, layer_norm_eps=1e-12)
    cfg.architectures = ["BertModel"]
    model = BertModel(cfg, add_pooling_layer=False).eval()
    wide.randomise_norms(model, 1.0, torch.Generator().manual_seed(1))
    with _quiet():
        model.save_pretrained(hf)
    (hf / "generation_config.json").unlink(missing_ok=True)
    _st_layout(hf, 32, "mean_tokens", 64)
    files = [_record(root, hf / n) for n in ("config.json", "model.safetensors", "modules.json",
                                             "1_Pooling/config.json", "sentence_bert_config.json")]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 128, (2, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    batch, seq = Dim("batch", min=1, max=64), Dim("seq", min=2, max=64)
    dyn = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    for name, pooling, normalize in (("tokens", None, False), ("pooled", "mean", False),
                                     ("normalized", "mean", True), ("cls", "cls", True)):
        target = out / f"st-bert-{name}.onnx"
        _export(_Encoder(model, pooling, normalize), (ids, mask), ["input_ids", "attention_mask"], target,
                dynamic=dyn)
        files.append(_record(root, target, tool="torch.onnx.export dynamo opset 18",
                             pipeline=f"transformer{' + ' + pooling + ' pooling' if pooling else ''}"
                                      f"{' + L2 normalize' if normalize else ''}"))
    np.savez(out / "input.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    return files


def gen_st_qwen2(root: Path, wide, lcp: Path) -> list[dict]:
    from transformers import Qwen2Config, Qwen2Model

    out = root / "st_qwen2"
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=4e-6, max_position_embeddings=64,
                      tie_word_embeddings=False)
    cfg.architectures = ["Qwen2Model"]
    model = Qwen2Model(cfg).eval()
    wide.randomise_norms(model, 1.0, torch.Generator().manual_seed(1))
    with _quiet():
        model.save_pretrained(hf)
    (hf / "generation_config.json").unlink(missing_ok=True)
    wide.write_spm_tokenizer(hf, "qwen2", "bpe")
    _st_layout(hf, 32, "lasttoken", 64)
    files = [_record(root, hf / n) for n in ("config.json", "model.safetensors", "modules.json",
                                             "1_Pooling/config.json", "tokenizer.model", "tokenizer_config.json")]
    target = out / "st-qwen2-f32.gguf"
    cmd = _convert(lcp, hf, target)
    files.append(_record(root, target, tool=f"llama.cpp {cmd}"))
    return files


GENERATORS = {"vit": gen_vit, "gemma3_vlm": gen_gemma3_vlm, "qwen2_vl": gen_qwen2_vl, "st_bert": gen_st_bert,
              "st_qwen2": gen_st_qwen2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--lcp", type=Path, default=DEFAULT_LCP, help="llama.cpp source tree (vendor/llama.cpp)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    wide = _wide()
    manifest_path = root / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    import transformers

    manifest["generator"] = {"script": "testmodels/around/generate.py", "torch": torch.__version__,
                             "transformers": transformers.__version__, "python": sys.version.split()[0],
                             "llama_cpp": str(args.lcp)}
    manifest.setdefault("families", {})
    for name in [n.strip() for n in args.families.split(",") if n.strip()]:
        print(f"== {name}", flush=True)
        manifest["families"][name] = {"files": GENERATORS[name](root, wide, args.lcp)}
        manifest["families"] = dict(sorted(manifest["families"].items()))
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
