"""torch.nn.Module backends: Hugging Face models run by transformers (local files only) and trusted pickled
modules, captured with forward hooks on every norm module and transformer block."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import NormauditError, brief
from ...extras import require
from ...facts.hf import ALL_EPS_KEYS, TEXT_CONFIG_KEYS
from ...model import NormModel
from ..base import InputHints, RunContext, Sink, as_numpy
from ..lazy import UNIT_RE, LazyWeights, params_on_meta


class ModuleRunner:
    """Any torch.nn.Module (HF model, GGUF replay, trusted pickle): forward hooks on norms and blocks."""

    deferred_local = False
    replay: Any = None

    def __init__(self, module: Any, model: NormModel, forward: Callable[[Any, dict[str, np.ndarray]], Any],
                 label: str, hints: InputHints | None = None, weights: LazyWeights | None = None) -> None:
        self.module = module
        self.weights = weights  # layer-streamed: parameters materialized one block at a time
        self.notes: list[str] = []
        self.model = model
        self.norm_ids = {n.id for n in model.norms}
        self.forward = forward
        self.label = label
        self.hints = hints or InputHints()
        names = dict(module.named_modules())
        missing = [n.id for n in model.norms if n.id not in names]
        if missing:
            raise NormauditError(f"cannot hook norm modules {missing[:3]}: not in the model",
                                 hint="the checkpoint and the model class disagree on module names")
        self.blocks = {name: f"block.{m.group(1)}" for name in names if (m := UNIT_RE.search(name))}
        self.block_names = {key: name for name, key in self.blocks.items()}

    def run(self, inputs: dict[str, np.ndarray], sink: Sink) -> None:
        import torch

        handles = []
        seen_blocks: set[str] = set()
        rerunning: list[int] = []  # set while a block is re-run on the other model's input

        def norm_hook(name: str):
            def hook(_mod: Any, args: tuple, out: Any) -> None:
                if rerunning:
                    return
                x = as_numpy(args[0]) if args else None
                y = as_numpy(out)
                if y is not None:
                    sink(name, "norm", y, x)
            return hook

        def block_hook(key: str):
            def hook(mod: Any, args: tuple, kwargs: dict, out: Any) -> None:
                if rerunning or key in seen_blocks:
                    return
                y = as_numpy(out)
                if y is None:
                    return
                seen_blocks.add(key)
                hidden = args[0] if args else kwargs.get("hidden_states")
                x = as_numpy(hidden) if hidden is not None else None

                def rerun(x_in: np.ndarray, overrides: dict[str, np.ndarray] | None = None, mod: Any = mod,
                          args: tuple = args, kwargs: dict = kwargs) -> np.ndarray:
                    """This block of this model on another input (its own masks / position embeddings), with
                    some of its parameters (``overrides``: name within the block -> value) temporarily replaced."""
                    t = torch.from_numpy(np.ascontiguousarray(x_in)).to(hidden.dtype)
                    params = dict(mod.named_parameters())
                    saved = {}
                    rerunning.append(1)
                    try:
                        with torch.no_grad():
                            for name, value in (overrides or {}).items():
                                saved[name] = params[name].detach().clone()
                                params[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))
                            if args:
                                res = mod(t, *args[1:], **kwargs)
                            else:
                                res = mod(**{**kwargs, "hidden_states": t})
                    finally:
                        with torch.no_grad():
                            for name, value in saved.items():
                                params[name].copy_(value)
                        rerunning.pop()
                    return as_numpy(res)

                rerun.block = self.block_names[key]  # type: ignore[attr-defined]

                sink(key, "block", y, x, rerun)
            return hook

        if self.weights is not None:
            self.weights.install()  # materialize each unit before it runs...
        for name, mod in self.module.named_modules():
            if name in self.norm_ids:
                handles.append(mod.register_forward_hook(norm_hook(name)))
            elif name in self.blocks:
                handles.append(mod.register_forward_hook(block_hook(self.blocks[name]), with_kwargs=True))
        if self.weights is not None:
            self.weights.install_release()  # ...and drop it after the capture hooks (and local re-runs) are done
        try:
            with torch.no_grad():
                out = self.forward(self.module, inputs)
        finally:
            for h in handles:
                h.remove()
            if self.weights is not None:
                self.weights.remove()
        y = as_numpy(out.logits if hasattr(out, "logits") else out)
        if y is not None:
            sink("output", "output", y, None)

    def add_standin(self, conv: Any, key: str) -> bool:
        return False  # a module runs its BatchNorms unfolded


# -- Hugging Face ---------------------------------------------------------------------------------------

def _transformers(model_dir: Path) -> Any:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    require("torch", f"{model_dir}: running a Hugging Face model", extra="activations")
    transformers = require("transformers", f"{model_dir}: running a Hugging Face model", extra="activations")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_hf_module(model_dir: Path, eps_override: float | None = None) -> Any:
    """A transformers model from a local directory (never the hub), eager attention, float32, all weights."""
    transformers = _transformers(model_dir)
    try:
        config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        if eps_override is not None:
            _set_config_eps(config, eps_override)
        archs = getattr(config, "architectures", None) or []
        cls = next((getattr(transformers, a) for a in archs if hasattr(transformers, a)), None)
        if cls is None:
            cls = transformers.AutoModel
        model = cls.from_pretrained(str(model_dir), config=config, local_files_only=True, dtype="float32",
                                    attn_implementation="eager")
    except NormauditError:
        raise
    except Exception as exc:
        raise NormauditError(f"{model_dir}: transformers cannot build this model ({brief(exc)})") from None
    return model.eval()


def _set_config_eps(config: Any, eps: float) -> None:
    for scope in (config, getattr(config, "text_config", None)):
        if scope is None:
            continue
        for k in ALL_EPS_KEYS:
            if isinstance(getattr(scope, k, None), float):
                setattr(scope, k, float(eps))


def hf_forward(module: Any, inputs: dict[str, np.ndarray]) -> Any:
    import torch

    kwargs = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
    if "input_ids" not in kwargs and len(kwargs) == 1:
        kwargs = {"input_ids": next(iter(kwargs.values()))}
    try:
        return module(**kwargs, use_cache=False)
    except TypeError:
        return module(**kwargs)


def module_forward(module: Any, inputs: dict[str, np.ndarray]) -> Any:
    import torch

    return module(*[torch.from_numpy(np.asarray(v)) for v in inputs.values()])


def config_vocab(model: NormModel) -> int | None:
    """vocab_size from the config.json the loader read (bounded), top level or a text sub-config."""
    cfg = model.metadata.get("config") if isinstance(model.metadata, dict) else None
    if not isinstance(cfg, dict):
        return None
    for scope in [cfg] + [cfg[k] for k in TEXT_CONFIG_KEYS if isinstance(cfg.get(k), dict)]:
        v = scope.get("vocab_size")
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def meta_module(model_dir: Path, eps_override: float | None = None, trust_remote_code: bool = False) -> Any:
    """The transformers architecture of ``model_dir`` with parameters on the meta device (no memory, no weights
    read), buffers real; eager attention, float32.  Never the hub, never remote code."""
    transformers = _transformers(model_dir)
    try:
        config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True,
                                                         trust_remote_code=trust_remote_code)
        if eps_override is not None:
            _set_config_eps(config, eps_override)
        config._attn_implementation = "eager"
        archs = getattr(config, "architectures", None) or []
        cls = next((getattr(transformers, a) for a in archs if hasattr(transformers, a)), None)
        import torch

        with params_on_meta(), torch.device("cpu"):
            module = cls(config) if cls is not None else transformers.AutoModel.from_config(
                config, trust_remote_code=trust_remote_code)
    except NormauditError:
        raise
    except Exception as exc:  # transformers raises many types for configs it cannot build
        raise NormauditError(f"{model_dir}: transformers cannot build this model ({brief(exc)})") from None
    return module.eval()


def checkpoint_source(model: NormModel) -> dict[str, Any]:
    """name -> getter over a loaded checkpoint's tensors, read on demand and not kept."""
    return {name: ref.read for name, ref in model.tensors.items()}


def hf_runner(path: Path, model: NormModel, ctx: RunContext) -> ModuleRunner:
    """A Hugging Face directory run by transformers (eager attention, float32, local files only), one block of
    weights in memory at a time; a checkpoint whose names differ from the modules' is loaded whole by
    transformers instead."""
    hints = InputHints(vocab=config_vocab(model), tokenizer_dirs=[path])
    module = meta_module(path)
    weights = LazyWeights(module, checkpoint_source(model))
    names = {n for n, _ in module.named_parameters(remove_duplicate=False)} | {n for n, _ in module.named_buffers()}
    unused = [k for k in model.tensors if k not in names]
    if weights.missing and unused:  # renamed checkpoint keys: let transformers' own loading map them
        module = load_hf_module(path)
        runner = ModuleRunner(module, model, hf_forward, f"transformers {type(module).__name__} (eager attention, "
                              "float32)", hints)
        runner.notes.append(f"{path.name}: checkpoint names differ from the module's ({unused[:2]}...): "
                            "loaded whole by transformers")
        return runner
    weights.load_buffers()
    runner = ModuleRunner(module, model, hf_forward, f"transformers {type(module).__name__} (eager attention, float32, "
                          "layer-streamed)", hints, weights)
    if weights.missing:
        runner.notes.append(f"{path.name}: {len(weights.missing)} parameters are not in the checkpoint and run as "
                            f"zeros: {weights.missing[:3]}")
    return runner


def module_runner(path: Path, model: NormModel, ctx: RunContext) -> ModuleRunner:
    """A trusted pickled nn.Module, run in this process (--trust-pickle: the user vouches for the file)."""
    torch = require("torch", f"{path}: running a PyTorch module", extra="activations")

    if model.container != "module" or not ctx.options.trust_pickle:
        raise NormauditError(f"{path}: a state_dict has no code to run", hint="use the HF dir or the .pt2")
    module = torch.load(str(path), map_location="cpu", weights_only=False)
    return ModuleRunner(module.eval(), model, module_forward, f"nn.Module {type(module).__name__}")
