"""When to ask for a retrain: one ``count`` signal per ``retrain_every`` labelled observations.

Each replica counts only the observations it produced; the trainer coalesces signals that arrive
while it trains, so replicas need no coordination.
"""

from __future__ import annotations


class RetrainCounter:
    def __init__(self, every: int) -> None:
        if every < 0:
            raise ValueError("every must be >= 0 (0: never)")
        self.every = every
        self.since_signal = 0
        self.total = 0

    def add(self, observations: int) -> int:
        """Count new observations; returns how many signals are now due (usually 0 or 1)."""
        self.total += observations
        if not self.every:
            return 0
        self.since_signal += observations
        due, self.since_signal = divmod(self.since_signal, self.every)
        return due

    def snapshot(self) -> tuple[int, int]:
        return self.since_signal, self.total

    def restore(self, state: tuple[int, int]) -> None:
        """Undo the counting of a batch whose output never reached the broker."""
        self.since_signal, self.total = state
