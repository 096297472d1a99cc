"""Measurement 4: the trainer's cycle against a seed-style trainer, same search, same trials.

The cycle is the real one (``Trainer.run_cycle``: data, search, final model, holdout comparison
with the champion, MLflow runs and plots, registration, promotion), timed on a started trainer
(its topics and model store made, as a service's are before its first cycle). The seed-style trainer runs
the same search (same optimizer, seed and trial count, hence the same first proposals) but, as
the seed did, reloads the data set, refits the feature pipeline and rebuilds the LightGBM Dataset
for every trial, and logs nothing. Both are scored on the same holdout: the base data set's own
test split (the cycle has no observations here, so that is its whole holdout).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamfit.common.bundle import ModelBundle
from streamfit.common.model_store import ModelStore
from streamfit.common.pipeline import FeaturePipeline, read_table
from streamfit.common.settings import Settings
from streamfit.trainer.fit import holdout_scores, task_params, train_bundle
from streamfit.trainer.objective import CrossValidation, TrialScore, build_dataset
from streamfit.trainer.search import Search, params_key
from streamfit.trainer.service import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Training:
    seconds: float
    search_seconds: float
    trials: int
    holdout_loss: float
    curve: tuple[tuple[float, float], ...] = ()  # (search seconds when the trial ended, its CV loss)
    pruned: int = 0
    points: tuple[dict[str, Any], ...] = ()  # each trial's parameters, in order
    losses: np.ndarray | None = None  # the final model's loss on every holdout row

    @property
    def best_cv_loss(self) -> float:
        return min(loss for _, loss in self.curve)

    def seconds_to(self, loss: float) -> float | None:
        """Search seconds until a trial's CV loss was at most ``loss`` (None: never)."""
        return next((t for t, value in self.curve if value <= loss + 1e-12), None)

    def trials_to(self, loss: float) -> int | None:
        return next((i + 1 for i, (_, value) in enumerate(self.curve) if value <= loss + 1e-12), None)


def on_seed_yardstick(settings: Settings, training: Training) -> Training:
    """``training``'s curve with every trial's loss replaced by the seed-style trainer's measure of
    the point the cycle would have crowned by then (its best trial so far, by its own loss): the
    ``cv_folds``-fold ``lgb.cv`` on the whole data set, as ``seed_style`` scores its trials. The
    cycle may score its own trials otherwise (one held-out fifth on large data); the time stays the
    cycle's, the quality is measured the same way for both."""
    cv = _seed_cv(settings)
    cv.prune = False
    scores: dict[tuple[tuple[str, Any], ...], float] = {}
    best, out = float("inf"), []
    crowned: dict[str, Any] | None = None
    for (elapsed, loss), params in zip(training.curve, training.points, strict=True):
        if loss < best:
            best, crowned = loss, params
        if crowned is None:
            out.append((elapsed, float("inf")))
            continue
        key = params_key(crowned)
        if key not in scores:
            scores[key] = cv(crowned).loss
        out.append((elapsed, scores[key]))
    return replace(training, curve=tuple(out))


def _curve(trials: list[dict[str, Any]]) -> tuple[tuple[float, float], ...]:
    elapsed, out = 0.0, []
    for trial in trials:
        elapsed += float(trial["seconds"])
        out.append((elapsed, float(trial["loss"]) if trial["loss"] is not None else float("inf")))
    return tuple(out)


def cycle(settings: Settings) -> Training:
    """One real cycle (``Trainer.run_cycle``), timed, with its trials from the run's artifact."""
    with Trainer(settings, progress=False) as trainer:
        trainer.start()  # topics, model store: once per service, not per cycle
        started = time.perf_counter()
        result = trainer.run_cycle()
        seconds = time.perf_counter() - started
    log.info("trainer cycle: %s", result.summary())
    store = ModelStore(settings)
    trials = orjson.loads(Path(store.client.download_artifacts(result.run_id, "search/trials.json")).read_bytes())
    losses = None
    if result.version is not None:  # the final model, registered promoted or not
        reload = store.reload_message(result.version)
        losses = _holdout_losses(settings, store.fetch_bundle(reload.uri, reload.sha256))
    return Training(seconds, result.search_seconds, result.trials, result.candidate_metrics["loss"], _curve(trials),
                    sum(1 for t in trials if t.get("pruned")), tuple(t["params"] for t in trials), losses)  # fmt: skip


def _holdout_losses(settings: Settings, bundle: ModelBundle) -> np.ndarray:
    """``bundle``'s loss on every row of the holdout both trainers are scored on (the test split)."""
    assert settings.test_data_path is not None
    _, hx, hy = _load(settings, settings.test_data_path, bundle.pipeline)
    return holdout_scores(bundle, hx, hy)[1]


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean holdout loss of ``a`` minus ``b``, row by row, and the standard error of that mean."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


GROWN_FROM = 2 / 3  # the warm-start pair: the first cycle on this share of the rows, the second on all


def grown(settings: Settings, path: Path) -> tuple[Training, Training]:
    """Two cycles on a base data set that grows between them: the first on its first
    ``GROWN_FROM`` rows, the second, warm-started from the first (same data path, same schema), on
    all of them, as a base data set refreshed with newer rows is. ``path`` is written for each."""
    frame = read_table(settings.data_path)
    frame.iloc[: round(len(frame) * GROWN_FROM)].to_csv(path, index=False)
    grown_settings = settings.model_copy(update={"data": path})
    first = cycle(grown_settings)
    frame.to_csv(path, index=False)
    second = cycle(grown_settings)
    return first, second


def _seed_cv(settings: Settings) -> CrossValidation:
    """The seed-style trainer's objective, built from the file: data read, pipeline fit, Dataset binned."""
    pipeline, x, y = _load(settings, settings.data_path)
    base = task_params(pipeline, settings)
    return CrossValidation(
        build_dataset(pipeline, x, y, None, base), base, folds=settings.cv_folds, max_rounds=settings.max_rounds,
        early_stopping=settings.early_stopping, seed=settings.seed, stratified=pipeline.task != "regression",
    )  # fmt: skip


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
        return _seed_cv(settings)(params)  # every trial: read, fit, transform, bin

    search = Search(objective, optimizer=settings.optimizer, trials=settings.trials,
                    time_budget=settings.time_budget, seed=settings.seed)  # fmt: skip
    result = search.run()
    curve = _curve([{"seconds": t.seconds, "loss": t.loss if t.ok else None} for t in result.trials])
    best = result.best
    pipeline, x, y = _load(settings, settings.data_path)
    base = task_params(pipeline, settings)
    dataset = build_dataset(pipeline, x, y, None, base)
    bundle = train_bundle(pipeline, dataset, {**base, **best.params}, best.best_iteration, {})
    losses = _holdout_losses(settings, bundle)
    loss = float(losses.mean())
    seconds = time.perf_counter() - started
    log.info("seed-style trainer: %d trials in %.1fs, holdout loss %.5f", len(result.trials), seconds, loss)
    return Training(seconds, result.seconds, len(result.trials), loss, curve, losses=losses)
