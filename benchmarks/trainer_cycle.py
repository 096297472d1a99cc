"""Measurement 4: the trainer's cycle against a seed-style trainer, same search, same trials.

The cycle is the real one (``Trainer.run_cycle``: data, search, final model, holdout comparison
with the champion, MLflow runs and plots, registration, promotion). The seed-style trainer runs
the same search (same optimizer, seed and trial count, hence the same first proposals) but, as
the seed did, reloads the data set, refits the feature pipeline and rebuilds the LightGBM Dataset
for every trial, and logs nothing. Both are scored on the same holdout: the base data set's own
test split (the cycle has no observations here, so that is its whole holdout).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.pipeline import FeaturePipeline, read_table
from common.settings import Settings
from trainer.fit import evaluate, task_params, train_bundle
from trainer.objective import CrossValidation, TrialScore, build_dataset
from trainer.search import Search
from trainer.service import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Training:
    seconds: float
    search_seconds: float
    trials: int
    holdout_loss: float


def cycle(settings: Settings) -> Training:
    with Trainer(settings, progress=False) as trainer:
        started = time.perf_counter()
        result = trainer.run_cycle()
        seconds = time.perf_counter() - started
    log.info("trainer cycle: %s", result.summary())
    return Training(seconds, result.search_seconds, result.trials, result.candidate_metrics["loss"])


def _load(settings: Settings, path: Any, pipeline: FeaturePipeline | None = None) -> tuple[Any, ...]:
    frame = read_table(path)
    pipeline = pipeline or FeaturePipeline.fit(frame, settings.target)
    frame = frame[frame[settings.target].notna()]
    x = pipeline.transform_frame(frame)
    y = pipeline.encode_labels(frame[settings.target].tolist())
    keep = ~np.isnan(y)
    return pipeline, x[keep], y[keep]


def seed_style(settings: Settings) -> Training:
    started = time.perf_counter()

    def objective(params: dict[str, Any]) -> TrialScore:
        pipeline, x, y = _load(settings, settings.data_path)  # every trial: read, fit, transform, bin
        base = task_params(pipeline, settings)
        dataset = build_dataset(pipeline, x, y, None, base)
        cv = CrossValidation(
            dataset, base, folds=settings.cv_folds, max_rounds=settings.max_rounds,
            early_stopping=settings.early_stopping, seed=settings.seed, stratified=pipeline.task != "regression",
        )  # fmt: skip
        return cv(params)

    search = Search(objective, optimizer=settings.optimizer, trials=settings.trials,
                    time_budget=settings.time_budget, seed=settings.seed)  # fmt: skip
    result = search.run()
    best = result.best
    pipeline, x, y = _load(settings, settings.data_path)
    base = task_params(pipeline, settings)
    dataset = build_dataset(pipeline, x, y, None, base)
    bundle = train_bundle(pipeline, dataset, {**base, **best.params}, best.best_iteration, {})
    assert settings.test_data_path is not None
    _, hx, hy = _load(settings, settings.test_data_path, pipeline)
    loss = evaluate(bundle, hx, hy)["loss"]
    seconds = time.perf_counter() - started
    log.info("seed-style trainer: %d trials in %.1fs, holdout loss %.5f", len(result.trials), seconds, loss)
    return Training(seconds, result.seconds, len(result.trials), loss)
