"""What a model expects around it, beside its norm layers: how its image input is normalized (the preprocessing
contract) and how its embedding output is pooled and normalized (the embedding contract).

Each format keeps them somewhere else (an HF folder's ``preprocessor_config.json`` and sentence-transformers
``modules.json``, an mmproj GGUF's ``clip.vision.*`` keys, a GGUF's ``{arch}.pooling_type``, ONNX nodes on the
graph's input and output); every reader fills the same records, each value with where it was read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Where:
    """Where a model's image normalization happens."""

    OUTSIDE = "outside"  # applied by the caller / runtime (HF image processor, llama.cpp's mtmd), values in the file
    GRAPH = "graph"  # nodes on the graph's image input (ONNX Sub/Div, Mul/Add)
    FOLDED = "folded"  # folded into the first conv's weights (recovered by comparing with the source's conv)
    UNKNOWN = "unknown"  # the input feeds the model directly: outside the graph or folded, not told by this file


@dataclass
class Preprocess:
    """How raw pixels ``p`` (0..255) become the model's input: ``(rescale * p - mean[c]) / std[c]``.

    ``rescale`` is None when the file does not say (an ONNX graph with no scalar scale on its input: the caller
    rescales, or the constants are in pixel units); ``mean``/``std`` are None when nothing normalizes in the file
    (``do_normalize: false``, or a graph whose input goes straight into the model)."""

    where: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    rescale: float | None = None
    do_rescale: bool | None = None
    do_normalize: bool | None = None
    sources: dict[str, str] = field(default_factory=dict)  # mean / std / rescale -> where it was read
    input: str = ""  # the image input (graph formats)
    conv: str = ""  # graph formats: the first conv the image input reaches (folds are recovered against it)
    nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def known(self) -> bool:
        """The file states the normalization (values, or that there is none)."""
        return self.where in (Where.OUTSIDE, Where.GRAPH, Where.FOLDED)

    def canonical(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) per channel in units of ``pixels / 255`` (the form preprocessor_config.json and llama.cpp
        use), whatever rescale the file applies; (0, 1) for "no normalization"; None when unknown."""
        from .kernels import canonical_mean_std

        if not self.known:
            return None
        return canonical_mean_std(self.mean, self.std, self.rescale, self.do_normalize)

    def to_dict(self) -> dict[str, Any]:
        canon = self.canonical()
        return {
            "where": self.where,
            "mean": None if self.mean is None else [float(v) for v in self.mean],
            "std": None if self.std is None else [float(v) for v in self.std],
            "rescale": self.rescale,
            "do_rescale": self.do_rescale,
            "do_normalize": self.do_normalize,
            "canonical": None if canon is None else {"mean": [float(v) for v in canon[0]],
                                                     "std": [float(v) for v in canon[1]]},
            "sources": dict(self.sources),
            "input": self.input,
            "conv": self.conv,
            "nodes": list(self.nodes),
            "notes": list(self.notes),
        }


#: pooling names used on every side (sentence-transformers modes, GGUF PoolingType, ONNX patterns)
POOLING = ("mean", "cls", "last", "max", "mean_sqrt_len", "weightedmean", "rank", "none")


@dataclass
class Embedding:
    """How an embedding model's token states become its output vector.

    ``pooling``: one of :data:`POOLING` (``none``: the output is per token, pooling is left to the caller), or
    None when the file does not say.  ``normalize``: True / False when the file says (a Normalize module, an
    L2 normalization in the graph or not), None when it leaves it to the runtime (GGUF: see ``runtime``)."""

    where: str  # sentence_transformers | gguf | graph
    pooling: str | None
    normalize: bool | None
    sources: dict[str, str] = field(default_factory=dict)  # pooling / normalize -> where it was read
    dim: int | None = None
    output: str = ""  # graph formats: the output tensor
    runtime: list[str] = field(default_factory=list)  # what runtimes do with it (GGUF: llama.cpp, llama-cpp-python)
    nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "pooling": self.pooling, "normalize": self.normalize,
                "sources": dict(self.sources), "dim": self.dim, "output": self.output,
                "runtime": list(self.runtime), "nodes": list(self.nodes), "notes": list(self.notes)}
