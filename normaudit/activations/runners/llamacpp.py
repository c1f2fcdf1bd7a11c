"""llama.cpp itself as an activation backend: the GGUF run by the real runtime, not replayed.

The file is loaded with llama-cpp-python's low-level API; the input tokens are decoded in one ubatch with
logits requested for every token, and intermediate tensors are captured through the scheduler's eval callback
(``cb_eval``): the scheduler first asks whether a tensor is wanted (``ask=True``), computes up to it, then
calls again with the data.  Names and data are read through the ggml library llama-cpp-python ships
(``ggml_get_name``, ``ggml_backend_tensor_get``, the public head of ``struct ggml_tensor`` for ``ne`` / ``nb``).

Only the tensors of :mod:`normaudit.facts.llamacpp` are asked for, so the graph is computed in the same
fused kernels as an uninstrumented run except where a captured tensor ends a kernel group.

llama-cpp-python is optional (``pip install 'normaudit[llamacpp]'``): nothing here imports it until a
runner is built.
"""

from __future__ import annotations

import ctypes
import os
import re
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import NormauditError, brief
from ...facts import llamacpp as facts
from ...kernels import rel_l2_error
from ...model import NormModel
from ..base import InputHints, RunContext, Sink
from ..lazy import UNIT_CONTAINERS

_NAME_RE = re.compile(r"^(?P<base>[A-Za-z_]+?)(?:-(?P<bid>\d+))?$")
_STATE: dict[str, Any] = {}  # the loaded libraries and the log callback (kept alive for the process)

# ggml's public tensor header (ggml.h, GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64, GGML_MAX_SRC 10, GGML_MAX_NAME 64)
_GGML_MAX_SRC = 10


class _TensorHead(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * _GGML_MAX_SRC), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64)]


def require() -> Any:
    """The llama_cpp module, or one line saying how to install it (:class:`normaudit.extras.MissingExtra`)."""
    from ...extras import require as require_extra

    try:
        return require_extra("llama_cpp", "the llama.cpp backend (llama-cpp-python)", "llamacpp")
    except (OSError, RuntimeError) as exc:  # installed, but its compiled library does not load
        raise NormauditError(f"llama-cpp-python is installed but its llama.cpp library does not load "
                             f"({brief(exc)})", hint=f"reinstall it: {facts.INSTALL_HINT}") from None


def available() -> bool:
    """True when llama-cpp-python imports (the backend can run)."""
    try:
        require()
    except NormauditError:
        return False
    return True


def _lib() -> tuple[Any, Any]:
    """(llama_cpp, the ggml library with the functions this module calls), loaded and quietened once."""
    if "llama" in _STATE:
        return _STATE["llama"], _STATE["ggml"]
    llama_cpp = require()
    from llama_cpp._ggml import libggml as g

    g.ggml_get_name.restype, g.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    g.ggml_nbytes.restype, g.ggml_nbytes.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    g.ggml_op_desc.restype, g.ggml_op_desc.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    g.ggml_backend_tensor_get.restype = None
    g.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    if not os.environ.get("NORMAUDIT_DEBUG"):
        tail: deque[str] = deque(maxlen=50)

        def _keep(level: int, text: bytes, user_data: Any) -> None:  # quiet, but keep the tail for errors
            try:
                tail.append((text or b"").decode("utf-8", "replace"))
            except Exception:  # never raise into C
                pass
        _STATE["log"] = llama_cpp.llama_log_callback(_keep)
        _STATE["log_tail"] = tail
        llama_cpp.llama_log_set(_STATE["log"], None)
    llama_cpp.llama_backend_init()
    _STATE["llama"], _STATE["ggml"] = llama_cpp, g
    return llama_cpp, g


def _log_error() -> str:
    """llama.cpp's last logged error line (its reason for a failed load), or ''."""
    lines = "".join(_STATE.get("log_tail", ())).splitlines()
    errors = [ln.split(": ", 1)[-1].strip() for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
    return errors[0] if errors else ""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("llama_cpp_python")
    except Exception:  # not installed from a distribution (a source checkout)
        return "?"


# -- tensors ---------------------------------------------------------------------------------------------

def _ggml_types() -> dict[int, Any]:
    from gguf.constants import GGMLQuantizationType as T

    return {int(T.F32): np.float32, int(T.F16): np.float16, int(T.BF16): "bf16"}


def read_tensor(g: Any, t: int) -> np.ndarray | None:
    """A ggml tensor's values as float32 numpy in ggml's reversed order (``ne[3], ne[2], ne[1], ne[0]``),
    honouring its strides (views, permutes); None for quantized or integer tensors."""
    head = _TensorHead.from_address(t)
    dtype = _ggml_types().get(head.type)
    if dtype is None:
        return None
    nbytes = int(g.ggml_nbytes(t))
    raw = np.empty(nbytes, dtype=np.uint8)
    g.ggml_backend_tensor_get(t, raw.ctypes.data, 0, nbytes)
    itemsize = 2 if dtype in (np.float16, "bf16") else 4
    shape = tuple(int(head.ne[i]) for i in (3, 2, 1, 0))
    strides = tuple(int(head.nb[i]) for i in (3, 2, 1, 0))
    elem = np.uint16 if dtype == "bf16" else dtype
    arr = np.lib.stride_tricks.as_strided(raw.view(elem)[: max(nbytes // itemsize, 1)], shape,
                                          strides, writeable=False)
    if dtype == "bf16":
        return (arr.astype(np.uint32) << 16).view(np.float32).copy()
    return np.array(arr, dtype=np.float32)


def to_layout(arr: np.ndarray, layout: str, n_tokens: int) -> np.ndarray | None:
    """ggml-ordered ``[1, 1, T, width]`` / ``[1, T, heads, dim]`` as the source's ``[1, T, width]`` /
    ``[1, T, heads, dim]`` (tokens in rows, batch first); None when the rows are not the input tokens."""
    if layout == "heads":
        if arr.shape[1] != n_tokens:
            return None
        return arr.reshape((1,) + arr.shape[1:])
    rows = arr.reshape(-1, arr.shape[-1])
    if rows.shape[0] != n_tokens:
        return None
    return rows.reshape(1, n_tokens, arr.shape[-1])


# -- the runner ------------------------------------------------------------------------------------------

@dataclass
class Capture:
    """What one decode saw: the ops of the graph, the wanted names in graph order, the keys handed on."""

    ops: set[str] = field(default_factory=set)
    names: list[str] = field(default_factory=list)  # every wanted runtime name seen, in order
    keys: set[str] = field(default_factory=set)  # the keys handed on
    skipped: list[str] = field(default_factory=list)  # wanted but not handed on (rows, dtype, a repeated name)
    error: BaseException | None = None


class LlamaCppRunner:
    """A GGUF run by llama.cpp (CPU): norm outputs, block outputs and logits through the eval callback.

    Keys are the GGUF's own norm ids (``blk.3.attn_norm``), ``block.N`` and ``output``: the driver lines them
    up with the other side's norms through :func:`normaudit.match.align` (gguf-py's TensorNameMap)."""

    deferred_local = False
    replay: Any = None  # the GGUF's tensors mapped to the source's (when the source is known): weight errors
    weights: Any = None  # MeasuredWeights (when the source is known)
    runtime = True  # the attribution layer looks for this
    blocks: dict[str, str] = {}  # no block modules: never run in lockstep with a module runner

    def __init__(self, path: Path, model: NormModel, n_threads: int | None = None, kv_cache: str = "f32",
                 flash_attention: str = "off") -> None:
        llama_cpp, _ = _lib()
        self.path = Path(path)
        self.model = model
        self.arch = model.architecture or ""
        self.points = facts.runtime_points(self.arch)
        self.n_threads = n_threads or max(1, min(4, os.cpu_count() or 1))
        self.kv_cache = kv_cache
        self.fa_setting = flash_attention
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        _STATE.get("log_tail", []).clear()
        handle = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not handle:
            why = _log_error()
            raise NormauditError(f"{self.path}: llama.cpp cannot load this GGUF (architecture {self.arch!r}"
                                 + (f": {why})" if why else ")"), hint="NORMAUDIT_DEBUG=1 shows llama.cpp's log")
        self._model = handle
        self._finalizer = weakref.finalize(self, llama_cpp.llama_model_free, handle)
        vocab = llama_cpp.llama_model_get_vocab(handle)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.hints = InputHints(vocab=self.n_vocab)
        self.flash_attention: bool | None = None
        self.notes: list[str] = []
        if self.arch not in facts.VERIFIED_ARCHS:
            self.notes.append(f"llama.cpp runtime names for {self.arch!r} are llama.cpp's usual ones, not verified "
                              "on this architecture: norms not captured are listed")
        self.last: Capture | None = None

    @property
    def label(self) -> str:
        fa = {True: "flash attention", False: "no flash attention", None: "attention kernel not yet known"}
        return (f"llama.cpp runtime via llama-cpp-python {_version()} ({self.arch}, CPU, {self.n_threads} threads, "
                f"{self.kv_cache.upper()} KV cache, {fa[self.flash_attention]}, logits for every token)")

    @property
    def weight_class(self) -> str:
        """F32, F16 or quantized: the lowest precision of the file's matrices (what the runtime's matmuls
        round activations to follows from it)."""
        gf = getattr(self.model, "handle", None)
        types = {t.type_name for t in getattr(gf, "tensors", {}).values() if len(t.shape) >= 2}
        if types - {"F32", "F64", "F16", "BF16"}:
            return "quantized"
        return "F16" if types & {"F16", "BF16"} else "F32"

    def close(self) -> None:
        self._finalizer()

    # -- inputs ------------------------------------------------------------------------------------------

    def _tokens(self, feeds: dict[str, np.ndarray]) -> list[int]:
        ids = feeds.get("input_ids")
        if ids is None:
            ints = [v for v in feeds.values() if np.asarray(v).dtype.kind in "iu"]
            if len(ints) != 1:
                raise NormauditError(f"{self.path}: the llama.cpp backend runs token ids: give input_ids",
                                     hint="--input FILE.npz with input_ids, or --text")
            ids = ints[0]
        ids = np.asarray(ids)
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1 or ids.size == 0:
            raise NormauditError(f"{self.path}: the llama.cpp backend runs one sequence: input_ids must be [1, T], "
                                 f"not {list(np.asarray(feeds.get('input_ids', ids)).shape)}")
        mask = feeds.get("attention_mask")
        if mask is not None and not np.all(np.asarray(mask) == 1):
            raise NormauditError(f"{self.path}: the llama.cpp backend runs one unpadded sequence: "
                                 "attention_mask must be all ones")
        bad = ids[(ids < 0) | (ids >= self.n_vocab)]
        if bad.size:
            raise NormauditError(f"{self.path}: token id {int(bad[0])} is outside the GGUF vocabulary "
                                 f"({self.n_vocab} tokens)")
        return [int(i) for i in ids]

    # -- the decode --------------------------------------------------------------------------------------

    def _key(self, name: str) -> tuple[str, str, str] | None:
        """(key, kind, layout) of a wanted runtime tensor name, or None."""
        m = _NAME_RE.match(name)
        if m is None:
            return None
        point = self.points.get(m.group("base"))
        if point is None:
            return None
        bid = m.group("bid")
        if point.kind == "block":
            return (f"block.{bid}", "block", point.layout) if bid is not None else None
        if point.kind == "output":
            return "output", "output", point.layout
        from gguf.constants import MODEL_TENSOR, TENSOR_NAMES

        template = TENSOR_NAMES.get(getattr(MODEL_TENSOR, point.tensor or "", None))
        if template is None or ("{bid}" in template) != (bid is not None):
            return None
        return template.format(bid=bid) if bid is not None else template, "norm", point.layout

    def decode(self, tokens: list[int], on_point: Any) -> Capture:
        """Decode ``tokens`` in one ubatch and call ``on_point(key, kind, array, norm_input)`` for every wanted
        tensor as the graph computes it; the logits last."""
        llama_cpp, g = _lib()
        n = len(tokens)
        cap = Capture()

        def callback(t: int, ask: bool, _user: Any) -> bool:
            try:
                name = (g.ggml_get_name(t) or b"").decode("utf-8", "replace")
                if ask:
                    cap.ops.add((g.ggml_op_desc(t) or b"").decode("ascii", "replace"))
                    return self._key(name) is not None
                key, kind, layout = self._key(name)  # type: ignore[misc]
                cap.names.append(name)
                if key in cap.keys:  # a name reported again (never seen on the corpus): the first one counts
                    cap.skipped.append(f"{name} (again)")
                    return True
                arr = read_tensor(g, t)
                out = to_layout(arr, layout, n) if arr is not None else None
                if out is None:
                    cap.skipped.append(name)
                    return True
                x = self._norm_input(g, t, layout, n) if kind == "norm" else None
                cap.keys.add(key)
                on_point(key, kind, out, x)
                return True
            except BaseException as exc:  # never let an exception cross the C boundary: stop the graph instead
                cap.error = exc
                return False

        cb = llama_cpp.ggml_backend_sched_eval_callback(callback)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = max(n, 8)
        cparams.n_batch = cparams.n_ubatch = max(n, 1)
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        cparams.embeddings = False
        kv = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16}[self.kv_cache]
        cparams.type_k = cparams.type_v = kv
        cparams.flash_attn_type = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                                   "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}[self.fa_setting]
        cparams.cb_eval = cb
        cparams.cb_eval_user_data = None
        ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not ctx:
            raise NormauditError(f"{self.path}: llama.cpp cannot create a context for {n} tokens")
        batch = llama_cpp.llama_batch_init(n, 0, 1)
        try:
            for i, tok in enumerate(tokens):
                batch.token[i] = tok
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1  # every token: the last block's l_out then holds every row
            batch.n_tokens = n
            rc = llama_cpp.llama_decode(ctx, batch)
            if cap.error is not None:
                raise cap.error
            if rc != 0:
                raise NormauditError(f"{self.path}: llama.cpp failed to decode the input (llama_decode returned {rc})")
            if "output" not in cap.keys:  # an architecture whose logits tensor has another name
                ptr = llama_cpp.llama_get_logits(ctx)
                logits = np.ctypeslib.as_array(ptr, shape=(n * self.n_vocab,)).astype(np.float32)
                on_point("output", "output", logits.reshape(1, n, self.n_vocab), None)
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_free(ctx)
        self.flash_attention = "FLASH_ATTN_EXT" in cap.ops
        self.last = cap
        if cap.skipped:
            self.notes.append(f"{self.path.name}: runtime tensors not compared: {sorted(set(cap.skipped))[:6]} "
                              "(not one row per input token, not float, or reported twice)")
        return cap

    def _norm_input(self, g: Any, t: int, layout: str, n: int) -> np.ndarray | None:
        """The tensor a captured norm output read: ``src[0]`` of the bare norm op under the weight multiply
        (and bias add).  Read only when its memory is not shared with the ops computed after it (in-place)."""
        chain = [t]
        node = _TensorHead.from_address(t)
        for _ in range(3):  # out = ((norm(x) * w) + b): walk down to the NORM / RMS_NORM op
            src = node.src[0]
            if not src:
                return None
            desc = (g.ggml_op_desc(src) or b"").decode("ascii", "replace")
            chain.append(src)
            node = _TensorHead.from_address(src)
            if desc in ("RMS_NORM", "NORM"):
                x = node.src[0]
                if not x:
                    return None
                if any(self._overlaps(g, x, c) for c in chain):
                    return None  # computed in place over its input: the input is gone
                arr = read_tensor(g, x)
                return to_layout(arr, layout, n) if arr is not None else None
        return None

    @staticmethod
    def _overlaps(g: Any, a: int, b: int) -> bool:
        ha, hb = _TensorHead.from_address(a), _TensorHead.from_address(b)
        if not ha.data or not hb.data:
            return True
        a0, b0 = int(ha.data), int(hb.data)
        return a0 < b0 + int(g.ggml_nbytes(b)) and b0 < a0 + int(g.ggml_nbytes(a))

    def run(self, feeds: dict[str, np.ndarray], sink: Sink) -> None:
        tokens = self._tokens(feeds)
        self.decode(tokens, lambda key, kind, out, x: sink(key, kind, out, x, None))

    def add_standin(self, conv: Any, key: str) -> bool:
        return False  # no BatchNorm folds in a GGUF

    def uncaptured_norms(self) -> list[str]:
        """Norm records of the GGUF that the last decode produced no point for."""
        if self.last is None:
            return []
        return [n.id for n in self.model.norms if n.id not in self.last.keys]


class MeasuredWeights:
    """Each GGUF tensor against its source tensor (dequantized, the converter's transforms undone: the replay's
    getters), measured on first use and one tensor at a time: what the verdict needs to tell quantization
    drift from a bug when the runtime, not a replay, ran the file."""

    def __init__(self, gt: Any, reference: dict[str, Any]) -> None:
        self.gt = gt
        self.reference = reference
        self._stats: list[Any] | None = None

    @property
    def stats(self) -> list[Any]:
        if self._stats is None:
            from ..lazy import WeightStat

            self._stats = []
            for name, (_, getter, qtype) in self.gt.mapping.items():
                if name not in self.reference:
                    continue
                value, ref = getter(), self.reference[name]()
                if value.shape != ref.shape:
                    continue
                m = _UNIT_RE.match(name)
                self._stats.append(WeightStat(name, qtype, rel_l2_error(ref, value), m.group(1) if m else ""))
        return self._stats


_UNIT_RE = re.compile(rf"^(.*?(?:{UNIT_CONTAINERS})\.\d+)\.")

#: GGUF tensor types a reference GGUF may hold for its tensors to count as the source values
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


def measure_against_gguf(runner: "LlamaCppRunner", reference: NormModel) -> bool:
    """Without the HF source, B's tensors are measured against a float GGUF of the same model (A, in a GGUF vs GGUF
    run: the f32 file and its quantization), tensor by tensor under the same GGUF names; True if any was."""
    from .replay import open_gguf

    if runner.weights is not None or reference.format_name != "gguf" or reference.handle is None:
        return False
    fb, fa = runner.model.handle, reference.handle
    gt = open_gguf(fb)
    for name, t in fb.tensors.items():
        ta = fa.tensors.get(name)
        if ta is None or ta.type_name not in FLOAT_TYPES or tuple(ta.shape) != tuple(t.shape):
            continue
        gt.mapping[name] = (name, (lambda n=name: fb.read(n)), t.type_name)
    if not gt.mapping:
        return False
    runner.replay = gt
    runner.weights = MeasuredWeights(gt, {n: (lambda n=n: fa.read(n)) for n in gt.mapping})
    runner.notes.append(f"{Path(runner.model.path).name}: each tensor measured against "
                        f"{Path(reference.path).name}'s float tensor of the same name ({len(gt.mapping)} tensors)")
    return True


def llamacpp_runner(path: Path, model: NormModel, ctx: RunContext, **options: Any) -> LlamaCppRunner:
    """The llama.cpp runtime for a GGUF (needs llama-cpp-python); ``options``: :class:`LlamaCppRunner`'s.

    With the source model at hand (the HF side, or --model) each GGUF tensor's own error against it is measured
    too, as for a replay (the verdict tells quantization drift from a bug with it)."""
    runner = LlamaCppRunner(path, model, **options)
    if ctx.source_dir is not None:
        from ...formats.registry import load
        from .hf import checkpoint_source
        from .replay import map_tensors, open_gguf

        runner.hints.tokenizer_dirs = [ctx.source_dir]
        source = ctx.source_model if ctx.source_model is not None else load(ctx.source_dir)
        reference = checkpoint_source(source)
        gt = open_gguf(model.handle)
        map_tensors(gt, list(reference))
        gt.unmapped_gguf = []  # the runtime uses every tensor: no "not used by the replay" note
        runner.replay, runner.weights = gt, MeasuredWeights(gt, reference)
    return runner


# -- tokenization ----------------------------------------------------------------------------------------

def gguf_tokenize(path: Path, text: str) -> tuple[list[int], set[int], list[str]]:
    """``text`` tokenized by the GGUF's own vocabulary (a ``vocab_only`` load: no weights read), with special
    tokens added as the GGUF says and special-token text parsed, like a HF tokenizer call.

    Returns (ids, the ids of control tokens, each id's piece)."""
    llama_cpp, _ = _lib()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    handle = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not handle:
        raise NormauditError(f"{path}: llama.cpp cannot load this GGUF's vocabulary")
    try:
        vocab = llama_cpp.llama_model_get_vocab(handle)
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, True, True)
        if n < 0:  # the buffer was too small: -n tokens needed
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, True, True)
        if n < 0:
            raise NormauditError(f"{path}: llama.cpp failed to tokenize the text")
        ids = [int(i) for i in buf[:n]]
        control = {i for i in set(ids) if llama_cpp.llama_vocab_is_control(vocab, i)}
        pieces = []
        piece = ctypes.create_string_buffer(256)
        for i in ids:
            k = llama_cpp.llama_token_to_piece(vocab, i, piece, 256, 0, True)
            pieces.append(piece.raw[: max(k, 0)].decode("utf-8", "replace"))
        return ids, control, pieces
    finally:
        llama_cpp.llama_model_free(handle)
