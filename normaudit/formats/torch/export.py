"""torch.export programs (.pt2): norms read from the graph's aten ops (fused norm ops and HF's decomposed
RMSNorm), with eps from the op's arguments; convs/linears kept for BatchNorm fold checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CorruptFile, UnsupportedFormat, brief
from ...facts.torch import (ATEN_CASTS, ATEN_CONVOLUTION, ATEN_DEFAULT_EPS, ATEN_LINEAR, ATEN_NORMS,
                             ATEN_TRANSPOSED_GROUPS, qk_role)
from ...model import Convention, EpsSource, LinearOp, NormKind, NormLayer, NormModel, TensorRef, unique_ids
from .pt2_archive import Pt2Node, read_pt2
from .tensors import torch_ref


def load_export(path: Path, trust_pickle: bool = False) -> NormModel:
    """Norms of a .pt2 archive, read without torch (the archive's JSON graph and raw weights).

    An archive with pickled payloads is refused unless ``trust_pickle``; then torch's own loader reads it,
    in a child process with memory and time limits (:mod:`normaudit.sandbox`)."""
    try:
        archive = read_pt2(path, trust_pickle=trust_pickle)
    except UnsupportedFormat:
        if not trust_pickle:
            raise
        archive = None  # the older pickled layout: only torch can read it
    if archive is None or any(p.pickled for p in archive.programs.values()):
        from ...sandbox import load_isolated

        return load_isolated("normaudit.formats.torch.export:load_export_with_torch", path,
                             what="torch.export.load (trusted pickles)")
    prog = archive.main
    placeholder_to_state = {**prog.inputs_to_parameters, **prog.inputs_to_buffers,
                            **prog.inputs_to_lifted_tensor_constants}

    def ref_for(arg: Any) -> TensorRef | None:
        name = placeholder_to_state.get(arg.name) if isinstance(arg, Pt2Node) else None
        return prog.state.get(name) if name is not None else None

    norms, linear_ops = norms_from_graph(prog.nodes, ref_for)
    model = NormModel(path=str(path), format="pytorch", architecture=_export_arch(prog.nodes), norms=norms,
                      container="torch_export", linear_ops=linear_ops)
    model.handle = archive
    return model


def load_export_with_torch(path: Path) -> NormModel:
    """torch.export.load + the same graph walk (fx nodes). Runs only in the sandbox child, for trusted files."""
    import torch

    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        raise CorruptFile(f"{path}: cannot load torch.export program ({brief(exc)})") from None
    sig = ep.graph_signature
    placeholder_to_state = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    placeholder_to_state.update(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    state = dict(ep.state_dict)
    state.update(getattr(ep, "constants", {}) or {})

    def ref_for(arg: Any) -> TensorRef | None:
        name = placeholder_to_state.get(getattr(arg, "name", None)) if isinstance(arg, torch.fx.Node) else None
        if name is None or name not in state:
            return None
        return torch_ref(name, state[name], path)

    norms, linear_ops = norms_from_graph(ep.graph.nodes, ref_for)
    return NormModel(path=str(path), format="pytorch", architecture=_export_arch(ep.graph.nodes), norms=norms,
                     container="torch_export", linear_ops=linear_ops)


def norms_from_graph(nodes: Any, ref_for: Any) -> tuple[list[NormLayer], list[LinearOp]]:
    """Norms and convs/linears of an export graph (fx nodes, or nodes read from the archive's JSON)."""
    norms: list[NormLayer] = []
    linear_ops: dict[str, LinearOp] = {}  # node name -> op
    for node in nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if target in ATEN_LINEAR:
            w = ref_for(node.args[1]) if len(node.args) > 1 else None
            if w is not None:
                b = ref_for(node.args[2]) if len(node.args) > 2 else None
                module = _module_path(node) or w.name.rsplit(".", 1)[0]
                op, out_axis, groups = ATEN_LINEAR[target], 0, 1
                transposed = target in ATEN_TRANSPOSED_GROUPS or (
                    target == ATEN_CONVOLUTION[0] and bool(_arg(node, ATEN_CONVOLUTION[1], "transposed")))
                if transposed:
                    g_arg = _arg(node, ATEN_TRANSPOSED_GROUPS.get(target, ATEN_CONVOLUTION[2]), "groups")
                    op, out_axis, groups = "conv_transpose", 1, g_arg if isinstance(g_arg, int) and g_arg > 0 else 1
                linear_ops[node.name] = LinearOp(module, op, w, b, module, [node.name], out_axis=out_axis,
                                                 groups=groups)
            continue
        spec = ATEN_NORMS.get(target)
        if spec is not None:
            layer = _export_norm(node, target, spec, ref_for)
            src = node.args[0] if node.args else None
            layer.input_name = getattr(src, "name", "")
            layer.output_name = node.name
            if "native" in target or "legit" in target:  # tuple results: the output is getitem 0
                for user in node.users:
                    if str(user.target) == "<built-in function getitem>" and user.args[1] == 0:
                        layer.output_name = user.name
            if getattr(src, "name", None) in linear_ops:
                layer.producer = linear_ops[src.name].id
            norms.append(layer)
            continue
        # a centred pattern is a LayerNorm: tried first, as its rsqrt form would otherwise read as an RMSNorm
        layer = _export_decomposed_layer_norm(node, ref_for) or _export_decomposed_rms(node, ref_for)
        if layer is not None:
            norms.append(layer)
    unique_ids(norms)
    return norms, list(linear_ops.values())


def _arg(node: Any, idx: int | None, name: str) -> Any:
    if idx is None:
        return None
    if len(node.args) > idx:
        return node.args[idx]
    return node.kwargs.get(name)


def _module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path).replace("L['self'].", "").replace("L__self__.", "")


def _module_of(node: Any, *params: TensorRef | None) -> str:
    """The module path of a norm node: from the graph's module stack, else the prefix of its first dotted param."""
    module = _module_path(node)
    if not module:
        for r in params:
            if r is not None and "." in r.name:
                return r.name.rsplit(".", 1)[0]
    return module


def _export_norm(node: Any, target: str, spec: tuple, ref_for: Any) -> NormLayer:
    kind, wi, bi, ei, mi, vi, gi = spec
    weight, bias = ref_for(_arg(node, wi, "weight")), ref_for(_arg(node, bi, "bias"))
    eps_arg = _arg(node, ei, "eps")
    notes: list[str] = []
    if eps_arg is None:
        if kind is NormKind.RMS_NORM:
            eps, detail = None, f"{target}: eps=None (torch uses finfo(input dtype).eps)"
            notes.append("rms_norm called with eps=None: torch substitutes the input dtype's machine epsilon")
        else:
            eps, detail = ATEN_DEFAULT_EPS, f"{target} default eps"
    elif isinstance(eps_arg, (int, float)) and not isinstance(eps_arg, bool):
        eps, detail = float(np.float32(eps_arg)), f"{target} eps argument of node {node.name}"
    else:  # a tensor, a node or a malformed constant: nothing the audit can read as a number
        eps, detail = None, f"{target}: eps argument of node {node.name} is not a constant ({type(eps_arg).__name__})"
        notes.append("eps is not a numeric constant in the exported graph")
    module = _module_of(node, weight, bias)
    layer = NormLayer(
        id=module or node.name, kind=kind, eps=eps,
        eps_source=EpsSource.EXPORT_GRAPH if eps is not None else EpsSource.UNKNOWN, eps_detail=detail,
        weight=weight, bias=bias,
        running_mean=ref_for(_arg(node, mi, "running_mean")), running_var=ref_for(_arg(node, vi, "running_var")),
        num_groups=int(_arg(node, gi, "group")) if gi is not None and isinstance(_arg(node, gi, "group"), int) else None,
        module=module, nodes=[node.name], notes=notes,
    )
    if kind is NormKind.GROUP_NORM and layer.num_groups is None:
        groups = _arg(node, gi, "num_groups")
        layer.num_groups = groups if isinstance(groups, int) and not isinstance(groups, bool) and groups > 0 else None
    layer.role = qk_role(module)
    return layer


#: ops a parameter passes through to broadcast against the activations (``weight[:, None, None]``)
_BROADCASTS = ("aten.unsqueeze.default", "aten.view.default", "aten.reshape.default", "aten._unsafe_view.default",
               "aten.expand.default")


def _mean_dims(node: Any, of: Any = None) -> tuple[int, ...] | None:
    """The reduced dims of ``aten.mean.dim`` (of ``of`` when given), else None."""
    if str(getattr(node, "target", "")) != "aten.mean.dim" or len(node.args) < 2:
        return None
    if of is not None and node.args[0] is not of:
        return None
    dims = node.args[1]
    dims = [dims] if isinstance(dims, int) else dims
    if not isinstance(dims, (list, tuple)) or not dims or not all(isinstance(d, int) and not isinstance(d, bool)
                                                                  for d in dims):
        return None
    return tuple(int(d) for d in dims)


def _param_through(arg: Any, ref_for: Any) -> TensorRef | None:
    """The parameter behind ``arg``, through the reshapes that broadcast it (bounded: a hostile graph cannot spin)."""
    for _ in range(16):
        if str(getattr(arg, "target", "")) in _BROADCASTS and getattr(arg, "args", None):
            arg = arg.args[0]
        else:
            break
    return ref_for(arg) if hasattr(arg, "name") else None


def _export_decomposed_layer_norm(node: Any, ref_for: Any) -> NormLayer | None:
    """A LayerNorm written out (ConvNeXt's channels-first LayerNorm): u = mean(x, d); v = mean(pow(x - u, 2), d);
    (x - u) / sqrt(v + eps)  or  (x - u) * rsqrt(v + eps); then optionally * weight and + bias (broadcast)."""
    target = str(node.target)
    if target not in ("aten.sqrt.default", "aten.rsqrt.default") or not node.args:
        return None
    add = node.args[0]
    if str(getattr(add, "target", "")) not in ("aten.add.Tensor", "aten.add.Scalar") or len(add.args) < 2:
        return None
    var, eps = add.args[0], add.args[1]
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        return None
    dims = _mean_dims(var)
    pw = var.args[0] if dims is not None else None
    if str(getattr(pw, "target", "")) != "aten.pow.Tensor_Scalar" or len(pw.args) < 2 or pw.args[1] != 2:
        return None
    sub = pw.args[0]
    if str(getattr(sub, "target", "")) != "aten.sub.Tensor" or len(sub.args) < 2:
        return None
    x, mu = sub.args[0], sub.args[1]
    if _mean_dims(mu, of=x) != dims:
        return None
    out = _single_user(node)  # (x - u) / sqrt(.) or (x - u) * rsqrt(.)
    want = "aten.div.Tensor" if target == "aten.sqrt.default" else "aten.mul.Tensor"
    if out is None or str(out.target) != want or len(out.args) < 2:
        return None
    centred = out.args[0] if out.args[1] is node else out.args[1] if want == "aten.mul.Tensor" else None
    if str(getattr(centred, "target", "")) != "aten.sub.Tensor" or centred.args[:2] != sub.args[:2]:
        return None
    weight = bias = None
    last, nodes = out, [mu.name, sub.name, pw.name, var.name, add.name, node.name, out.name]
    nxt = _single_user(out)
    if nxt is not None and str(nxt.target) == "aten.mul.Tensor" and len(nxt.args) == 2:
        other = nxt.args[1] if nxt.args[0] is out else nxt.args[0]
        weight = _param_through(other, ref_for)
        if weight is not None:
            last = nxt
            nodes.append(nxt.name)
            nb = _single_user(nxt)
            if nb is not None and str(nb.target) == "aten.add.Tensor" and len(nb.args) == 2:
                bias = _param_through(nb.args[1] if nb.args[0] is nxt else nb.args[0], ref_for)
                if bias is not None:
                    last = nb
                    nodes.append(nb.name)
    module = _module_of(node, weight, bias)
    layer = NormLayer(
        id=module or node.name, kind=NormKind.LAYER_NORM, eps=float(np.float32(eps)),
        eps_source=EpsSource.EXPORT_GRAPH, eps_detail=f"aten.add eps constant of node {add.name}",
        weight=weight, bias=bias, axis=dims, axes_exact=True, module=module, nodes=nodes,
        notes=[f"decomposed LayerNorm pattern (mean / pow / {target.split('.')[1]}) over dims {list(dims)}"],
        input_name=getattr(x, "name", ""), output_name=last.name,
    )
    layer.role = qk_role(module)
    return layer


def _export_decomposed_rms(node: Any, ref_for: Any) -> NormLayer | None:
    """aten.rsqrt(add(mean(pow(x, 2)), eps)) -> mul(x, .) -> mul(weight, .)  (HF RMSNorm in an export)."""
    if str(node.target) != "aten.rsqrt.default":
        return None
    add = node.args[0] if node.args else None
    if str(getattr(add, "target", "")) not in ("aten.add.Tensor", "aten.add.Scalar") or len(add.args) < 2:
        return None
    mean, eps = add.args[0], add.args[1]
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or str(getattr(mean, "target", "")) != "aten.mean.dim":
        return None
    pw = mean.args[0] if mean.args else None
    if str(getattr(pw, "target", "")) != "aten.pow.Tensor_Scalar" or len(pw.args) < 2 or pw.args[1] != 2:
        return None
    weight, one_plus, out_node = _export_weight_after(node, ref_for)
    module = _module_path(node)
    layer = NormLayer(
        id=module or node.name, kind=NormKind.RMS_NORM, eps=float(np.float32(eps)),
        eps_source=EpsSource.EXPORT_GRAPH, eps_detail=f"aten.add eps constant of node {add.name}",
        weight=weight, module=module, nodes=[pw.name, mean.name, add.name, node.name],
        convention=Convention.ONE_PLUS if one_plus else Convention.SCALE,
        notes=["decomposed RMSNorm pattern"] + (["weight enters as (1 + w)"] if one_plus else []),
        input_name=getattr(pw.args[0], "name", ""), output_name=out_node,
    )
    layer.role = qk_role(module)
    return layer


_CASTS = ATEN_CASTS


def _single_user(node: Any) -> Any | None:
    users = [u for u in node.users if str(u.target) != "aten._assert_tensor_metadata.default"]
    return users[0] if len(users) == 1 else None


def _export_weight_after(rsqrt: Any, ref_for: Any) -> tuple[TensorRef | None, bool, str]:
    """Follow x * rsqrt(.) forward (through casts) to the Mul by the weight.

    Returns (weight, enters as 1 + w, name of the node holding the norm's output)."""
    node = _single_user(rsqrt)  # mul(x, rsqrt)
    if node is None or str(node.target) != "aten.mul.Tensor":
        return None, False, rsqrt.name
    nxt = _single_user(node)
    for _ in range(16):  # a few casts at most; bounded so a cyclic (hostile) graph cannot spin
        if nxt is None or str(nxt.target) not in _CASTS:
            break
        node, nxt = nxt, _single_user(nxt)
    if nxt is None or str(nxt.target) != "aten.mul.Tensor":
        return None, False, node.name
    for arg in nxt.args:
        if arg is node:
            continue
        one_plus = False
        for _ in range(16):
            if not hasattr(arg, "target"):
                break
            target = str(arg.target)
            if target in _CASTS and arg.args:
                arg = arg.args[0]
            elif target in ("aten.add.Tensor", "aten.add.Scalar") and len(arg.args) == 2 and arg.args[1] == 1.0:
                one_plus, arg = True, arg.args[0]
            else:
                break
        ref = ref_for(arg)
        if ref is not None:
            return ref, one_plus, nxt.name
    return None, False, node.name


def _export_arch(nodes: Any) -> str | None:
    """The exported model's class: the transformers class if a wrapper holds one, else the root class."""
    first = None
    for node in nodes:
        for _, (_, cls) in (node.meta.get("nn_module_stack") or {}).items():
            first = first or str(cls)
            if str(cls).startswith("transformers.models."):
                return str(cls).rsplit(".", 1)[-1]
    return first.rsplit(".", 1)[-1] if first else None


