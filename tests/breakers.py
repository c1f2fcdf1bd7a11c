"""Build broken conversions out of correct real files, with the ecosystem's own tools (gguf-py, onnx)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


# -- GGUF -------------------------------------------------------------------------------------------

def copy_gguf(src: Path, dst: Path, transform: Callable | None = None, kv: dict | None = None,
              drop: set[str] | None = None) -> Path:
    """Rewrite a GGUF with gguf-py. ``transform(name, array, qtype)`` returns (array, qtype), or None to drop
    the tensor; ``kv`` overrides metadata values (same type); ``drop`` removes metadata keys."""
    import gguf

    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in (drop or ()):
            continue
        value = (kv or {}).get(key, field.contents())
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, value, field.types[0], sub_type=sub)
    for t in r.tensors:
        data, qtype = np.asarray(t.data), t.tensor_type
        if transform is not None:
            out = transform(t.name, data, qtype)
            if out is None:
                continue
            data, qtype = out
        if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(t.name, data)
        else:
            w.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def gguf_eps(src: Path, dst: Path, eps: float) -> Path:
    """The llama.cpp#9310 bug: the converter wrote another rms_norm_eps."""
    import gguf

    arch = gguf.GGUFReader(str(src)).fields["general.architecture"].contents()
    return copy_gguf(src, dst, kv={f"{arch}.attention.layer_norm_rms_epsilon": eps})


def gguf_kv(src: Path, dst: Path, **kv) -> Path:
    """Metadata rewritten, tensors untouched (keys spelled with '__' for '.': qwen3__rope__freq_base=100.0):
    what only the runtime reads (a GGUF replay takes tensors and eps, not rope settings)."""
    return copy_gguf(src, dst, kv={k.replace("__", "."): v for k, v in kv.items()})


def gguf_requantize_noisy(src: Path, dst: Path, name: str, noise: float, seed: int = 0) -> Path:
    """One quantized tensor dequantized, given Gaussian noise of ``noise`` x its std, and quantized again in its
    own type: a block weight corrupted beyond what its quant type explains."""
    from gguf import quants

    rng = np.random.default_rng(seed)

    def t(n, data, q):
        if n != name:
            return data, q
        w = quants.dequantize(data, q)
        w = w + noise * np.std(w) * rng.standard_normal(w.shape).astype(np.float32)
        return quants.quantize(w.astype(np.float32), q), q

    return copy_gguf(src, dst, t)


def gguf_swap_kv(src: Path, dst: Path, key_a: str, key_b: str) -> Path:
    """Two metadata values exchanged (an mmproj's clip.vision.image_mean and image_std: llama.cpp PR#13208)."""
    import gguf

    fields = gguf.GGUFReader(str(src)).fields
    return copy_gguf(src, dst, kv={key_a: fields[key_b].contents(), key_b: fields[key_a].contents()})


def gguf_swap_tokens(src: Path, dst: Path, a: int, b: int) -> Path:
    """A vocabulary written wrong: the strings of token ids ``a`` and ``b`` exchanged."""
    import gguf

    tokens = gguf.GGUFReader(str(src)).fields["tokenizer.ggml.tokens"].contents()
    tokens[a], tokens[b] = tokens[b], tokens[a]
    return copy_gguf(src, dst, kv={"tokenizer.ggml.tokens": tokens})


def scale_channels(channels: list[int], factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """An edit that multiplies a few channels of a norm weight (a corrupted conversion)."""
    def edit(w: np.ndarray) -> np.ndarray:
        w[channels] *= factor
        return w

    return edit


def gguf_edit_norm(src: Path, dst: Path, names: set[str], fn: Callable[[np.ndarray], np.ndarray]) -> Path:
    def t(name, data, qtype):
        return (fn(data.copy()).astype(data.dtype), qtype) if name in names else (data, qtype)

    return copy_gguf(src, dst, t)


# -- ONNX --------------------------------------------------------------------------------------------

def onnx_edit(src: Path, dst: Path, fn: Callable[[onnx.ModelProto], None]) -> Path:
    m = onnx.load(str(src))
    fn(m)
    onnx.save(m, str(dst))
    return dst


def set_initializer(m: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(m.graph.initializer):
        if t.name == name:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    raise KeyError(name)


def initializer(m: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name == name)


def node_in_scope(m: onnx.ModelProto, op: str, scope: str):
    for n in m.graph.node:
        scopes = {p.key: p.value for p in n.metadata_props}.get("pkg.torch.onnx.name_scopes", "")
        if n.op_type == op and (f"'{scope}'" in scopes or n.name.startswith("/" + scope.replace(".", "/") + "/")):
            return n
    raise KeyError((op, scope))


def fp16_eps_constant(m: onnx.ModelProto, layer_prefix: str) -> None:
    """pytorch#86580: the eps Constant of one decomposed LayerNorm stored as fp16 (1e-12 -> 0) behind a Cast."""
    for n in m.graph.node:
        if n.op_type == "Add" and n.name.startswith(layer_prefix) and n.name.endswith("/Add"):
            eps_name = n.input[1]
            const = next(c for c in m.graph.node if eps_name in c.output)
            value = numpy_helper.to_array(const.attribute[0].t)
            const.attribute[0].t.CopyFrom(numpy_helper.from_array(value.astype(np.float16)))
            cast_out = eps_name + "_f32"
            m.graph.node.insert(list(m.graph.node).index(n),
                                helper.make_node("Cast", [eps_name], [cast_out], name=eps_name + "_cast",
                                                 to=TensorProto.FLOAT))
            n.input[1] = cast_out
            return
    raise KeyError(layer_prefix)


def hf_copy(src: Path, dst: Path, **config_updates) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(config_updates)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst
