"""What `kohai train` shows while a run goes: phase, seed i/N, elapsed against the budget,
the last metric.

A run can take the whole budget (minutes) before its result; a silent
terminal for that long looks like a hang. On a terminal this is one live
line drawn with rich; elsewhere (a log, a pipe) it is a plain line per phase
and, at most every `every_s` seconds, one with the elapsed time and the last
metric, so a CI log shows progress too.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


def last_metric(record: dict[str, Any], metric: str) -> tuple[str, float] | None:
    """The number worth showing from one metrics record: the problem's metric, else a loss."""
    for key in (metric, f"val_{metric}", "val_loss", "train_loss", "loss"):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return key, float(value)
    return None


def status_text(
    phase: str,
    seed: int,
    index: int,
    seeds: int,
    elapsed_s: float,
    budget_s: float,
    metric: tuple[str, float] | None,
) -> str:
    """One line of progress, the same words on a terminal and in a log."""
    shown = f"{phase} · seed {seed} ({index}/{seeds}) · {elapsed_s:.0f}s / {budget_s:g}s"
    if metric is not None:
        shown += f" · {metric[0]} {metric[1]:.4g}"
    return shown


class TrainProgress:
    """A context manager fed by the harness's callbacks (`phase`, `line`, `record`)."""

    def __init__(
        self,
        console: Console,
        *,
        seed: int,
        budget_s: float,
        metric: str,
        index: int = 1,
        seeds: int = 1,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.seed, self.index, self.seeds = seed, index, seeds
        self.budget_s = budget_s
        self.metric = metric
        self.every_s = every_s
        self.clock = clock
        self.current = "starting"
        self.started = clock()
        self.phase_started = self.started
        self.latest: tuple[str, float] | None = None
        self._printed_at = -math.inf
        self._lock = threading.Lock()
        self._live: Live | None = None

    # -- the harness's callbacks (they arrive from the harness's threads) -----------

    def phase(self, name: str) -> None:
        with self._lock:
            self.current = name
            self.phase_started = self.clock()
        if self._live is None:
            self._say(self._status())

    def line(self, text: str) -> None:
        """One line of the script's output, above the live line."""
        self.console.print(Text(f"  | {text}"), highlight=False)

    def record(self, record: dict[str, Any]) -> None:
        found = last_metric(record, self.metric)
        if found is None:
            return
        with self._lock:
            self.latest = found
        now = self.clock()
        if self._live is None and now - self._printed_at >= self.every_s:
            self._printed_at = now  # the first metric at once, then one line per every_s
            self._say(self._status())

    # -- display -------------------------------------------------------------------

    def _elapsed(self) -> float:
        """Seconds into the training budget (the data step and evaluation have their own)."""
        if self.current == "training":
            return self.clock() - self.phase_started
        return self.budget_s if self.current == "evaluating" else 0.0

    def _status(self) -> str:
        with self._lock:
            return status_text(
                self.current,
                self.seed,
                self.index,
                self.seeds,
                self._elapsed(),
                self.budget_s,
                self.latest,
            )

    def _say(self, text: str) -> None:
        self.console.print(Text(f"kohai train: {text}"), highlight=False)

    def __rich__(self) -> Group:
        bar = ProgressBar(total=self.budget_s, completed=min(self._elapsed(), self.budget_s))
        grid = Table.grid(padding=(0, 1))
        grid.add_row(bar, Text(self._status()))
        return Group(grid)

    def __enter__(self) -> TrainProgress:
        if self.console.is_terminal:
            self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
