"""A log line per kind of event, at most one per interval.

Bad input at a thousand messages a second must not become a thousand log lines a second, yet the
first one is seen at once and none goes uncounted: the next line that gets through says how many
were held back (and the metrics count every one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottledLog:
    def __init__(
        self,
        logger: logging.Logger,
        level: int = logging.WARNING,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.clock = clock
        self.held_back = 0
        self._last: float | None = None

    def __call__(self, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a line went out less than ``interval`` seconds ago."""
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self.held_back += 1
            return False
        if self.held_back and self._last is not None:
            msg = f"{msg} (+{self.held_back} similar not logged in the last {now - self._last:.0f}s)"
        self.logger.log(self.level, msg, *args)
        self._last = now
        self.held_back = 0
        return True

    def flush(self) -> None:
        """Say how many lines were held back since the last one (at shutdown, say)."""
        if self.held_back:
            self.logger.log(self.level, "%d more like the last one were not logged", self.held_back)
            self.held_back = 0
