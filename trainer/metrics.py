"""Prometheus metrics of the trainer (process-wide, like every Prometheus client metric)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from streamfit.common.settings import Settings

if TYPE_CHECKING:
    from streamfit.common.health import HealthServer, Probe

log = logging.getLogger(__name__)

CYCLES = Counter("streamfit_trainer_cycles_total", "Training cycles by outcome", ["outcome"])
TRIALS = Counter("streamfit_trainer_trials_total", "Hyper-parameter trials run")
RETRAIN_REQUESTS = Counter("streamfit_trainer_retrain_requests_total", "Retrain requests consumed (coalesced)")
DEAD_LETTERS = Counter("streamfit_trainer_dead_letters_total", "Records the trainer dead-lettered", ["topic"])
CYCLE_SECONDS = Histogram(
    "streamfit_trainer_cycle_seconds", "Duration of a training cycle",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 2400, 3600),
)  # fmt: skip

DRIFT_SCORE = Gauge(
    "streamfit_trainer_drift_score",
    "Adversarial-validation drift of the newest observations vs the base data in the last cycle "
    "(0: indistinguishable, 1: always told apart; NaN: not measured yet)",
)
DRIFT_SCORE.set(float("nan"))
SKEW_MISMATCHES = Counter(
    "streamfit_trainer_skew_mismatches_total",
    "Observations whose served vector differs from what the trainer's pipeline makes of their raw values",
)
SKEW_CHECKED = Counter(
    "streamfit_trainer_skew_checked_total", "Observations read that carried their served vector (skew check)"
)

for outcome in ("promoted", "rejected", "too_few_rows", "failed", "stopped", "skipped"):
    CYCLES.labels(outcome)


def serve(settings: Settings, ready: Probe | None = None) -> HealthServer | None:
    """/metrics, /healthz and /readyz on ``metrics_port`` (0: off); the caller closes it."""
    if not settings.metrics_port:
        return None
    from streamfit.common.health import HealthServer, always_ok

    return HealthServer(settings.metrics_port, REGISTRY, ready=ready or always_ok).start()
