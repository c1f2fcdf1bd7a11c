"""PyTorch-side formats: safetensors files, Hugging Face directories, torch.save'd state_dicts, torch.export
programs (.pt2), TorchScript archives and (only when trusted) pickled nn.Modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import CorruptFile, NormauditError, UntrustedPickle
from ...model import NormModel
from ..base import LoadOptions, Probe
from .contracts import embedding_from_dir, preprocess_from_dir
from .hf_config import read_config, read_json
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


def load_hf_dir(path: Path, trust_remote_code: bool = False) -> NormModel:
    config_file = path / "config.json"
    config = read_config(config_file) if config_file.is_file() else None
    index = path / "model.safetensors.index.json"
    if index.is_file():
        doc = read_json(index)
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict):
            raise CorruptFile(f"{index}: unreadable safetensors index (no weight_map object)")
        files = []
        for name in dict.fromkeys(weight_map.values()):
            f = (path / str(name)).resolve()
            if path.resolve() not in f.parents or not f.is_file():
                raise CorruptFile(f"{index}: shard {name!r} is missing or outside the model folder")
            files.append(f)
        refs = safetensors_refs(files)
    elif sorted(path.glob("*.safetensors")):
        refs = safetensors_refs(sorted(path.glob("*.safetensors")))
    elif (path / "pytorch_model.bin").is_file():
        refs = state_dict_refs(path / "pytorch_model.bin")
    else:
        raise NormauditError(f"{path}: directory has no model.safetensors, safetensors index or pytorch_model.bin",
                             hint="point normaudit at a Hugging Face model folder or a model file")
    model = model_from_tensors(path, "hf_dir", refs, config, path if config else None, trust_remote_code)
    model.preprocess = preprocess_from_dir(path)
    model.embedding = embedding_from_dir(path)
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
        return load_hf_dir(path, options.trust_remote_code)

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
