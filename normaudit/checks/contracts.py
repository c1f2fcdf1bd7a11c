"""Checks on what surrounds the model: the image preprocessing contract (mean/std/rescale), the embedding output
contract (pooling, L2 normalization), and norms a conversion writes to another file (a VLM's mmproj / text GGUF)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from ..contracts import Embedding, Preprocess, Where
from ..facts import embedding as efacts, preprocess as pfacts
from ..model import NormModel
from .base import Context, Severity, check

# -- preprocessing ------------------------------------------------------------------------------------------


def _close(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return np.abs(x - y) <= pfacts.VALUE_RTOL * np.maximum(np.abs(x), np.abs(y)) + 1e-9


def _fmt(v: Any) -> str:
    return "[" + ", ".join(f"{float(x):.4g}" for x in np.asarray(v).reshape(-1)) + "]"


def known_set(mean: np.ndarray, std: np.ndarray) -> str | None:
    """The name of a well-known mean/std set these values are (facts.preprocess.KNOWN_SETS)."""
    for s in pfacts.KNOWN_SETS:
        if mean.size == 3 and bool(np.all(_close(mean, s.mean))) and bool(np.all(_close(std, s.std))):
            return s.name
    if mean.size and bool(np.all(mean == 0)) and bool(np.all(std == 1)):
        return "no normalization"
    return None


def diagnose(ma: np.ndarray, sa: np.ndarray, mb: np.ndarray, sb: np.ndarray) -> list[str]:
    """What B's mean/std (canonical, pixels/255 units) look like against A's: a swap, one written for the other,
    a wrong well-known set, the first channel repeated, a rescale applied twice or not at all."""
    out: list[str] = []
    n = min(ma.size, mb.size)
    ma, sa, mb, sb = ma[:n], sa[:n], mb[:n], sb[:n]
    mean_ok, std_ok = bool(np.all(_close(ma, mb))), bool(np.all(_close(sa, sb)))
    if not mean_ok and not std_ok and np.all(_close(mb, sa)) and np.all(_close(sb, ma)):
        return ["B's mean and std are swapped"]
    if not std_ok and np.all(_close(sb, ma)):
        out.append("B's std holds A's mean: the mean was written where the std belongs (cf. llama.cpp PR#13208)")
    if not mean_ok and np.all(_close(mb, sa)):
        out.append("B's mean holds A's std: the std was written where the mean belongs")
    a_varies = not (np.all(_close(ma, ma[0])) and np.all(_close(sa, sa[0])))
    if n > 1 and a_varies and np.all(_close(mb, ma[0])) and np.all(_close(sb, sa[0])):
        out.append("B repeats channel 0's mean/std on every channel: only the first channel was read (cf. clip.cpp#99)")
    name_a, name_b = known_set(ma, sa), known_set(mb, sb)
    if name_b and name_a != name_b:
        ratio = sa / sb
        out.append(f"B uses {name_b}'s mean/std where A uses {name_a or 'its own'} "
                   f"(cf. apple/coreai-models#82, open_clip#204); B scales inputs x{_fmt(ratio)} of A")
    if not out and ma.any():
        for factor, what in ((255.0, "B's values are 255x A's: the /255 rescale is applied twice or the constants are "
                                     "in pixel units"),
                             (1 / 255.0, "B's values are 1/255 of A's: the /255 rescale is missing")):
            if np.all(_close(mb, ma * factor)) and np.all(_close(sb, sa * factor)):
                out.append(what)
    return out


def source_conv(model: NormModel, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """The source's image conv (weight, bias, name) of a given weight shape: a graph's conv op, else the one
    checkpoint tensor of that shape (the patch / stem conv; its ``.bias`` beside it)."""
    for op in model.linear_ops:
        if tuple(op.weight.shape) == shape:
            return op.weight.load(), op.bias.load() if op.bias is not None else None, op.id
    hits = [n for n, t in model.tensors.items() if tuple(t.shape) == shape]
    if len(hits) != 1:
        return None
    name = hits[0]
    bias = model.tensors.get(name.rsplit(".", 1)[0] + ".bias") if name.endswith(".weight") else None
    return model.tensors[name].load(), bias.load() if bias is not None else None, name


def recover_fold(a: NormModel, b: NormModel, pb: Preprocess) -> tuple[Preprocess | None, str]:
    """B's image input feeds a conv directly: compare that conv with A's to tell "normalization outside the graph"
    (the same weights) from "folded into the conv" (weights scaled per input channel, bias shifted), and recover
    the folded mean/std.  Returns (B's contract or None, what was found)."""
    from ..formats.onnx.contracts import decode_affine

    conv = next((op for op in b.linear_ops if op.id == pb.conv), None)
    if conv is None:
        return None, "B's first conv is not readable"
    src = source_conv(a, tuple(conv.weight.shape))
    if src is None:
        return None, f"A has no single conv of shape {list(conv.weight.shape)} to compare B's {conv.id} with"
    wa, ba, name = src
    got = kernels.recover_input_affine(wa, ba, conv.weight.load(), conv.bias.load() if conv.bias is not None else None)
    if got is None:
        return None, "the conv shapes differ"
    scale, shift, err = got
    if err > 1e-3:
        return None, (f"B's conv {conv.id} differs from A's {name} beyond a per-channel scale (refit rel L2 "
                      f"{err:.2g}): other weights changed too")
    if np.allclose(scale, 1.0, rtol=1e-4) and np.allclose(shift, 0.0, atol=1e-4):
        return None, f"B's conv {conv.id} equals A's {name}: B expects inputs already normalized"
    out = decode_affine(scale, shift, None, True, Where.FOLDED, input_name=pb.input, conv=conv.id)
    out.sources = {k: f"recovered from B's {conv.id} against A's {name} (weights scaled per input channel, "
                      f"bias shifted; refit rel L2 {err:.2g})" for k in ("mean", "std")}
    return out, f"folded into {conv.id}"


def _hint(b: NormModel, pb: Preprocess, ma: np.ndarray, sa: np.ndarray) -> str:
    values = f"mean {_fmt(ma)}, std {_fmt(sa)} (pixels / 255)"
    if b.format == "gguf":
        return (f"write clip.vision.image_mean / image_std = A's {values} (gguf-py / gguf_set_metadata), or fix the "
                "converter's preprocessor keys")
    if pb.where == Where.FOLDED:
        return f"re-fold the conv with A's {values}"
    if pb.where == Where.GRAPH:
        return f"re-export with A's {values} in the input normalization"
    return f"use A's {values}"


@check("preprocess_mismatch", Severity.ERROR, scope="model",
       description="image mean/std/rescale differ between A and B (preprocessor_config.json, mmproj "
                   "clip.vision.image_mean/std, ONNX input Sub/Div or a fold into the first conv), per channel, "
                   "with the likely cause (swap, wrong set, first channel only)")
def preprocess(ctx: Context) -> None:
    a, b = ctx.a, ctx.b
    pa, pb = a.preprocess, b.preprocess
    if pa is None or pb is None or not pa.known:
        return
    if not pb.known and pb.conv:
        folded, what = recover_fold(a, b, pb)
        if folded is None:
            ca = pa.canonical()
            if ca is None:
                return
            ctx.finding("preprocess_mismatch", None, None,
                        f"B carries no preprocessing ({what}): the caller must normalize as A says: "
                        f"mean {_fmt(ca[0])}, std {_fmt(ca[1])} of pixels / 255 ({_where(pa)})",
                        "apply A's image processor before B, or export the normalization into B's graph",
                        severity=Severity.INFO, where_b=pb.where, found=what)
            return
        pb = folded
    if not pb.known:
        return
    ca, cb = pa.canonical(), pb.canonical()
    if ca is None or cb is None:
        return
    ma, sa = ca
    mb, sb = cb
    n = min(ma.size, mb.size)
    diffs = []
    for c in range(max(ma.size, mb.size)):
        if c >= n:
            diffs.append(f"channel {c} only on one side")
            continue
        what = [f"{k} {x[c]:.6g} in A, {y[c]:.6g} in B" for k, x, y in (("mean", ma, mb), ("std", sa, sb))
                if not _close(x[c], y[c])]
        if what:
            diffs.append(f"channel {c}: " + ", ".join(what))
    if not diffs:
        if pb.where == Where.FOLDED:
            ctx.finding("preprocess_mismatch", None, None,
                        f"B's image normalization is folded into its first conv ({pb.conv}); the recovered mean "
                        f"{_fmt(mb)}, std {_fmt(sb)} (pixels / 255) match A's ({_where(pa)})",
                        "B takes raw 0..255 pixels" if pb.rescale == 1.0 else "", severity=Severity.INFO,
                        mean_b=mb.tolist(), std_b=sb.tolist(), where_b=pb.where)
        return
    causes = diagnose(ma, sa, mb, sb)
    ctx.finding("preprocess_mismatch", None, None,
                f"image normalization differs ({_where(pa)} vs {_where(pb)}; values in pixels / 255): "
                + "; ".join(diffs) + (". " + "; ".join(causes) if causes else ""),
                _hint(b, pb, ma, sa), mean_a=ma.tolist(), std_a=sa.tolist(), mean_b=mb.tolist(), std_b=sb.tolist(),
                causes=causes, where_b=pb.where)


def _where(p: Preprocess) -> str:
    src = p.sources.get("mean") or p.sources.get("affine") or p.where
    return src if len(src) < 80 else src[:77] + "..."


# -- embeddings ---------------------------------------------------------------------------------------------

def embedding_of(model: NormModel) -> Embedding | None:
    """A model's embedding contract, or what its file implies when it states none: an ONNX graph whose output
    is per token [batch, seq, dim] pools nothing; a GGUF without ``{arch}.pooling_type`` runs with pooling none
    in llama.cpp."""
    if model.embedding is not None:
        return model.embedding
    meta = model.metadata if isinstance(model.metadata, dict) else {}
    if model.format == "onnx":
        outs = meta.get("outputs") or []
        if outs and outs[0].get("rank") == 3:
            return Embedding(where="graph", pooling="none", normalize=False, output=outs[0]["name"],
                             sources={"pooling": f"ONNX output {outs[0]['name']!r} is per token {outs[0]['dims']}: "
                                                 "no pooling in the graph",
                                      "normalize": "ONNX: no L2 normalization in the graph"})
    if model.format == "gguf" and not meta.get("mmproj"):
        return Embedding(where="gguf", pooling="none", normalize=None,
                         sources={"pooling": efacts.LLAMA_CPP_NO_POOLING.format(arch=model.architecture)},
                         runtime=list(efacts.LLAMA_CPP_RUNTIME))
    return None


def _src(e: Embedding, key: str) -> str:
    return e.sources.get(key, e.where)


@check("embedding_normalization_missing", Severity.ERROR, scope="model",
       description="A's embeddings are L2-normalized (sentence-transformers Normalize, ReduceL2/LpNormalization) and "
                   "B's are not (error), B leaves it to the runtime (GGUF: info), or B normalizes and A does not "
                   "(warning)")
def embedding_normalization(ctx: Context) -> None:
    ea = ctx.a.embedding
    eb = embedding_of(ctx.b)
    if ea is None or eb is None or ea.normalize is None:
        return
    if ea.normalize and eb.normalize is False:
        ctx.finding("embedding_normalization_missing", None, None,
                    f"A L2-normalizes its output ({_src(ea, 'normalize')}); B does not ({_src(eb, 'normalize')}): "
                    "B's vectors do not have norm 1. Cosine similarity is unchanged, but dot-product / L2 search "
                    "against vectors from A (an index built with normalized vectors) loses recall",
                    "add the normalization to the export (torch.nn.functional.normalize(x, p=2, dim=-1) after the "
                    "pooling) or normalize in the caller", normalize_a=True, normalize_b=False)
    elif ea.normalize and eb.normalize is None:
        ctx.finding("embedding_normalization_missing", None, None,
                    f"A L2-normalizes its output ({_src(ea, 'normalize')}); B stores no normalization "
                    f"({_src(eb, 'normalize')}): " + "; ".join(eb.runtime),
                    "with llama-cpp-python call embed(..., normalize=True); keep llama-server's default "
                    "--embd-normalize 2", severity=Severity.INFO, normalize_a=True, normalize_b=None)
    elif ea.normalize is False and eb.normalize:
        ctx.finding("embedding_normalization_missing", None, None,
                    f"B L2-normalizes its output ({_src(eb, 'normalize')}); A does not ({_src(ea, 'normalize')}): "
                    "vector lengths differ from the source's (dot products change, cosine does not)",
                    "drop the normalization from B or add it to A's pipeline", severity=Severity.WARNING,
                    normalize_a=False, normalize_b=True)


@check("pooling_mismatch", Severity.ERROR, scope="model",
       description="A and B pool token states differently (sentence-transformers Pooling, GGUF pooling_type, the "
                   "ONNX graph's ReduceMean/masked mean/Gather), or B returns per-token outputs")
def pooling(ctx: Context) -> None:
    ea = ctx.a.embedding
    eb = embedding_of(ctx.b)
    if ea is None or eb is None or ea.pooling is None or eb.pooling is None or ea.pooling == eb.pooling:
        return
    if eb.pooling == "none" and ctx.b.format == "onnx":
        ctx.finding("pooling_mismatch", None, None,
                    f"A pools tokens ({ea.pooling}: {_src(ea, 'pooling')}); B outputs token embeddings "
                    f"({_src(eb, 'pooling')}): the caller must apply {ea.pooling} pooling over the attention mask"
                    + (" and the L2 normalization" if ea.normalize else "")
                    + " (cf. sentence-transformers#3258)",
                    f"export the {ea.pooling} pooling into the graph, or pool in the caller",
                    severity=Severity.WARNING, pooling_a=ea.pooling, pooling_b=eb.pooling)
        return
    ctx.finding("pooling_mismatch", None, None,
                f"A pools with {ea.pooling} ({_src(ea, 'pooling')}), B with {eb.pooling} ({_src(eb, 'pooling')})",
                _pooling_hint(ctx.b, ea.pooling), pooling_a=ea.pooling, pooling_b=eb.pooling)


def _pooling_hint(b: NormModel, pooling: str) -> str:
    if b.format == "gguf":
        import gguf

        value = next((int(m) for m in gguf.PoolingType if efacts.GGUF_POOLING.get(m.name) == pooling), None)
        return (f"set {b.architecture}.pooling_type = {value} ({pooling}) in the GGUF (the converter reads it from "
                "modules.json / 1_Pooling), or run llama.cpp with --pooling " + pooling)
    return f"re-export with {pooling} pooling"


# -- norms in another file -------------------------------------------------------------------------------------

@check("not_in_file", Severity.INFO, scope="model",
       description="norms a multimodal conversion writes to another file (the language model vs the mmproj GGUF, "
                   "the vision tower vs the text GGUF): listed, not compared")
def elsewhere(ctx: Context) -> None:
    from ..match import Alignment

    al = ctx.cache.get("alignment")
    if not isinstance(al, Alignment):
        return
    for side, (layers, why) in al.elsewhere.items():
        ctx.finding("not_in_file", None, None,
                    f"{len(layers)} norms of {side} are {why}; they are not compared here",
                    "compare them against the other GGUF of the conversion",
                    layers=[[n.id, None] if side == "A" else [None, n.id] for n in layers])
