"""PyTorch facts: aten norm ops (torch.export graphs), nn.Module norm classes and their eps attributes, and how
norm tensors are named in state_dicts (the fallback when nothing better tells)."""

from __future__ import annotations

import re
from typing import NamedTuple

from ..model import NormKind, Role


class AtenNorm(NamedTuple):
    """Argument positions of an aten norm op (torch/_C/_VariableFunctions / native_functions.yaml)."""

    kind: NormKind
    weight: int | None
    bias: int | None
    eps: int
    running_mean: int | None
    running_var: int | None
    groups: int | None


ATEN_NORMS: dict[str, AtenNorm] = {
    "aten.layer_norm.default": AtenNorm(NormKind.LAYER_NORM, 2, 3, 4, None, None, None),
    "aten.native_layer_norm.default": AtenNorm(NormKind.LAYER_NORM, 2, 3, 4, None, None, None),
    "aten.rms_norm.default": AtenNorm(NormKind.RMS_NORM, 2, None, 3, None, None, None),
    "aten._fused_rms_norm.default": AtenNorm(NormKind.RMS_NORM, 2, None, 3, None, None, None),
    "aten.batch_norm.default": AtenNorm(NormKind.BATCH_NORM, 1, 2, 7, 3, 4, None),
    "aten._native_batch_norm_legit_no_training.default": AtenNorm(NormKind.BATCH_NORM, 1, 2, 6, 3, 4, None),
    "aten._native_batch_norm_legit.default": AtenNorm(NormKind.BATCH_NORM, 1, 2, 7, 3, 4, None),
    "aten.native_batch_norm.default": AtenNorm(NormKind.BATCH_NORM, 1, 2, 7, 3, 4, None),
    "aten.group_norm.default": AtenNorm(NormKind.GROUP_NORM, 2, 3, 4, None, None, 1),
    "aten.native_group_norm.default": AtenNorm(NormKind.GROUP_NORM, 1, 2, 7, None, None, 6),
    "aten.instance_norm.default": AtenNorm(NormKind.INSTANCE_NORM, 1, 2, 7, 3, 4, None),
}
#: eps of an aten norm op called without one (torch.nn.functional defaults)
ATEN_DEFAULT_EPS = 1e-5
#: aten ops a BatchNorm can be folded into -> conv / conv_transpose / linear
ATEN_LINEAR: dict[str, str] = {"aten.conv2d.default": "conv", "aten.conv1d.default": "conv",
                               "aten.conv3d.default": "conv", "aten.convolution.default": "conv",
                               "aten.conv_transpose1d.default": "conv_transpose",
                               "aten.conv_transpose2d.input": "conv_transpose",
                               "aten.conv_transpose3d.input": "conv_transpose",
                               "aten.linear.default": "linear"}
#: transposed convs: argument index of ``groups`` (their weight is [C_in, C_out/groups, k...]: output channels on
#: axis 1); aten.convolution is transposed when its ``transposed`` argument (index 6) is set, groups at index 8
ATEN_TRANSPOSED_GROUPS: dict[str, int] = {"aten.conv_transpose1d.default": 6, "aten.conv_transpose2d.input": 6,
                                          "aten.conv_transpose3d.input": 6}
ATEN_CONVOLUTION = ("aten.convolution.default", 6, 8)  # target, index of ``transposed``, index of ``groups``
#: aten ops that only change dtype / alias a value (followed through when matching decomposed norms)
ATEN_CASTS: tuple[str, ...] = ("aten.to.dtype", "aten._to_copy.default", "aten.type_as.default", "aten.clone.default",
                               "aten.to.dtype_layout", "aten.alias.default")

#: nn.Module class name markers -> kind (first match wins; torch.nn, transformers, timm spellings)
MODULE_KINDS: tuple[tuple[str, NormKind], ...] = (
    ("BatchNorm", NormKind.BATCH_NORM), ("SyncBatchNorm", NormKind.BATCH_NORM),
    ("GroupNorm", NormKind.GROUP_NORM), ("InstanceNorm", NormKind.INSTANCE_NORM),
    ("RMSNorm", NormKind.RMS_NORM), ("T5LayerNorm", NormKind.RMS_NORM),
    ("LayerNorm", NormKind.LAYER_NORM),
)
#: module attributes that hold the eps, in the order tried (torch.nn: eps; HF RMSNorms: variance_epsilon)
EPS_ATTRS: tuple[str, ...] = ("eps", "variance_epsilon", "epsilon", "rms_norm_eps")
#: class-name prefixes of transformers norm modules computing x * (1 + w)
ONE_PLUS_CLASS_PREFIXES: tuple[str, ...] = ("Gemma", "RecurrentGemma", "Nemotron", "Qwen3Next")


def module_kind(class_name: str) -> NormKind | None:
    for marker, kind in MODULE_KINDS:
        if marker in class_name:
            return kind
    return None


# -- names in state_dicts (fallback) --------------------------------------------------------------

#: last component of a module path that marks a norm layer
NORM_MODULE_RE = re.compile(
    r"(norm|layernorm|layer_norm|rmsnorm|batchnorm|groupnorm|instancenorm|"
    r"^ln(_?\d+|_f|_post|_pre|_q|_kv)?$|^bn\d*$|^gn\d*$|_ln$|_bn$|^lnorm)",
    re.IGNORECASE,
)
NORM_TENSOR_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
QK_NORM_RE = re.compile(r"(^|[._])(q|k|query|key)_?(norm|layernorm|ln)$", re.IGNORECASE)
GROUP_NORM_RE = re.compile(r"(group_?norm|^gn\d*$)", re.IGNORECASE)
INSTANCE_NORM_RE = re.compile(r"instance_?norm", re.IGNORECASE)


def qk_role(module_path: str) -> Role:
    """QK_NORM when the module's name marks a query/key norm (q_norm, k_layernorm, ...; also one norm per head
    inside it: StableLM's ``q_layernorm.norms.0``)."""
    parts = [p for p in (module_path or "").split(".") if p and not p.isdigit() and p != "norms"]
    return Role.QK_NORM if parts and QK_NORM_RE.search(parts[-1]) else Role.NONE
