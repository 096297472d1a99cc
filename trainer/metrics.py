"""Prometheus metrics of the trainer (process-wide, like every Prometheus client metric)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram

from common.settings import Settings

if TYPE_CHECKING:
    from common.health import HealthServer, Probe

log = logging.getLogger(__name__)

CYCLES = Counter("streamfit_trainer_cycles_total", "Training cycles by outcome", ["outcome"])
TRIALS = Counter("streamfit_trainer_trials_total", "Hyper-parameter trials run")
RETRAIN_REQUESTS = Counter("streamfit_trainer_retrain_requests_total", "Retrain requests consumed (coalesced)")
DEAD_LETTERS = Counter("streamfit_trainer_dead_letters_total", "Records the trainer dead-lettered", ["topic"])
CYCLE_SECONDS = Histogram(
    "streamfit_trainer_cycle_seconds", "Duration of a training cycle",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 2400, 3600),
)  # fmt: skip

for outcome in ("promoted", "rejected", "too_few_rows", "failed", "stopped", "skipped"):
    CYCLES.labels(outcome)


def serve(settings: Settings, ready: Probe | None = None) -> HealthServer | None:
    """/metrics, /healthz and /readyz on ``metrics_port`` (0: off); the caller closes it."""
    if not settings.metrics_port:
        return None
    from common.health import HealthServer, always_ok

    return HealthServer(settings.metrics_port, REGISTRY, ready=ready or always_ok).start()
