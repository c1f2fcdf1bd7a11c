"""The ``normaudit`` command line: thin wiring over the Python API."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console

from . import __version__
from .activations.backends import BACKENDS
from .api import AuditOptions, audit, inspect as inspect_model
from .checks import REGISTRY as CHECK_REGISTRY
from .config import load_thresholds
from .errors import NormauditError
from .formats import FORMATS
from .model import NormModel
from .report import AuditReport, activation_tables, compare_tables, inspect_table, write_json

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

app = typer.Typer(
    name="normaudit",
    help="Audit model conversions (PyTorch -> ONNX, HF -> GGUF, float -> quantized) through their "
         "normalization layers.\n\nExit codes: 0 pass, 1 findings, 2 usage or load error.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _out_console() -> Console:
    """stdout console; wide when piped so tables stay readable in logs."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _fail(message: str) -> None:
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
    except Exception as exc:  # never a traceback for users
        if os.environ.get("NORMAUDIT_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set NORMAUDIT_DEBUG=1 for the traceback)")


@contextmanager
def _status(text: str) -> Iterator[None]:
    """A spinner on terminals; nothing in logs."""
    if err_console.is_terminal:
        with err_console.status(text, spinner="dots"):
            yield
    else:
        yield


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normaudit {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """normaudit: find what a conversion broke in the norm layers."""


FormatOpt = Annotated[Optional[str], typer.Option(
    "--format", "-f", help="Force the input format instead of detecting it: " + ", ".join(FORMATS) + ".")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow unpickling full nn.Modules. Unpickling runs code from the file: only for "
                           "files you trust.")]
ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", help="HF config.json for a bare state_dict or safetensors file (eps and architecture).")]
JsonOpt = Annotated[Optional[str], typer.Option(
    "--json", help="Write the JSON report to FILE, or '-' for stdout (then no table is printed).",
    metavar="FILE|-")]


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="Model file or Hugging Face directory.")],
    format: FormatOpt = None,
    trust_pickle: TrustOpt = False,
    config: ConfigOpt = None,
    json_out: JsonOpt = None,
    no_stats: Annotated[bool, typer.Option("--no-stats", help="Do not read weights for min/mean/max.")] = False,
) -> None:
    """List every norm layer of MODEL: kind, eps and where it came from, shape, dtype, weight stats."""
    with _errors():
        with _status(f"loading {model} ..."):
            m = inspect_model(model, format, trust_pickle=trust_pickle, config=config)
        if json_out is not None:
            write_json(m.to_dict(stats=not no_stats), json_out)
        if json_out != "-":
            _out_console().print(inspect_table(m, stats=not no_stats))
            for note in m.notes:
                err_console.print(f"note: {note}", markup=False, highlight=False)
    raise typer.Exit(EXIT_OK)


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="Source model (file or HF directory).")],
    b: Annotated[str, typer.Argument(help="Converted model (file or HF directory).")],
    format_a: Annotated[Optional[str], typer.Option("--format-a", help="Force A's format.")] = None,
    format_b: Annotated[Optional[str], typer.Option("--format-b", help="Force B's format.")] = None,
    config_a: Annotated[Optional[str], typer.Option("--config-a", help="HF config.json for a bare A.")] = None,
    config_b: Annotated[Optional[str], typer.Option("--config-b", help="HF config.json for a bare B.")] = None,
    trust_pickle: TrustOpt = False,
    json_out: JsonOpt = None,
    fail_on: Annotated[Optional[str], typer.Option(
        "--fail-on", help="Lowest severity that fails (exit 1): error (default) or warning.")] = None,
    eps_rtol: Annotated[Optional[float], typer.Option(
        "--eps-rtol", help="Relative eps difference allowed (default 1e-5).")] = None,
    rel_l2: Annotated[Optional[float], typer.Option(
        "--rel-l2", help="One weight tolerance (relative L2) for every dtype, instead of the per-dtype table.")] = None,
    fold_rel_l2: Annotated[Optional[float], typer.Option(
        "--fold-rel-l2", help="Tolerance for folded conv weights (default 2e-6).")] = None,
    settings: Annotated[Optional[str], typer.Option(
        "--settings", help="Thresholds file (normaudit.toml or a pyproject.toml with \\[tool.normaudit]); "
                           "by default one in the working directory is used.")] = None,
    activations: Annotated[bool, typer.Option(
        "--activations", help="Also run both models on the same input and diff norm and block outputs "
                              "layer by layer (first divergence, local vs inherited error).")] = False,
    input_npz: Annotated[Optional[str], typer.Option(
        "--input", help="Inputs for --activations: an .npz of name -> array (e.g. input_ids).",
        metavar="FILE.npz")] = None,
    text: Annotated[Optional[str], typer.Option(
        "--text", help="Input text for --activations, tokenized with a HF tokenizer next to the model.")] = None,
    model_dir: Annotated[Optional[str], typer.Option(
        "--model", help="HF directory of the source architecture, to replay a GGUF when neither side is an HF "
                        "directory (e.g. GGUF F32 vs GGUF Q4_K_M).",
        metavar="HF_DIR")] = None,
    sensitivity: Annotated[bool, typer.Option(
        "--sensitivity", help="With --activations and a GGUF side: put one quantized tensor at a time into the "
                              "float model and rank tensors by the output drift each causes.")] = False,
    backend: Annotated[str, typer.Option(
        "--backend", help="How --activations runs a GGUF: 'replay' (its tensors in the source architecture, "
                          "transformers; default), 'llama.cpp' (the real runtime; needs the llamacpp extra) or "
                          "'both' (three-way: source vs replay = the file's tensors and eps, replay vs llama.cpp = "
                          "the runtime).", metavar="replay|llama.cpp|both")] = "replay",
    runtime_defaults: Annotated[bool, typer.Option(
        "--runtime-defaults", help="Run llama.cpp with its own context defaults (flash attention auto, F16 KV "
                                   "cache) instead of F32 KV cache without flash attention.")] = False,
    act_rel_l2: Annotated[Optional[float], typer.Option(
        "--act-rel-l2", help="Activation drift threshold: relative L2 above this diverges (default 1e-2).")] = None,
    act_cosine: Annotated[Optional[float], typer.Option(
        "--act-cosine", help="Activation drift threshold: cosine below this diverges (default 0.9999).")] = None,
) -> None:
    """Align the norms of A (source) and B (converted) and check eps, weights, conventions, folds,
    missing/extra norms; with --activations also diff activations layer by layer.
    Exit 0 pass, 1 error findings or activation drift, 2 usage or load error."""
    from pathlib import Path

    with _errors():
        if (input_npz or text or sensitivity or model_dir or backend != "replay" or runtime_defaults) \
                and not activations:
            raise NormauditError("--input, --text, --model, --sensitivity, --backend and --runtime-defaults go with "
                                 "--activations")
        if backend not in BACKENDS:
            raise NormauditError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if input_npz and text is not None:
            raise NormauditError("give either --input or --text, not both")
        th = load_thresholds(Path(settings) if settings else None, fail_on=fail_on, eps_rtol=eps_rtol,
                             rel_l2_override=rel_l2, fold_rel_l2=fold_rel_l2, activation_rel_l2=act_rel_l2,
                             activation_cosine=act_cosine)
        options = AuditOptions(format_a=format_a, format_b=format_b, config_a=config_a, config_b=config_b,
                               trust_pickle=trust_pickle, thresholds=th, activations=activations,
                               input_npz=input_npz, text=text, model_dir=model_dir, sensitivity=sensitivity,
                               backend=backend, runtime_defaults=runtime_defaults)
        with _status("loading and comparing ..." if not activations else "loading and running both models ..."):
            report = audit(a, b, options)
        passed = report.passed
        if json_out is not None:
            write_json(report.to_dict(), json_out)
        if json_out != "-":
            _print_compare(report)
    raise typer.Exit(EXIT_OK if passed else EXIT_FINDINGS)


def _print_compare(report: AuditReport) -> None:
    console = _out_console()
    for table in compare_tables(report.static):
        console.print(table)
    act = report.activations
    if act is not None:
        for table in activation_tables(act):
            console.print(table)
        for note in act.notes:
            console.print(f"note: {note}", markup=False, highlight=False)
    counts = report.counts()
    verdict = "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    drift = f"; activations: {act.verdict}" if act is not None else ""
    console.print(f"{verdict}: {counts['error']} errors, {counts['warning']} warnings (fail on "
                  f"{report.thresholds.fail_on}){drift}")


@app.command()
def checks() -> None:
    """List the checks `compare` runs, with their severity and scope."""
    for name, spec in CHECK_REGISTRY.items():
        typer.echo(f"{name:22s} {spec.severity.value:8s} {spec.scope:10s} {spec.description}")


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
