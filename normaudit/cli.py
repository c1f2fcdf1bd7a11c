"""The ``normaudit`` command line: thin wiring over the Python API (options -> api -> renderers)."""

from __future__ import annotations

import inspect as pyinspect
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup
from rich.text import Text

from . import __version__
from .api import AuditOptions, audit, inspect as inspect_model
from .checks import REGISTRY as CHECK_REGISTRY
from .config import load_thresholds
from .facts.llamacpp import BACKENDS
from .errors import NormauditError
from .extras import from_import_error
from .formats import FORMATS
from .report import renderers as report_renderers
from .report.baseline import render as render_baseline
from .report.console import progress_display
from .report.document import inspect_document
from .report.github import annotations
from .report.jsonout import clean, write_json
from .report.table import compare_view, inspect_caption, inspect_view, verdict_line

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _HelpFlag:
    """-h/--help is a flag: shown without a value type (typer would print ``<bool>``)."""

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)  # type: ignore[misc]
        if opt is not None:
            opt.metavar = ""
        return opt


class _Command(_HelpFlag, TyperCommand):
    pass


class _Group(_HelpFlag, TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    name="normaudit",
    help="Audit model conversions (PyTorch -> ONNX, HF -> GGUF, float -> quantized) through their "
         "normalization layers.\n\nExit codes: 0 pass, 1 findings, 2 usage or load error.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err_console = Console(stderr=True)


def _out_console() -> Console:
    """stdout console; in logs (not a terminal) $COLUMNS wide, else 200 so tables stay on one line."""
    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(width=200)


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7f]}


def _fail(message: str) -> None:
    # one line, whatever a hostile file put into the names the message quotes (newlines, escape sequences)
    message = message.translate(_CONTROL)
    err_console.print(f"normaudit: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


@contextmanager
def _errors() -> Iterator[None]:
    """Every failure is one line on stderr and exit 2 (NORMAUDIT_DEBUG=1 shows the traceback)."""
    try:
        yield
    except typer.Exit:
        raise
    except NormauditError as exc:
        _fail(exc.line())
    except KeyboardInterrupt:
        _fail("interrupted")
    except ImportError as exc:  # an optional dependency some path imported without extras.require
        missing = from_import_error(exc, "this command")
        if missing is None:
            if os.environ.get("NORMAUDIT_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set NORMAUDIT_DEBUG=1 for the traceback)")
        _fail(missing.line())
    except Exception as exc:  # never a traceback for users
        if os.environ.get("NORMAUDIT_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set NORMAUDIT_DEBUG=1 for the traceback)")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normaudit {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                                          help="Show the version and exit.")] = False,
) -> None:
    """normaudit: find what a conversion broke in the norm layers."""


def _with_outputs(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add a ``--<name> FILE`` option for every file renderer of ``kind`` documents (report.renderers); the
    command receives them in ``**outputs``."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = pyinspect.signature(fn, eval_str=True)
        params = [p for p in sig.parameters.values() if p.kind is not pyinspect.Parameter.VAR_KEYWORD]
        for r in report_renderers.for_document(kind):
            params.append(pyinspect.Parameter(
                f"output_{r.name}", pyinspect.Parameter.KEYWORD_ONLY, default=None,
                annotation=Annotated[Optional[str], typer.Option(f"--{r.name}", help=r.help_on(kind), metavar="FILE")]))
        fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return fn
    return deco


def _write_outputs(doc: dict[str, Any], outputs: dict[str, Any]) -> None:
    for key, target in outputs.items():
        if target is not None:
            report_renderers.write(report_renderers.get(key[len("output_"):]), doc, target)


FormatOpt = Annotated[Optional[str], typer.Option(
    "--format", "-f", metavar="FORMAT",
    help="Force the input format instead of detecting it: " + ", ".join(FORMATS) + ".")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-pickle", metavar="", help="Allow unpickling full nn.Modules. Unpickling runs code from the file: only "
                                       "for files you trust.")]
ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", metavar="CONFIG.json", help="HF config.json for a bare state_dict or safetensors file (eps and "
                                            "architecture).")]
RevisionOpt = Annotated[Optional[str], typer.Option(
    "--revision", metavar="REF", help="Hugging Face cache folder (models--org--name): the ref or commit to open "
                                      "(default refs/main, else the newest snapshot).")]
JsonOpt = Annotated[Optional[str], typer.Option(
    "--json", help="Write the JSON report to FILE, or '-' for stdout (then nothing else goes to stdout).",
    metavar="FILE|-")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="Print only the verdict; no progress.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", metavar="",
                                          help="Also print every aligned pair and activation point.")]
InspectQuietOpt = Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="Print only the counts; no progress.")]
InspectVerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", metavar="",
                                                 help="Also print where each eps was read.")]


def _print(console: Console, items: list[Any]) -> None:
    for item in items:
        if isinstance(item, Text) and item.plain in ("findings", "activations"):
            console.print()
        # Text is wrapped by the view already (names never cut); tables and groups are laid out by rich
        console.print(item, soft_wrap=isinstance(item, Text))


@app.command(cls=_Command)
@_with_outputs("inspect")
def inspect(
    model: Annotated[str, typer.Argument(help="Model file or Hugging Face directory.", metavar="MODEL")],
    format: FormatOpt = None,
    trust_pickle: TrustOpt = False,
    config: ConfigOpt = None,
    revision: RevisionOpt = None,
    json_out: JsonOpt = None,
    no_stats: Annotated[bool, typer.Option("--no-stats", metavar="",
                                           help="Do not read weights for min/mean/max.")] = False,
    quiet: InspectQuietOpt = False,
    verbose: InspectVerboseOpt = False,
    **outputs: Any,
) -> None:
    """List every norm layer of MODEL: kind, eps and where it came from, shape, dtype, weight stats."""
    with _errors():
        with progress_display(err_console, enabled=not quiet) as progress:
            m = inspect_model(model, format, trust_pickle=trust_pickle, config=config, revision=revision,
                              progress=progress)
            files = json_out is not None or any(v is not None for v in outputs.values())
            doc = clean(inspect_document(m, stats=not no_stats, progress=progress if files else None, files=files))
        if json_out is not None:
            write_json(doc, json_out)
        _write_outputs(doc, outputs)
        if json_out != "-":
            console = _out_console()
            if quiet:
                console.print(Text(inspect_caption(doc)), soft_wrap=True)
            else:
                _print(console, inspect_view(doc, console.width, verbose))
                for note in m.notes:
                    err_console.print(f"note: {note}", markup=False, highlight=False)
    raise typer.Exit(EXIT_OK)


@app.command(cls=_Command)
@_with_outputs("compare")
def compare(
    a: Annotated[str, typer.Argument(help="Source model (file or HF directory).", metavar="A")],
    b: Annotated[str, typer.Argument(help="Converted model (file or HF directory).", metavar="B")],
    format_a: Annotated[Optional[str], typer.Option("--format-a", metavar="FORMAT", help="Force A's format.")] = None,
    format_b: Annotated[Optional[str], typer.Option("--format-b", metavar="FORMAT", help="Force B's format.")] = None,
    config_a: Annotated[Optional[str], typer.Option("--config-a", metavar="CONFIG.json",
                                                    help="HF config.json for a bare A.")] = None,
    config_b: Annotated[Optional[str], typer.Option("--config-b", metavar="CONFIG.json",
                                                    help="HF config.json for a bare B.")] = None,
    revision_a: Annotated[Optional[str], typer.Option(
        "--revision-a", metavar="REF", help="A is a Hugging Face cache folder: the ref or commit to open.")] = None,
    revision_b: Annotated[Optional[str], typer.Option(
        "--revision-b", metavar="REF", help="B is a Hugging Face cache folder: the ref or commit to open.")] = None,
    trust_pickle: TrustOpt = False,
    json_out: JsonOpt = None,
    fail_on: Annotated[Optional[str], typer.Option(
        "--fail-on", metavar="error|warning", help="Lowest severity that fails (exit 1): error (default) or "
                                                   "warning.")] = None,
    eps_rtol: Annotated[Optional[float], typer.Option(
        "--eps-rtol", metavar="X", help="Relative eps difference allowed (default 1e-5).")] = None,
    rel_l2: Annotated[Optional[float], typer.Option(
        "--rel-l2", metavar="X", help="One weight tolerance (relative L2) for every dtype, instead of the per-dtype "
                                      "table.")] = None,
    fold_rel_l2: Annotated[Optional[float], typer.Option(
        "--fold-rel-l2", metavar="X", help="Tolerance for folded conv weights (default 2e-6).")] = None,
    settings: Annotated[Optional[str], typer.Option(
        "--settings", metavar="FILE", help="Thresholds file (normaudit.toml or a pyproject.toml with "
                                           "\\[tool.normaudit]); by default one in the working directory is used.")
    ] = None,
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", metavar="FILE", help="Suppress the findings this baseline records (reported as suppressed, "
                                           "never failing); entries that no longer occur are flagged.")] = None,
    write_baseline: Annotated[Optional[str], typer.Option(
        "--write-baseline", metavar="FILE", help="Record the current findings in a baseline FILE (fill in each "
                                                 "'reason'), then apply it; reasons of entries already in --baseline "
                                                 "are kept.")] = None,
    activations: Annotated[bool, typer.Option(
        "--activations", metavar="", help="Also run both models on the same input and diff norm and block outputs "
                                          "layer by layer; fails on what quantization cannot explain (a norm or block "
                                          "adding error its weights cannot), reports expected drift (KLD, top-1).")
    ] = False,
    input_npz: Annotated[Optional[str], typer.Option(
        "--input", help="Inputs for --activations: an .npz of name -> array (e.g. input_ids), or a report's JSON "
                        "whose recorded inputs are reused.", metavar="FILE.npz|REPORT.json")] = None,
    save_inputs: Annotated[Optional[str], typer.Option(
        "--save-inputs", metavar="FILE.npz", help="Write the inputs --activations used to FILE.npz (reusable with "
                                                  "--input).")] = None,
    text: Annotated[Optional[str], typer.Option(
        "--text", metavar="TEXT", help="Input text for --activations, tokenized with a HF tokenizer next to the "
                                       "model.")] = None,
    model_dir: Annotated[Optional[str], typer.Option(
        "--model", help="HF directory of the source architecture, to replay a GGUF when neither side is an HF "
                        "directory (e.g. GGUF F32 vs GGUF Q4_K_M).",
        metavar="HF_DIR")] = None,
    sensitivity: Annotated[bool, typer.Option(
        "--sensitivity", metavar="", help="With --activations, HF vs its GGUF: rank the quantized tensors by the error "
                                          "each adds to its block's output on A's input (one tensor at a time, in the "
                                          "same block-by-block pass).")
    ] = False,
    backend: Annotated[str, typer.Option(
        "--backend", metavar="replay|llama.cpp|both",
        help="How --activations runs a GGUF: 'replay' (its tensors in the source architecture, transformers; "
             "default), 'llama.cpp' (the real runtime; needs the llamacpp extra) or 'both' (three-way: source vs "
             "replay = the file's tensors and eps, replay vs llama.cpp = the runtime).")] = "replay",
    runtime_defaults: Annotated[bool, typer.Option(
        "--runtime-defaults", help="Run llama.cpp with its own context defaults (flash attention auto, F16 KV "
                                   "cache) instead of F32 KV cache without flash attention.")] = False,
    act_rel_l2: Annotated[Optional[float], typer.Option(
        "--act-rel-l2", metavar="X", help="Activation drift threshold: relative L2 above this diverges (default "
                                          "1e-2).")] = None,
    act_cosine: Annotated[Optional[float], typer.Option(
        "--act-cosine", metavar="X", help="Activation drift threshold: cosine below this diverges (default "
                                          "0.9999).")] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    **outputs: Any,
) -> None:
    """Align the norms of A (source) and B (converted) and check eps, weights, conventions, folds,
    missing/extra norms; with --activations also diff activations layer by layer.
    Exit 0 pass, 1 error findings or activation drift, 2 usage or load error."""
    with _errors():
        if (input_npz or text or sensitivity or model_dir or save_inputs or backend != "replay" or runtime_defaults) \
                and not activations:
            raise NormauditError("--input, --text, --model, --save-inputs, --sensitivity, --backend and "
                                 "--runtime-defaults go with --activations")
        if backend not in BACKENDS:
            raise NormauditError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if input_npz and text is not None:
            raise NormauditError("give either --input or --text, not both")
        th = load_thresholds(Path(settings) if settings else None, fail_on=fail_on, eps_rtol=eps_rtol,
                             rel_l2_override=rel_l2, fold_rel_l2=fold_rel_l2, activation_rel_l2=act_rel_l2,
                             activation_cosine=act_cosine)
        options = AuditOptions(format_a=format_a, format_b=format_b, config_a=config_a, config_b=config_b,
                               revision_a=revision_a, revision_b=revision_b,
                               trust_pickle=trust_pickle, thresholds=th, activations=activations,
                               input_npz=input_npz, text=text, model_dir=model_dir, sensitivity=sensitivity,
                               baseline=baseline, backend=backend, runtime_defaults=runtime_defaults)
        files = json_out is not None or any(v is not None for v in outputs.values())
        with progress_display(err_console, enabled=not quiet) as progress:
            report = audit(a, b, options, progress=progress)
            if files:
                report.describe_inputs(progress)
        if write_baseline is not None:
            _write_text(write_baseline, render_baseline(clean(report.to_dict(files=False))), "baseline")
            report.apply_baseline(write_baseline)
        if save_inputs is not None and report.activations is not None:
            from .activations.inputs import save_npz

            save_npz(report.activations.feeds, save_inputs)
        doc = clean(report.to_dict(files=files))
        if json_out is not None:
            write_json(doc, json_out)
        _write_outputs(doc, outputs)
        if json_out != "-":
            _print_compare(doc, quiet, verbose)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for line in annotations(doc):
                sys.stderr.write(line + "\n")
            sys.stderr.flush()
    raise typer.Exit(EXIT_OK if report.passed else EXIT_FINDINGS)


def _write_text(target: str, text: str, what: str) -> None:
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NormauditError(f"{target}: cannot write the {what} ({exc.strerror or exc})") from None


def _print_compare(doc: dict[str, Any], quiet: bool, verbose: bool) -> None:
    console = _out_console()
    if quiet:
        console.print(verdict_line(doc), soft_wrap=True)  # one line for scripts
        return
    _print(console, compare_view(doc, console.width, verbose))


@app.command(cls=_Command)
def checks() -> None:
    """List the checks `compare` runs, with their severity and scope."""
    width = max(len(name) for name in CHECK_REGISTRY)
    for name, spec in CHECK_REGISTRY.items():
        typer.echo(f"{name:{width}s} {spec.severity.value:8s} {spec.scope:11s} {spec.description}")


def _quiet_third_parties() -> None:
    """Library loggers and warnings (torch, onnx, transformers) must not print tracebacks or noise around
    normaudit's own output; NORMAUDIT_DEBUG=1 keeps them."""
    import logging
    import warnings

    if not os.environ.get("NORMAUDIT_DEBUG"):
        logging.disable(logging.CRITICAL)
        warnings.simplefilter("ignore")
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


def run() -> None:
    """Console-script entry point."""
    _quiet_third_parties()
    try:
        app()
    except SystemExit as exc:  # click uses exit code 2 for usage errors already
        sys.exit(exc.code)

