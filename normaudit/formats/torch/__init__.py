"""PyTorch-side formats: safetensors files, Hugging Face directories, torch.save'd state_dicts, torch.export
programs (.pt2), TorchScript archives and (only when trusted) pickled nn.Modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import CorruptFile, NormauditError, UntrustedPickle
from ...model import NormModel
from ..base import LoadOptions, Probe
from .hf_cache import REPO_PREFIX, ModelFolder, model_folder
from .contracts import embedding_from_dir, preprocess_from_dir
from .hf_config import MAX_INDEX_BYTES, read_config, read_json
from .names import model_from_tensors
from .pickle_guard import require_trust, state_dict_refs
from .tensors import safetensors_refs


def _config_for(path: Path, config_path: Path | None) -> tuple[dict[str, Any] | None, Path | None]:
    """(config, the folder holding it) for a bare checkpoint: --config, else a config.json beside the file."""
    if config_path:
        return read_config(config_path), config_path.parent
    beside = path.parent / "config.json"
    return (read_config(beside), path.parent) if beside.is_file() else (None, None)


def load_safetensors(path: Path, config_path: Path | None = None, trust_remote_code: bool = False) -> NormModel:
    config, where = _config_for(path, config_path)
    return model_from_tensors(path, "safetensors", safetensors_refs([path]), config, where, trust_remote_code)


def _shards(folder: ModelFolder, index_name: str) -> list[Path]:
    """The shard files an index's weight_map names, each resolved inside the model folder, in order."""
    index = folder.file(index_name, "shard index")
    doc = read_json(index, MAX_INDEX_BYTES)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise CorruptFile(f"{folder.dir / index_name}: unreadable shard index (no weight_map object)")
    bad = next((v for v in weight_map.values() if not isinstance(v, str)), None)
    if bad is not None:
        raise CorruptFile(f"{folder.dir / index_name}: shard {repr(bad)[:60]} is not a file name in the model folder")
    files = []
    for name in dict.fromkeys(weight_map.values()):
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise CorruptFile(f"{folder.dir / index_name}: shard {name!r} is not a file name in the model folder")
        files.append(folder.file(name, f"shard {name!r} of {index_name}"))
    return files


def load_hf_dir(path: Path, revision: str | None = None, trust_remote_code: bool = False) -> NormModel:
    """A Hugging Face model folder: plain, a hub-cache ``models--org--name`` folder (at ``revision``, refs/main
    or the newest snapshot) or one of its snapshots; every file it reads resolves inside the folder (for the
    cache: inside ``models--org--name``, where the snapshot's symlinks point)."""
    folder = model_folder(path, revision)
    config = read_config(folder.file("config.json", "config.json")) if folder.has("config.json") else None
    if folder.has("model.safetensors.index.json"):
        refs = safetensors_refs(_shards(folder, "model.safetensors.index.json"))
    elif folder.glob("*.safetensors"):
        refs = safetensors_refs([folder.file(n, "safetensors file") for n in folder.glob("*.safetensors")])
    elif folder.has("pytorch_model.bin.index.json"):
        refs = {}
        for shard in _shards(folder, "pytorch_model.bin.index.json"):
            refs.update(state_dict_refs(shard))
    elif folder.has("pytorch_model.bin"):
        refs = state_dict_refs(folder.file("pytorch_model.bin", "pytorch_model.bin"))
    else:
        repos = sorted(p.name for p in path.glob(REPO_PREFIX + "*"))[:5] if path.is_dir() else []
        raise NormauditError(
            f"{folder.dir}: directory has no model.safetensors, safetensors index, pytorch_model.bin or .bin index",
            hint=("a Hugging Face cache: point normaudit at one model folder, e.g. " + path.name + "/" + repos[0]
                  if repos else "point normaudit at a Hugging Face model folder or a model file"))
    where = folder.dir if folder.how else path
    model = model_from_tensors(where, "hf_dir", refs, config, folder.dir if config else None, trust_remote_code)
    if folder.how:
        model.notes.append(f"Hugging Face cache: {folder.how}")
    model.preprocess = preprocess_from_dir(folder.dir)
    model.embedding = embedding_from_dir(folder.dir)
    return model


def load_state_dict(path: Path, config_path: Path | None = None, trust_pickle: bool = False,
                    trust_remote_code: bool = False) -> NormModel:
    try:
        refs = state_dict_refs(path)
    except UntrustedPickle:
        if not trust_pickle:
            raise
        from .modules import load_pickled_module

        return load_pickled_module(path)
    config, where = _config_for(path, config_path)
    return model_from_tensors(path, "state_dict", refs, config, where, trust_remote_code)


def _zip_kind(probe: Probe) -> str | None:
    """torch_export / torchscript / torch_save for a PyTorch zip archive, else None."""
    names = probe.zip_names
    if any(n.endswith("serialized_exported_program.json") or ("/models/" in n and n.endswith(".json"))
           for n in names):
        return "torch_export"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "torch_save"
    return None


class SafetensorsFormat:
    name = "safetensors"
    family = "pytorch"
    description = "safetensors file (config.json beside it is used)"

    def sniff(self, probe: Probe) -> bool:
        head = probe.head
        return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < probe.size

    def load(self, path: Path, options: LoadOptions) -> NormModel:
        return load_safetensors(path, options.config, options.trust_remote_code)

    def runner(self, path: Path, model: NormModel, ctx: Any) -> Any:
        raise NormauditError(f"{path}: a safetensors file has no code to run",
                             hint="diff its Hugging Face directory (config.json + weights) instead")


class HfDirFormat:
    name = "hf"
    family = "pytorch"
    description = "Hugging Face model directory"

    def sniff(self, probe: Probe) -> bool:
        return probe.is_dir

    def load(self, path: Path, options: LoadOptions) -> NormModel:
        return load_hf_dir(path, options.revision, options.trust_remote_code)

    def runner(self, path: Path, model: NormModel, ctx: Any) -> Any:
        from ...activations.runners.hf import hf_runner

        return hf_runner(path, model, ctx)


class StateDictFormat:
    name = "state_dict"
    family = "pytorch"
    description = "torch.save'd state_dict (.pt/.pth/.bin)"

    def sniff(self, probe: Probe) -> bool:
        if probe.is_zip:
            return _zip_kind(probe) == "torch_save"
        return probe.head[:1] == b"\x80" and len(probe.head) > 1 and probe.head[1] <= 5  # legacy pickle

    def load(self, path: Path, options: LoadOptions) -> NormModel:
        return load_state_dict(path, options.config, options.trust_pickle, options.trust_remote_code)

    def runner(self, path: Path, model: NormModel, ctx: Any) -> Any:
        from ...activations.runners.hf import module_runner

        return module_runner(path, model, ctx)


class Pt2Format:
    name = "pt2"
    family = "pytorch"
    description = "torch.export program (.pt2)"

    def sniff(self, probe: Probe) -> bool:
        return probe.is_zip and _zip_kind(probe) == "torch_export"

    def load(self, path: Path, options: LoadOptions) -> NormModel:
        from .export import load_export

        return load_export(path, options.trust_pickle)

    def runner(self, path: Path, model: NormModel, ctx: Any) -> Any:
        from ...activations.runners.export import export_runner

        return export_runner(path, model, ctx)


class TorchScriptFormat:
    name = "torchscript"
    family = "pytorch"
    description = "TorchScript archive"

    def sniff(self, probe: Probe) -> bool:
        return probe.is_zip and _zip_kind(probe) == "torchscript"

    def load(self, path: Path, options: LoadOptions) -> NormModel:
        from .modules import load_torchscript

        return load_torchscript(path)

    def runner(self, path: Path, model: NormModel, ctx: Any) -> Any:
        raise NormauditError(f"{path}: activation capture is not supported for TorchScript archives",
                             hint="diff the .pt2 export or the source module instead (static compare works)")


class PickleFormat:
    name = "pickle"
    family = "pytorch"
    description = "pickled nn.Module (needs --trust-pickle)"

    def sniff(self, probe: Probe) -> bool:
        return False  # a pickle is never opened by detection: --format pickle --trust-pickle

    def load(self, path: Path, options: LoadOptions) -> NormModel:
        require_trust(path, options.trust_pickle)
        from .modules import load_pickled_module

        return load_pickled_module(path)

    def runner(self, path: Path, model: NormModel, ctx: Any) -> Any:
        from ...activations.runners.hf import module_runner

        return module_runner(path, model, ctx)
