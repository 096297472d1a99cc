"""When to ask for a retrain: one ``count`` signal per ``retrain_every`` labelled observations,
sooner for a while after a drift alarm.

Right after a change of the world the trainer has few rows of the new one, and a model's error falls
fastest while its data is small: the first model after a drift, trained on a few hundred rows, is
worth replacing long before ``retrain_every`` more have arrived. So after an alarm the next count
signals come at an eighth, a quarter and a half of ``retrain_every`` (each roughly doubles the rows
of the new world the trainer has), then every ``retrain_every`` again.

Each replica counts only the observations it produced; the trainer coalesces signals that arrive
while it trains, so replicas need no coordination.
"""

from __future__ import annotations

RAMP = (8, 4, 2)  # after a drift alarm: signals after every/8, every/4, every/2 observations, then every


class RetrainCounter:
    def __init__(self, every: int) -> None:
        if every < 0:
            raise ValueError("every must be >= 0 (0: never)")
        self.every = every
        self.since_signal = 0
        self.total = 0
        self.ramp: tuple[int, ...] = ()  # the shorter steps still to come after a drift alarm

    @property
    def step(self) -> int:
        """Observations the next signal waits for."""
        return self.ramp[0] if self.ramp else self.every

    def add(self, observations: int) -> list[int]:
        """Count new observations; returns the steps of the signals now due (usually none or one)."""
        self.total += observations
        if not self.every:
            return []
        self.since_signal += observations
        due: list[int] = []
        while self.since_signal >= self.step:
            due.append(self.step)
            self.since_signal -= self.step
            self.ramp = self.ramp[1:]
        return due

    def drifted(self) -> None:
        """A drift alarm was raised (and asked for a retrain itself): count afresh, in short steps."""
        if self.every:
            self.since_signal = 0
            self.ramp = tuple(step for step in (self.every // part for part in RAMP) if step > 0)

    def snapshot(self) -> tuple[int, int, tuple[int, ...]]:
        return self.since_signal, self.total, self.ramp

    def restore(self, state: tuple[int, int, tuple[int, ...]]) -> None:
        """Undo the counting of a batch whose output never reached the broker."""
        self.since_signal, self.total, self.ramp = state
