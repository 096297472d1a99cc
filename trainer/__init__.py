"""The trainer: retrains LightGBM with Bayesian hyper-parameter search when asked to, and
promotes the new model only if it beats the champion.

    service.py      the long-running worker (``Trainer``): retrain requests in, offsets committed last
    coalesce.py     pending retrain requests become one cycle (pure)
    recovery.py     what a restarted trainer finishes or skips, so that a reload is never half-done
    cycle.py        one cycle: data, fast refit, search, candidate vs champion, registration, promotion
    data.py         base data, observations, time-ordered holdout, recency weights, change (pure rules)
    observations.py the observations topic up to the watermarks, with a local Parquet cache
    objective.py    one trial: lgb.cv with early stopping on the cycle's one Dataset; interruptible
    search.py       the search space and the tpe / gp / random optimizers (and SparkTrials)
    promotion.py    the promotion rule and the paired bootstrap (pure)
    tracking.py     MLflow parent and child runs;  plots.py: the two plots;  progress.py: the bar
    publisher.py    reload messages and dead letters;  metrics.py: Prometheus
    bootstrap.py    the first model;  fit.py: training and scoring shared with bootstrap

``Trainer`` and ``CycleResult`` are importable from here; the import is lazy so that
``streamfit --help`` does not load LightGBM, MLflow and Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamfit.trainer.cycle import CycleResult
    from streamfit.trainer.service import Trainer

__all__ = ["CycleResult", "Trainer"]


def __getattr__(name: str) -> Any:
    if name == "Trainer":
        from streamfit.trainer.service import Trainer

        return Trainer
    if name == "CycleResult":
        from streamfit.trainer.cycle import CycleResult

        return CycleResult
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
