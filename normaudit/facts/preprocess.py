"""Image preprocessing facts: the mean/std sets models are trained with, where each ecosystem keeps them, and
what runtimes do with them.  Every row says where it comes from."""

from __future__ import annotations

from typing import NamedTuple


class MeanStd(NamedTuple):
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    where: str  # who uses it


#: well-known normalization sets (transformers ``image_utils`` constants), to name what a file holds
KNOWN_SETS: tuple[MeanStd, ...] = (
    MeanStd("ImageNet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
            "transformers IMAGENET_DEFAULT_MEAN/STD (ResNet, ConvNeXt, DeiT, timm models)"),
    MeanStd("OpenAI CLIP", (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711),
            "transformers OPENAI_CLIP_MEAN/STD (CLIP, LLaVA, Qwen2-VL, Pixtral)"),
    MeanStd("0.5/0.5", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
            "transformers IMAGENET_STANDARD_MEAN/STD (ViT, SigLIP, Gemma3, Idefics3/SmolVLM, Qwen3-VL)"),
)

#: HF ``preprocessor_config.json`` / ``processor_config.json`` (its ``image_processor`` object): the keys read
HF_FILES: tuple[str, ...] = ("preprocessor_config.json", "processor_config.json")
HF_DEFAULT_RESCALE = 1 / 255  # BaseImageProcessor.rescale_factor default

#: llama.cpp's multimodal runtime (tools/mtmd): ``(p / 255 - mean[c]) / std[c]`` for c in 0..2 (mtmd-image.cpp),
#: ``clip.vision.image_mean`` / ``image_std`` must hold at least 3 values (clip.cpp refuses fewer)
LLAMA_CPP_RESCALE = 1 / 255
LLAMA_CPP_RESCALE_SOURCE = "llama.cpp mtmd: pixels / 255 before mean/std (tools/mtmd/mtmd-image.cpp)"

#: relative difference of a mean/std value two files may have (float32 storage of the same decimal)
VALUE_RTOL = 1e-4

#: graph input names that mark an image input when the shape alone does not (N, C, H, W with C in 1/3/4)
IMAGE_CHANNELS: frozenset[int] = frozenset({1, 3, 4})

#: a scalar Mul/Div on an image input before its mean subtraction is a rescale of raw pixels when its factor is
#: below this (1/255, 1/127.5); larger factors are part of the normalization itself (x * 2 - 1)
MAX_RESCALE = 0.1
