"""The ``normaudit`` command line: thin wiring over the Python API."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import NormauditError
from .formats import FORMATS, load
from .model import NormModel
from .report import inspect_table, write_json

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


def _load(path: str, fmt: Optional[str], trust_pickle: bool, config: Optional[str]) -> NormModel:
    with err_console.status(f"loading {path} ...", spinner="dots") if err_console.is_terminal \
            else _nullcontext():
        return load(path, fmt, trust_pickle=trust_pickle, config=config)


@contextmanager
def _nullcontext() -> Iterator[None]:
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
        m = _load(model, format, trust_pickle, config)
        if json_out is not None:
            write_json(m.to_dict(stats=not no_stats), json_out)
        if json_out != "-":
            _out_console().print(inspect_table(m, stats=not no_stats))
            for note in m.notes:
                err_console.print(f"note: {note}", markup=False, highlight=False)
    raise typer.Exit(EXIT_OK)


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:  # click uses exit code 2 for usage errors already
        sys.exit(exc.code)
