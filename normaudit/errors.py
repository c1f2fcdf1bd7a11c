"""User-facing errors: one clear line, exit code 2 in the CLI."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class NormauditError(Exception):
    """An error the user can act on. ``str(err)`` is the one line shown; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def line(self) -> str:
        return f"{self}" + (f" (hint: {self.hint})" if self.hint else "")


def brief(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors."""
    text = str(exc).splitlines()[0][:limit] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class UnsupportedFormat(NormauditError):
    pass


class CorruptFile(NormauditError):
    pass


class UntrustedPickle(NormauditError):
    pass


class NoNorms(NormauditError):
    pass


@contextmanager
def reading(path: object, what: str, *errors: type[BaseException]) -> Iterator[None]:
    """Around a third-party parser call: its errors on a bad file become one :class:`CorruptFile` line.

    ``errors`` are the exception types the parser raises on bad input (default: any Exception, for parsers
    that document none).  normaudit's own errors pass through unchanged.
    """
    try:
        yield
    except NormauditError:
        raise
    except MemoryError:
        raise CorruptFile(f"{path}: ran out of memory reading the file (corrupt header?)") from None
    except RecursionError:
        raise CorruptFile(f"{path}: file is nested too deeply to read (corrupt or hostile)") from None
    except errors or (Exception,) as exc:
        raise CorruptFile(f"{path}: {what} ({brief(exc)})") from None


@contextmanager
def located(path: object) -> Iterator[None]:
    """Errors raised deep inside a reader (a node, a tensor) name the file they are about."""
    try:
        yield
    except NormauditError as exc:
        text = str(exc)
        if not text.startswith(str(path)):
            raise type(exc)(f"{path}: {text}", hint=exc.hint) from None
        raise
