"""The contracts an HF folder states beside its weights: ``preprocessor_config.json`` (image mean/std, rescale)
and the sentence-transformers files (``modules.json``, ``1_Pooling/config.json``, a ``Normalize`` module).

Bounded JSON reads; a path named in ``modules.json`` must stay inside the folder (nothing outside is read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...contracts import Embedding, Preprocess, Where
from ...errors import CorruptFile
from ...facts import embedding as efacts, preprocess as pfacts
from .hf_config import read_json as _read_json


def read_json(f: Path) -> object:
    """A JSON file of the model folder: it must resolve inside the folder it is named in (no symlink out)."""
    root = f.parent.resolve()
    try:
        target = f.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise CorruptFile(f"{f}: cannot be resolved ({type(exc).__name__})") from None
    if target != root / f.name and root not in target.parents and not _in_hf_cache(root, target):
        raise CorruptFile(f"{f}: resolves outside the model folder")
    return _read_json(f)


def _in_hf_cache(folder: Path, target: Path) -> bool:
    """A snapshot of the Hugging Face cache links its files into the repository's blobs/."""
    for parent in [folder, *folder.parents]:
        if parent.name.startswith("models--"):
            return parent in target.parents
    return False


def _numbers(value: Any) -> tuple[float, ...] | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3  # a single number applies to every channel (BaseImageProcessor broadcasts)
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return tuple(float(v) for v in value)
    return None


def preprocess_from_dir(path: Path) -> Preprocess | None:
    """The image processor's normalization: ``preprocessor_config.json`` (or ``processor_config.json``'s
    ``image_processor``), as llama.cpp's converter also reads them; None when the folder has neither."""
    for name in pfacts.HF_FILES:
        f = path / name
        if not f.is_file():
            continue
        doc = read_json(f)
        if not isinstance(doc, dict):
            raise CorruptFile(f"{f}: not a JSON object")
        if name == "processor_config.json":
            doc = doc.get("image_processor") if isinstance(doc.get("image_processor"), dict) else None
            if doc is None:
                continue
        if not any(k in doc for k in ("image_mean", "image_std", "do_normalize", "rescale_factor")):
            continue
        out = Preprocess(where=Where.OUTSIDE)
        do_rescale = doc.get("do_rescale", True)
        out.do_rescale = bool(do_rescale) if isinstance(do_rescale, bool) else None
        factor = doc.get("rescale_factor", pfacts.HF_DEFAULT_RESCALE)
        if out.do_rescale is False:  # the processor takes images already scaled (by the caller): not stated here
            out.sources["rescale"] = f"{name} do_rescale: false (the caller provides scaled pixels)"
        elif isinstance(factor, (int, float)) and not isinstance(factor, bool):
            out.rescale = float(factor)
            out.sources["rescale"] = (f"{name} rescale_factor" if "rescale_factor" in doc else
                                      f"{name} has no rescale_factor: the image processor's default 1/255")
        do_normalize = doc.get("do_normalize", True)
        out.do_normalize = bool(do_normalize) if isinstance(do_normalize, bool) else None
        for key, attr in (("image_mean", "mean"), ("image_std", "std")):
            values = _numbers(doc.get(key))
            if values is None:
                if key in doc:
                    out.notes.append(f"{name} {key} is not a number or a list of numbers")
                continue
            setattr(out, attr, values)
            out.sources[attr] = f"{name} {key}"
        if out.do_normalize is False:
            out.sources["normalize"] = f"{name} do_normalize: false"
        elif out.mean is None or out.std is None:
            out.where = Where.UNKNOWN
            out.notes.append(f"{name} has no image_mean/image_std: the processor class's defaults apply (not "
                             "read: they live in transformers' code)")
        return out
    return None


def _inside(root: Path, rel: str, where: Path) -> Path:
    target = (root / rel).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise CorruptFile(f"{where}: module path {rel!r} points outside the model folder")
    return target


def embedding_from_dir(path: Path) -> Embedding | None:
    """The sentence-transformers pipeline: a Pooling module (its ``config.json``) and whether a Normalize
    module follows; None when the folder has no ``modules.json``."""
    f = path / "modules.json"
    if not f.is_file():
        return None
    modules = read_json(f)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CorruptFile(f"{f}: not a list of module objects")
    out = Embedding(where="sentence_transformers", pooling=None, normalize=False,
                    sources={"normalize": "modules.json lists no Normalize module"})
    seen_pooling = False
    for m in sorted(modules, key=lambda m: m.get("idx", 0) if isinstance(m.get("idx"), int) else 0):
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        rel = m.get("path", "")
        if not isinstance(rel, str):
            raise CorruptFile(f"{f}: module path {rel!r} is not a string")
        if kind == efacts.ST_POOLING:
            seen_pooling = True
            cfg_file = _inside(path, rel, f) / "config.json"
            if not cfg_file.is_file():
                out.notes.append(f"{rel}/config.json is missing: pooling unknown")
                continue
            cfg = read_json(cfg_file)
            if not isinstance(cfg, dict):
                raise CorruptFile(f"{cfg_file}: not a JSON object")
            modes = [p for flag, p in efacts.ST_POOLING_FLAGS if cfg.get(flag) is True]
            mode = cfg.get("pooling_mode")
            if not modes and isinstance(mode, str):
                modes = [efacts.ST_POOLING_MODES.get(mode, mode)]
            out.pooling = "+".join(modes) if modes else None
            out.sources["pooling"] = f"{rel}/config.json " + (
                ", ".join(f"{flag}" for flag, p in efacts.ST_POOLING_FLAGS if cfg.get(flag) is True)
                or (f"pooling_mode {mode!r}" if isinstance(mode, str) else "(no pooling mode set)"))
            dim = cfg.get("word_embedding_dimension")
            out.dim = dim if isinstance(dim, int) and not isinstance(dim, bool) else None
            if len(modes) > 1:
                out.notes.append(f"several pooling modes are concatenated: {modes}")
        elif kind == efacts.ST_NORMALIZE:
            out.normalize = True
            out.sources["normalize"] = f"modules.json {m.get('name', '?')}: {m.get('type')}"
        elif kind not in ("Transformer", ""):
            out.notes.append(f"module {m.get('type')} ({rel or '.'}) is not checked")
    if not seen_pooling:
        out.pooling = "none"
        out.sources["pooling"] = "modules.json lists no Pooling module: token embeddings"
    return out
