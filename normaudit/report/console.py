"""The CLI's progress displays (implementations of :class:`normaudit.progress.Progress`): rich bars with counts
and ETA on terminals; in logs (stderr not a terminal) a plain line per running step every
``NORMAUDIT_PROGRESS_INTERVAL`` seconds (default 10; ``0`` turns them off), so a step that finishes quickly
prints nothing and one that takes minutes shows that it is alive and how far it got."""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from ..progress import SILENT
from ..progress import Progress as ProgressProtocol

DEFAULT_INTERVAL = 10.0


def _amount(n: float, unit: str) -> str:
    if unit == "B":
        return decimal(int(n))
    return f"{int(n)}" if float(n).is_integer() else f"{n:g}"


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _Count(ProgressColumn):
    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        done = _amount(task.completed, unit)
        text = f"{done}/{_amount(task.total, unit)}" if task.total is not None else done
        return Text(f"{text} {unit if unit != 'B' else ''}".rstrip() if task.completed or task.total else "",
                    style="progress.download")


class RichProgress:
    """Bars on a terminal: one line per running step, removed when it ends."""

    def __init__(self, console: Console) -> None:
        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24), _Count(),
                             TimeElapsedColumn(), TextColumn("{task.fields[eta]}"), TimeRemainingColumn(), console=console,
                             transient=True, refresh_per_second=8)
        self.ids: dict[str, int] = {}

    def begin(self, task: str, total: float | None = None, unit: str = "") -> None:
        self.ids[task] = self.bars.add_task(task, total=total, unit=unit, eta="ETA" if total else "")

    def advance(self, task: str, amount: float = 1.0) -> None:
        if task in self.ids:
            self.bars.advance(self.ids[task], amount)

    def end(self, task: str) -> None:
        tid = self.ids.pop(task, None)
        if tid is not None:
            self.bars.remove_task(tid)


@dataclass
class _Running:
    start: float
    total: float | None
    unit: str
    done: float = 0.0
    printed: bool = False


class PlainProgress:
    """Plain periodic lines for logs (a thread wakes every ``interval`` seconds; nothing for short steps)."""

    def __init__(self, stream: TextIO, interval: float = DEFAULT_INTERVAL, clock=time.monotonic) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.tasks: dict[str, _Running] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, task: str, total: float | None = None, unit: str = "") -> None:
        with self.lock:
            self.tasks[task] = _Running(self.clock(), total, unit)

    def advance(self, task: str, amount: float = 1.0) -> None:
        with self.lock:
            if task in self.tasks:
                self.tasks[task].done += amount

    def end(self, task: str) -> None:
        with self.lock:
            t = self.tasks.pop(task, None)
            if t is not None and t.printed:
                self._write(f"normaudit: {task}: done in {_duration(self.clock() - t.start)}")

    def line(self, task: str, t: _Running, now: float) -> str:
        elapsed = now - t.start
        if t.total:
            pct = 100.0 * t.done / t.total
            eta = f", ETA {_duration(elapsed / t.done * (t.total - t.done))}" if t.done else ""
            return (f"normaudit: {task}: {_amount(t.done, t.unit)}/{_amount(t.total, t.unit)} {t.unit} ({pct:.0f}%, "
                    f"{_duration(elapsed)} elapsed{eta})").replace(" B (", " (")
        count = f"{_amount(t.done, t.unit)} {t.unit} so far, " if t.done else ""
        return f"normaudit: {task}: running ({count}{_duration(elapsed)} elapsed)"

    def tick(self) -> None:
        """Print a line for every step running longer than the interval (called by the thread)."""
        now = self.clock()
        with self.lock:
            for task, t in self.tasks.items():
                if now - t.start >= self.interval:
                    t.printed = True
                    self._write(self.line(task, t, now))

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="normaudit-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def interval_from_env() -> float:
    raw = os.environ.get("NORMAUDIT_PROGRESS_INTERVAL", "").strip().lower()
    if raw in ("off", "none", "no"):
        return 0.0
    try:
        return float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


@contextmanager
def progress_display(console: Console, enabled: bool = True) -> Iterator[ProgressProtocol]:
    """Bars when ``console`` (stderr) is a terminal, periodic plain lines otherwise, nothing when disabled."""
    if not enabled:
        yield SILENT
        return
    if console.is_terminal:
        rich = RichProgress(console)
        with rich.bars:
            yield rich
        return
    interval = interval_from_env()
    if interval <= 0:
        yield SILENT
        return
    plain = PlainProgress(console.file if console.file is not None else sys.stderr, interval)
    plain.start()
    try:
        yield plain
    finally:
        plain.stop()
