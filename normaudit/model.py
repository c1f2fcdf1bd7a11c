"""The one norm record shared by every format.

Every loader (PyTorch, ONNX, GGUF) produces a :class:`NormModel` holding
:class:`NormLayer` records.  Tensors are :class:`TensorRef` objects that read
their values only when asked, so listing the norms of a model never reads the
other weights.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .errors import CorruptFile

if TYPE_CHECKING:
    from .contracts import Embedding, Preprocess


class NormKind(str, enum.Enum):
    LAYER_NORM = "layer_norm"
    RMS_NORM = "rms_norm"
    BATCH_NORM = "batch_norm"
    GROUP_NORM = "group_norm"
    INSTANCE_NORM = "instance_norm"


class EpsSource(str, enum.Enum):
    """Where a layer's epsilon was read from."""

    ONNX_ATTRIBUTE = "onnx_attribute"  # epsilon attribute of a fused ONNX op
    ONNX_DEFAULT = "onnx_default"  # fused op without the attribute: the op's spec default
    ONNX_CONSTANT = "onnx_constant"  # Add(eps) constant inside a decomposed pattern
    GGUF_METADATA = "gguf_metadata"  # {arch}.attention.layer_norm_*epsilon
    HF_CONFIG = "hf_config"  # config.json key
    EXPORT_GRAPH = "export_graph"  # argument of an aten op in a torch.export / TorchScript graph
    MODULE_ATTRIBUTE = "module_attribute"  # nn.Module attribute (eps / variance_epsilon)
    RUNTIME_DEFAULT = "runtime_default"  # no key in the file: the value the runtime uses (llama.cpp mtmd: 1e-6)
    UNKNOWN = "unknown"


class Convention(str, enum.Enum):
    """How the stored weight enters the normalised output."""

    SCALE = "w"  # y = x_hat * w (+ b)
    ONE_PLUS = "1+w"  # y = x_hat * (1 + w)   (Gemma, Nemotron's LayerNorm1P, Qwen3-Next)


class Role(str, enum.Enum):
    """What a norm layer is for, where the model tells (the same value in every format)."""

    NONE = ""
    QK_NORM = "qk_norm"  # a query/key norm inside attention (Qwen3, Gemma3, OLMo2, Cohere, ...)


@dataclass
class TensorRef:
    """A named tensor whose values are read only on :meth:`load`."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # stored dtype, e.g. F32, F16, BF16, Q8_0, Q4_K
    loader: Callable[[], np.ndarray] = field(repr=False, compare=False)
    _value: np.ndarray | None = field(default=None, repr=False, compare=False)
    source: str = field(default="", compare=False)  # the file it comes from (for error lines)
    fills: bool = field(default=False, repr=False, compare=False)  # loader(out=buffer) can fill a float32 buffer

    def load(self) -> np.ndarray:
        """Values as float32 (dequantized if stored quantized), cached."""
        if self._value is None:
            where = f"{self.source}: tensor {self.name}" if self.source else f"tensor {self.name}"
            n = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
            if n == 0:
                raise CorruptFile(f"{where} has no elements (shape {list(self.shape)})")
            value = np.asarray(self.loader(), dtype=np.float32)
            if value.size != n:
                raise CorruptFile(f"{where} holds {value.size} values, its shape {list(self.shape)} needs {n}")
            self._value = value.reshape(self.shape)
        return self._value

    def read(self, out: np.ndarray | None = None) -> np.ndarray:
        """Values as float32 without keeping them (streamed use: one block of a large model at a time).  ``out``:
        a float32 buffer of this shape to fill (returned when it was used; loaders that cannot fill one return a
        new array)."""
        if self._value is not None:
            return self._value
        if out is not None and self.fills:
            value = self.loader(out=out)
            if value is out:
                return out
        else:
            value = self.loader()
        value = np.asarray(value, dtype=np.float32)
        n = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        if value.size != n:
            raise CorruptFile(f"{self.source}: tensor {self.name} holds {value.size} values, its shape needs {n}")
        return value.reshape(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def const_tensor(name: str, value: np.ndarray, dtype: str | None = None) -> TensorRef:
    """A TensorRef over an array already in memory."""
    arr = np.asarray(value)
    return TensorRef(name, tuple(int(d) for d in arr.shape), dtype or dtype_name(arr.dtype), lambda: arr)


_NUMPY_DTYPE_NAMES = {
    "float32": "F32",
    "float16": "F16",
    "float64": "F64",
    "bfloat16": "BF16",
    "int8": "I8",
    "uint8": "U8",
    "int32": "I32",
    "int64": "I64",
}


def dtype_name(dtype: Any) -> str:
    """Short dtype name (F32, F16, BF16, ...) for a numpy or torch dtype."""
    text = str(dtype).replace("torch.", "")
    return _NUMPY_DTYPE_NAMES.get(text, text.upper())


@dataclass
class NormLayer:
    """One normalization layer, whatever format it came from."""

    id: str  # the format's own name: model.layers.1.input_layernorm, blk.1.attn_norm, ONNX scope
    kind: NormKind
    eps: float | None
    eps_source: EpsSource
    eps_detail: str = ""  # the key, node or attribute the eps was read from
    eps_dtype: str = "F32"  # dtype the eps constant is stored in (F16 can underflow)
    eps_key: str = ""  # the one config / metadata key that sets this eps for every layer, when there is one
    weight: TensorRef | None = None
    bias: TensorRef | None = None
    running_mean: TensorRef | None = None
    running_var: TensorRef | None = None
    num_groups: int | None = None
    axis: tuple[int, ...] = (-1,)  # normalized axes: one axis k means k..last (unless axes_exact); several: those
    axes_exact: bool = False  # ``axis`` lists exactly the normalized axes (a channels-first LayerNorm: axis 1 only)
    convention: Convention = Convention.SCALE
    convention_known: bool = True  # False for a bare state_dict (no config/class tells x*w from x*(1+w))
    # what of this record is a guess from tensor names (no module, no verified table): "kind", "eps"; a mismatch
    # resting on a guess is a warning, not an error
    guessed: tuple[str, ...] = ()
    role: Role = Role.NONE
    tensor_kind: str = ""  # the format's own name for the layer's kind (GGUF: attn_norm, attn_q_norm, ...)
    stored_one_plus: bool = False  # the file stores 1 + w in the weight (llama.cpp for Gemma-style norms)
    module: str = ""  # PyTorch module path this layer came from, when known (ONNX scopes, .pt2)
    producer: str = ""  # id of the conv/linear in NormModel.linear_ops that feeds this layer (BN fold checks)
    nodes: list[str] = field(default_factory=list)  # graph nodes the layer was read from
    notes: list[str] = field(default_factory=list)
    input_name: str = ""  # graph formats: the tensor / fx node the norm reads (activation capture)
    output_name: str = ""  # graph formats: the tensor / fx node holding the norm's output

    def __post_init__(self) -> None:
        if self.kind in (NormKind.BATCH_NORM, NormKind.GROUP_NORM, NormKind.INSTANCE_NORM) and self.axis == (-1,):
            self.axis = (1,)  # channel axis of (N, C, *) inputs

    @property
    def tensors(self) -> list[TensorRef]:
        return [t for t in (self.weight, self.bias, self.running_mean, self.running_var) if t is not None]

    @property
    def shape(self) -> tuple[int, ...]:
        if self.weight is not None:
            return self.weight.shape
        for t in self.tensors:
            return t.shape
        return ()

    @property
    def dtype(self) -> str:
        if self.weight is not None:
            return self.weight.dtype
        for t in self.tensors:
            return t.dtype
        return ""

    @property
    def one_plus(self) -> bool:
        return self.convention is Convention.ONE_PLUS

    def computes(self) -> NormKind:
        """The kind of computation: a GroupNorm with one group per channel is an InstanceNorm (torch exports
        GroupNorm(C, C) as InstanceNormalization; an InstanceNorm with affine is GroupNorm(C, C))."""
        if self.kind is NormKind.GROUP_NORM and self.num_groups and self.weight is not None and \
                int(np.prod(self.weight.shape)) == self.num_groups:
            return NormKind.INSTANCE_NORM
        return self.kind

    def scale(self) -> np.ndarray | None:
        """The effective multiplier applied to the normalised input (w, or 1 + w)."""
        from .kernels import effective_scale

        return None if self.weight is None else effective_scale(self.weight.load(), self.one_plus)

    def to_dict(self, stats: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "eps": self.eps,
            "eps_source": self.eps_source.value,
            "eps_detail": self.eps_detail,
            "eps_dtype": self.eps_dtype,
            "shape": list(self.shape),
            "axis": list(self.axis),
            **({"axes_exact": True} if self.axes_exact else {}),
            **({"guessed": list(self.guessed)} if self.guessed else {}),
            "dtype": self.dtype,
            "convention": self.convention.value if self.convention_known else "unknown",
            "role": self.tensor_kind or self.role.value,
            "module": self.module,
            "producer": self.producer,
            "num_groups": self.num_groups,
            "tensors": [t.to_dict() for t in self.tensors],
            "nodes": list(self.nodes),
            "notes": list(self.notes),
        }
        if stats and self.weight is not None:
            w = self.weight.load()
            out["weight_stats"] = {"min": float(w.min()), "mean": float(w.mean()), "max": float(w.max())}
        return out


def unique_ids(norms: list[NormLayer]) -> None:
    """Suffix repeated ids (a module applied twice) with #2, #3, ... in place."""
    seen: dict[str, int] = {}
    for n in norms:
        if n.id in seen:
            seen[n.id] += 1
            n.id = f"{n.id}#{seen[n.id]}"
        else:
            seen[n.id] = 1


@dataclass
class LinearOp:
    """A conv / linear (Gemm) layer: where BatchNorms get folded to.

    The layer computes ``alpha * (x · W) + beta * bias`` (only an ONNX Gemm has alpha/beta != 1).  Its output
    channels lie on axis ``out_axis`` of the weight: 0 for Conv (also depthwise/grouped) and [out, in] linears,
    1 for ConvTranspose ([in, out/groups, k...], split in ``groups``) and a Gemm with transB=0 ([in, out])."""

    id: str
    op: str  # conv / conv_transpose / linear
    weight: TensorRef
    bias: TensorRef | None = None
    module: str = ""  # PyTorch module path, or the exporter's scope (dynamo names a folded conv after the BN)
    nodes: list[str] = field(default_factory=list)
    out_axis: int = 0
    groups: int = 1  # groups of a ConvTranspose (its output channels are per group on axis 1)
    alpha: float = 1.0
    beta: float = 1.0

    @property
    def out_channels(self) -> int:
        if not self.weight.shape or len(self.weight.shape) <= self.out_axis:
            return 0
        return int(self.weight.shape[self.out_axis]) * (self.groups if self.out_axis else 1)

    def layout(self) -> dict[str, Any]:
        """The weight layout as keyword arguments of the fold kernels (kernels.fold_batch_norm, ...)."""
        return {"out_axis": self.out_axis, "groups": self.groups}


@dataclass
class NormModel:
    """All norm layers found in one model file."""

    path: str
    format: str  # pytorch | onnx | gguf
    architecture: str | None
    norms: list[NormLayer]
    container: str = ""  # state_dict, safetensors, hf_dir, torch_export, torchscript, module, onnx, gguf
    format_name: str = ""  # the registry format that loaded it (gguf, onnx, hf, pt2, ...)
    metadata: dict[str, Any] = field(default_factory=dict)
    linear_ops: list[LinearOp] = field(default_factory=list)  # convs/linears (graph formats), for fold checks
    tensors: dict[str, TensorRef] = field(default_factory=dict, repr=False)  # every tensor (lazy), flat formats
    notes: list[str] = field(default_factory=list)
    handle: Any = field(default=None, repr=False, compare=False)  # the format's open file (GGUF reader, ...)
    preprocess: "Preprocess | None" = None  # how raw pixels become the image input (normaudit.contracts)
    embedding: "Embedding | None" = None  # how token states become the embedding output (normaudit.contracts)

    def by_id(self) -> dict[str, NormLayer]:
        return {n.id: n for n in self.norms}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.norms:
            out[n.kind.value] = out.get(n.kind.value, 0) + 1
        return out

    def contracts(self) -> dict[str, Any]:
        """The contracts around the model that this file states (``preprocess``, ``embedding``), as JSON."""
        out: dict[str, Any] = {}
        if self.preprocess is not None:
            out["preprocess"] = self.preprocess.to_dict()
        if self.embedding is not None:
            out["embedding"] = self.embedding.to_dict()
        return out

    def to_dict(self, stats: bool = True) -> dict[str, Any]:
        return {
            "schema": "normaudit.inspect/1",
            "path": self.path,
            "format": self.format,
            "container": self.container,
            "architecture": self.architecture,
            "counts": self.counts(),
            "notes": list(self.notes),
            "norms": [n.to_dict(stats=stats) for n in self.norms],
            **self.contracts(),
        }
