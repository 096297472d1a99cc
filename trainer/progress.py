"""Progress of a search: a live bar on a terminal (trials, best score, time left), one log line
per trial otherwise (a service's log has no terminal)."""

from __future__ import annotations

import logging
import math
import time
from types import TracebackType
from typing import Any

from streamfit.trainer.search import Trial

log = logging.getLogger(__name__)


class SearchProgress:
    def __init__(self, total: int, time_budget: float, metric: str, enabled: bool) -> None:
        self.total = total
        self.time_budget = time_budget
        self.metric = metric
        self.enabled = enabled
        self.started = time.monotonic()
        self.done = 0
        self._progress: Any = None
        self._task: Any = None

    def time_left(self) -> float:
        """Seconds until the search ends: the time budget, or sooner at the current pace."""
        elapsed = time.monotonic() - self.started
        left = max(0.0, self.time_budget - elapsed)
        if self.done:
            left = min(left, elapsed / self.done * (self.total - self.done))
        return left

    def __enter__(self) -> SearchProgress:
        self.started = time.monotonic()
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TextColumn("trials"),
                TextColumn("best {task.fields[best]}"), TextColumn("{task.fields[left]} left"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False,
            )  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task("search", total=self.total, best="-", left=_duration(self.time_left()))
        return self

    def update(self, trial: Trial, best: Trial | None) -> None:
        self.done += 1
        best_text = f"{best.loss:.5f}" if best is not None else "-"
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, best=best_text, left=_duration(self.time_left()))
        else:
            outcome = (
                f"{self.metric} {trial.loss:.5f}, {trial.best_iteration} rounds"
                if trial.ok
                else f"failed ({trial.error})"
            )
            log.info("trial %d/%d: %s in %.1fs; best %s; %s left", trial.number, self.total, outcome,
                     trial.seconds, best_text, _duration(self.time_left()))  # fmt: skip

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"
