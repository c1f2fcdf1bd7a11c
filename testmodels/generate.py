"""Deterministic generator for normaudit's small test models.

    python testmodels/generate.py            # (re)writes testmodels/{llama,qwen3,gemma3,bert,cnn,zoo}/...
    python testmodels/generate.py zoo        # only the ONNX norm / fold zoo

Needs the ``test`` extra (transformers, onnxscript).  Every model is tiny and seeded; norm weights are
randomised (1 +- 0.1, Gemma's zero-centred 0 +- 0.1) so a dropped or shifted norm is visible.  For each
model it writes: a HF directory (config.json + model.safetensors), a state_dict (.pt), a torch.export
program (.pt2), ONNX exports (dynamo opset 18 with decomposed RMSNorm, dynamo opset 23 with fused
RMSNormalization; legacy TorchScript exporter for BERT and the CNN) and, for the language models,
GGUF files written with gguf-py using llama.cpp's tensor names, metadata keys and converter transforms
(llama Q/K row permutation, Gemma's stored ``1 + w``) at F32, F16, Q8_0 and Q4_0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SEQ = 8
VOCAB = 64


class Logits(torch.nn.Module):
    """Wrap a HF causal LM / encoder so exports take ``ids`` and return one tensor."""

    def __init__(self, m: torch.nn.Module, field: str) -> None:
        super().__init__()
        self.m = m
        self.field = field

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return getattr(self.m(input_ids=ids, use_cache=False) if self.field == "logits" else self.m(input_ids=ids),
                       self.field)


class CNN(torch.nn.Module):
    """conv1 -> bn1 (eps 1e-5) -> relu -> conv2 (no bias) -> bn2 (eps 1e-3) -> relu -> GroupNorm(4, 16) -> mean -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8, eps=1e-5)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(16, eps=1e-3)
        self.gn = torch.nn.GroupNorm(4, 16, eps=1e-5)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(self.gn(x).mean(dim=(2, 3)))


class ChannelsFirstLayerNorm(torch.nn.Module):
    """ConvNeXt's LayerNorm for data_format="channels_first": statistics over axis 1 of (N, C, H, W) only."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class T5LayerNorm(torch.nn.Module):
    """T5's RMSNorm (transformers' T5LayerNorm): statistics in float32, ``weight * x``."""

    def __init__(self, hidden: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states


class T5Norms(torch.nn.Module):
    """norm -> linear -> final_norm, both T5LayerNorm (eps 1e-6)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = T5LayerNorm(16)
        self.proj = torch.nn.Linear(16, 16)
        self.final_norm = T5LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(self.proj(self.norm(x)))


class ResBlock(torch.nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(c, eps=1e-5)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(c, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResNet(torch.nn.Module):
    """stem conv -> bn (eps 1e-3) -> relu -> residual block -> mean -> fc: every norm a BatchNorm after a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8, eps=1e-3)
        self.block = ResBlock(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(torch.relu(self.bn(self.conv(x)))).mean(dim=(2, 3)))


class NormZoo(torch.nn.Module):
    """A ResNet stem and block, a depthwise conv + BN, a ConvNeXt channels-first LayerNorm, GroupNorm(C, C), a
    grouped ConvTranspose + BN and a Linear + BatchNorm1d: every fold target and the norms in disguise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8, eps=1e-3)
        self.block = ResBlock(8)
        self.dwconv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dwbn = torch.nn.BatchNorm2d(8, eps=1e-5)
        self.cnln = ChannelsFirstLayerNorm(8, eps=1e-6)
        self.gn = torch.nn.GroupNorm(8, 8, eps=1e-4)
        self.up = torch.nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2)
        self.upbn = torch.nn.BatchNorm2d(6, eps=1e-5)
        self.fc = torch.nn.Linear(6, 5)
        self.fcbn = torch.nn.BatchNorm1d(5, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(torch.relu(self.bn(self.conv(x))))
        x = self.gn(self.cnln(self.dwbn(self.dwconv(x))))
        x = torch.relu(self.upbn(self.up(x)))
        return self.fcbn(self.fc(x.mean(dim=(2, 3))))


def _randomise_all_norms(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every norm module's weight 1 +- 0.1, bias 0 +- 0.1; BatchNorm statistics random (var in 0.5..1.5)."""
    with torch.no_grad():
        for m in model.modules():
            w, b = getattr(m, "weight", None), getattr(m, "bias", None)
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, ChannelsFirstLayerNorm,
                              T5LayerNorm)):
                w.copy_(1.0 + 0.1 * torch.randn(w.shape, generator=gen))
                if b is not None:
                    b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))


def generate_zoo(root: Path) -> None:
    """testmodels/zoo: small torch modules exported by torch's ONNX exporters (dynamo, legacy) and torch.export:
    the norms the ONNX patterns must recognise (ConvNeXt channels-first LayerNorm, GroupNorm(C, C), T5's RMSNorm
    through the legacy exporter) and every BatchNorm fold target (conv, depthwise conv, grouped ConvTranspose,
    Gemm); resnet's ONNX exports have no norm op left at all."""
    folder = root / "zoo"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    inputs: dict[str, np.ndarray] = {}
    for i, (name, cls, shape, exports) in enumerate((
            ("zoo", NormZoo, (2, 3, 8, 8), (("dynamo", 18), ("legacy", 17))),
            ("resnet", ResNet, (2, 3, 8, 8), (("dynamo", 18), ("legacy", 13))),
            ("t5norm", T5Norms, (2, 4, 16), (("dynamo", 18), ("legacy", 17))))):
        torch.manual_seed(10 + i)
        model = cls().eval()
        _randomise_all_norms(model, torch.Generator().manual_seed(20 + i))
        example = torch.randn(*shape, generator=torch.Generator().manual_seed(30 + i))
        inputs[name] = example.numpy()
        torch.export.save(torch.export.export(model, (example,)), str(folder / f"{name}.pt2"))
        for exporter, opset in exports:
            export_onnx(model, example, folder / f"{name}-{exporter}-opset{opset}.onnx", opset, exporter == "dynamo")
    np.savez(folder / "input.npz", **inputs)
    print(f"wrote {folder}: {sorted(p.name for p in folder.iterdir())}")


def _randomise_norms(model: torch.nn.Module, centre: float, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)
            if len(leaf) == 2 and ("norm" in leaf[0].lower() or leaf[0].rsplit(".", 1)[-1] in ("bn1", "bn2", "gn")):
                if leaf[1] == "weight":
                    p.copy_(centre + 0.1 * torch.randn(p.shape, generator=gen))
                elif leaf[1] == "bias":
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def build(name: str) -> tuple[torch.nn.Module, dict]:
    import transformers

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed({"llama": 1, "qwen3": 2, "gemma3": 3, "bert": 4, "cnn": 5}[name])
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=64)
    if name == "llama":
        cfg = transformers.LlamaConfig(**common, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=False)
        model = transformers.LlamaForCausalLM(cfg)
    elif name == "qwen3":
        cfg = transformers.Qwen3Config(**common, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                                       tie_word_embeddings=False)
        model = transformers.Qwen3ForCausalLM(cfg)
    elif name == "gemma3":
        cfg = transformers.Gemma3TextConfig(**common, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                                            query_pre_attn_scalar=8, sliding_window=32,
                                            layer_types=["sliding_attention", "full_attention"])
        cfg.architectures = ["Gemma3ForCausalLM"]
        model = transformers.Gemma3ForCausalLM(cfg)
    elif name == "bert":
        cfg = transformers.BertConfig(**common, layer_norm_eps=1e-12, type_vocab_size=2)
        model = transformers.BertModel(cfg, add_pooling_layer=False)
    elif name == "cnn":
        model = CNN()
        with torch.no_grad():
            for bn in (model.bn1, model.bn2):
                bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=gen))
                bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
        _randomise_norms(model, 1.0, gen)
        return model.eval(), {}
    else:
        raise ValueError(name)
    _randomise_norms(model, 0.0 if name == "gemma3" else 1.0, gen)
    return model.eval(), cfg.to_dict()


def example_input(name: str) -> torch.Tensor:
    if name == "cnn":
        return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return torch.randint(3, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(0))


# -- GGUF ---------------------------------------------------------------------------------------

GGUF_ARCH = {"llama": "llama", "qwen3": "qwen3", "gemma3": "gemma3", "bert": "bert"}


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter reorders Q/K rows from HF's rotate-half layout to interleaved RoPE."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(name: str, model: torch.nn.Module, cfg: dict, out: Path, qtype_name: str) -> None:
    import gguf

    arch = GGUF_ARCH[name]
    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    n_layers = cfg["num_hidden_layers"]
    tmap = gguf.get_tensor_name_map(arch_enum, n_layers)
    qtype = gguf.GGMLQuantizationType[qtype_name]
    w = gguf.GGUFWriter(str(out), arch)
    w.add_name(f"normaudit-test-{name}")
    w.add_block_count(n_layers)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    if name == "bert":
        w.add_layer_norm_eps(cfg["layer_norm_eps"])
        w.add_causal_attention(False)
    else:
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_freq_base(float((cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    w.add_vocab_size(VOCAB)
    w.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7, "Q4_0": 2}[qtype_name])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith(("rotary_emb.inv_freq", "position_ids", "embed_scale")):
            continue
        data = tensor.detach().to(torch.float32).numpy().copy()
        gname = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            continue
        if name == "llama" and hf_name.endswith("q_proj.weight"):
            data = _permute_qk(data, cfg["num_attention_heads"])
        if name == "llama" and hf_name.endswith("k_proj.weight"):
            data = _permute_qk(data, cfg["num_key_value_heads"])
        if name == "gemma3" and hf_name.endswith("norm.weight"):
            data = data + 1.0  # llama.cpp's Gemma converter stores 1 + w
        if data.ndim <= 1 or qtype_name == "F32":
            w.add_tensor(gname, data.astype(np.float32))  # norms and biases stay F32, as llama.cpp does
        elif qtype_name == "F16":
            w.add_tensor(gname, data.astype(np.float16))
        else:
            q = gguf.quants.quantize(data, qtype)
            w.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# -- ONNX ---------------------------------------------------------------------------------------

def export_onnx(model: torch.nn.Module, example: torch.Tensor, out: Path, opset: int, dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = ["x"] if example.dtype.is_floating_point else ["ids"]
        if dynamo:
            prog = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, input_names=names,
                                     optimize=True, verbose=False)
            prog.save(str(out))
        else:
            torch.onnx.export(model, (example,), str(out), dynamo=False, opset_version=opset, input_names=names,
                              do_constant_folding=True)


def generate(names: list[str], root: Path) -> None:
    for name in names:
        if name == "zoo":
            generate_zoo(root)
            continue
        model, cfg = build(name)
        folder = root / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        example = example_input(name)
        field = "logits" if name in ("llama", "qwen3", "gemma3") else "last_hidden_state"
        wrapped = model if name == "cnn" else Logits(model, field).eval()
        torch.save(model.state_dict(), folder / f"{name}.pt")
        if name != "cnn":
            model.save_pretrained(folder / "hf", safe_serialization=True)
            for extra in ("generation_config.json",):
                (folder / "hf" / extra).unlink(missing_ok=True)
        ep = torch.export.export(wrapped, (example,))
        torch.export.save(ep, str(folder / f"{name}.pt2"))
        export_onnx(wrapped, example, folder / f"{name}-dynamo-opset18.onnx", 18, True)
        if name == "cnn":
            torch.jit.script(model).save(str(folder / f"{name}-torchscript.pt"))
            export_onnx(wrapped, example, folder / f"{name}-dynamo-opset21.onnx", 21, True)
            export_onnx(wrapped, example, folder / f"{name}-legacy-opset13.onnx", 13, False)
        elif name == "bert":
            export_onnx(wrapped, example, folder / f"{name}-legacy-opset14.onnx", 14, False)
        else:
            export_onnx(wrapped, example, folder / f"{name}-dynamo-opset23.onnx", 23, True)
        if name in GGUF_ARCH:
            for q in ("F32", "F16", "Q8_0", "Q4_0"):
                write_gguf(name, model, cfg, folder / f"{name}-{q.lower()}.gguf", q)
        np.savez(folder / "input.npz", **{("x" if name == "cnn" else "ids"): example.numpy()})
        print(f"wrote {folder}: {sorted(p.name for p in folder.iterdir())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["llama", "qwen3", "gemma3", "bert", "cnn", "zoo"])
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    generate(args.models, args.out)
    (args.out / "MANIFEST.json").write_text(json.dumps(
        {p.parent.name + "/" + p.name: p.stat().st_size for p in sorted(args.out.glob("*/*")) if p.is_file()},
        indent=1))


if __name__ == "__main__":
    main()
