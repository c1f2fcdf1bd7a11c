"""Progress reporting: the library never prints; long steps (loads, hashing, model runs, sensitivity) report to
an optional :class:`Progress` the caller passes in. The CLI implements it (bars on terminals, periodic plain
lines in logs); library users can pass their own, or nothing.

    class Printer:
        def begin(self, task, total=None, unit=""): ...
        def advance(self, task, amount=1.0): ...
        def end(self, task): ...

    normaudit.audit(a, b, activations=True, progress=Printer())

``task`` is a short description ("running B"); ``total`` is the number of steps when known (None: only a
count and the elapsed time can be shown); ``unit`` names the steps ("points", "tensors", "B" for bytes).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Protocol, runtime_checkable


@runtime_checkable
class Progress(Protocol):
    def begin(self, task: str, total: float | None = None, unit: str = "") -> None:
        """A step starts."""

    def advance(self, task: str, amount: float = 1.0) -> None:
        """``amount`` more units of ``task`` are done."""

    def end(self, task: str) -> None:
        """The step is over (also when it failed)."""


class Silent:
    """The default: reports nothing."""

    def begin(self, task: str, total: float | None = None, unit: str = "") -> None:
        pass

    def advance(self, task: str, amount: float = 1.0) -> None:
        pass

    def end(self, task: str) -> None:
        pass


SILENT = Silent()


@contextmanager
def step(progress: Progress | None, task: str, total: float | None = None, unit: str = ""
         ) -> Iterator[Callable[[float], None]]:
    """``with step(progress, "running B", total=45, unit="points") as advance: ... advance(1)``."""
    p = progress or SILENT
    p.begin(task, total, unit)
    try:
        yield lambda amount=1.0: p.advance(task, amount)
    finally:
        p.end(task)
