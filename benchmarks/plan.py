"""How big each measurement is: the full run, ``--quick`` (a couple of minutes) and ``--tiny``
(the test's smoke run, seconds). Counts only; what is measured is the same in every mode."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    name: str
    base_rows: int | None  # rows of the Adult training split to train on (None: all)
    throughput_requests: int  # per system, for the predictor and the echo
    seed_requests: int  # the seed-style loop is ~10x slower: fewer requests, same rate measure
    latency_seconds: float  # of paced load, per system
    swap_models: int
    swap_every: float  # seconds between two published models
    trials: int  # hyper-parameter trials of both trainers
    max_rounds: int
    rss_requests: tuple[int, int]  # RSS is read after this many requests, then after that many

    @property
    def scaled(self) -> bool:
        return self.rss_requests != FULL.rss_requests


FULL = Plan("full", None, 60_000, 3_000, 24.0, 5, 4.0, 6, 300, (50_000, 500_000))
QUICK = Plan("quick", None, 20_000, 1_000, 12.0, 5, 3.0, 3, 100, (20_000, 200_000))
TINY = Plan("tiny", 2_000, 500, 60, 1.2, 5, 0.8, 2, 10, (1_000, 4_000))
PLANS = {plan.name: plan for plan in (FULL, QUICK, TINY)}
