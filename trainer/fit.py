"""Training and scoring a LightGBM model for a fitted pipeline: the part shared by the first
model (bootstrap) and every retrain."""

from __future__ import annotations

import os
import time
from typing import Any

import lightgbm as lgb
import numpy as np

from streamfit.common.bundle import ModelBundle
from streamfit.common.linear import LinearScore, model_feature_names
from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.settings import Settings

DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_weight": 1e-3,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambda_l1": 0.0,
    "lambda_l2": 0.0,
}


def min_data_per_group(rows: int) -> int:
    """LightGBM's ``min_data_per_group`` for a training set of ``rows``: its default (100 rows per
    category on each side of a categorical split) above 4,000 rows, down to 10 for the few hundred
    rows of a world that has just changed. At 100, 240 rows of River's Agrawal stream (whose label
    rule after the drift turns on a five-level category) could not split on it and scored 55%
    against 94% at 10 (``benchmarks/old_rows.py``)."""
    return max(10, min(100, rows // 40))


ONE_THREAD_BELOW = 20_000  # training rows under which num_threads 0 (auto) means one LightGBM thread


def threads(settings: Settings, rows: int | None) -> int:
    """LightGBM threads for a training set of ``rows``: the setting when it is set; else (0, auto)
    one below ``ONE_THREAD_BELOW`` rows, all cores above. On two cores a 3-fold ``lgb.cv`` on one
    thread took 1.29x (3,600 rows) and 1.09x (20,000) the default's time on a quiet machine, and
    0.24x and 0.53x with two busy processes beside it, as a trainer next to a predictor and a broker
    has (``benchmarks/lgb_threads.py``, docs/benchmarks.md)."""
    if settings.num_threads or rows is None or rows >= ONE_THREAD_BELOW:
        return settings.num_threads
    return 1


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container's CPU set shows it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def trial_folds(settings: Settings, rows: int) -> int:
    """How a trial on ``rows`` training rows is scored: ``cv_folds`` folds; from ``one_split_rows``
    on, one held-out fifth (1). On Adult's 32,561 rows one split took 0.38x the time of three folds
    for the same parameters (one model instead of three), and the folds' mean brings nothing a fifth
    of that many rows does not already rank well; below, where a fifth is a few hundred rows, the
    folds' mean is what keeps a search from chasing noise."""
    if settings.one_split_rows and rows >= settings.one_split_rows:
        return 1
    return settings.cv_folds


MAX_AUTO_PARALLEL = 4  # parallel_trials 0 (auto): one trial per core, at most this many


def parallel_trials(settings: Settings, rows: int | None = None) -> int:
    """Trials the search scores at once on this machine: the setting; else (0, auto) one per core
    (at most ``MAX_AUTO_PARALLEL`` and the trial budget) below ``ONE_THREAD_BELOW`` training rows,
    where a trial runs on one thread, and one above, where LightGBM's own threads use the cores as
    well and each trial is proposed knowing all the earlier ones. Two 5-fold cross-validations on
    two cores, at once on one thread each against the faster of one after the other: 1.21x faster at
    1,000 rows, 1.36x at 4,000, 1.58x at 12,000, 1.01x at 32,561; a whole 8-trial search two at a
    time was slower at 32,561 rows (13.2 s against 9.4 s; ``benchmarks/parallel_trials.py``,
    docs/benchmarks.md). One for the gp search (it proposes one point at a time) and on
    Spark (``spark_parallelism`` says how many there)."""
    if settings.optimizer == "gp" or settings.spark_parallelism:
        return 1
    if settings.parallel_trials:
        return settings.parallel_trials
    if rows is not None and rows >= ONE_THREAD_BELOW:
        return 1
    return max(1, min(MAX_AUTO_PARALLEL, usable_cores(), settings.trials))


def task_params(pipeline: FeaturePipeline, settings: Settings, rows: int | None = None) -> dict[str, Any]:
    """Objective and metric for the task (overridable), and the fixed LightGBM settings (some
    scaled to the ``rows`` trained on, when given)."""
    objective, metric = {
        "binary": ("binary", "binary_logloss"),
        "multiclass": ("multiclass", "multi_logloss"),
        "regression": ("regression", "l2"),
    }[pipeline.task]
    params: dict[str, Any] = {
        "objective": settings.objective or objective,
        "metric": settings.metric or metric,
        "verbosity": -1,
        "seed": settings.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads(settings, rows),
    }
    if pipeline.task == "multiclass":
        params["num_class"] = len(pipeline.classes)
    if rows is not None:
        params["min_data_per_group"] = min_data_per_group(rows)
    return params


def make_dataset(
    pipeline: FeaturePipeline,
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None = None,
    linear: LinearScore | None = None,
) -> lgb.Dataset:
    """``x`` is the pipeline's matrix, with ``linear``'s scores appended when given."""
    return lgb.Dataset(
        x, label=y, weight=weight, feature_name=model_feature_names(pipeline.feature_names, linear),
        categorical_feature=pipeline.categorical_indices, free_raw_data=False,
        params={"verbosity": -1, "max_bin": 255},
    )  # fmt: skip


def train_bundle(
    pipeline: FeaturePipeline,
    dataset: lgb.Dataset,
    params: dict[str, Any],
    num_rounds: int,
    meta: dict[str, Any],
    linear: LinearScore | None = None,
) -> ModelBundle:
    """``dataset`` holds ``linear``'s scores after the pipeline's columns when it is given."""
    started = time.perf_counter()
    booster = lgb.train(params, dataset, num_boost_round=max(1, num_rounds))
    meta = {**meta, "params": params, "num_rounds": num_rounds, "train_seconds": time.perf_counter() - started}
    return ModelBundle(booster, pipeline, meta, linear)


def holdout_scores(bundle: ModelBundle, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Holdout metrics (``loss`` is what promotion compares, lower is better) and the loss of every
    holdout row (log loss for classes, squared error for numbers: what the paired comparison of
    candidate and champion resamples), from one prediction."""
    raw = bundle.predict_matrix(x)
    eps = 1e-15
    if bundle.pipeline.task == "regression":
        err = raw - y
        losses = np.asarray(err**2, dtype=np.float64)
        return {"loss": float(np.mean(losses)), "mae": float(np.mean(np.abs(err))), "rows": float(len(y))}, losses
    labels = y.astype(int)
    if bundle.pipeline.task == "binary":
        p = np.clip(raw, eps, 1 - eps)
        losses = np.asarray(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)), dtype=np.float64)
        accuracy = np.mean((raw >= 0.5).astype(int) == labels)
    else:
        losses = np.asarray(-np.log(np.clip(raw[np.arange(len(labels)), labels], eps, 1)), dtype=np.float64)
        accuracy = np.mean(raw.argmax(axis=1) == labels)
    return {"loss": float(np.mean(losses)), "accuracy": float(accuracy), "rows": float(len(y))}, losses


def evaluate(bundle: ModelBundle, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Holdout metrics; ``loss`` is what promotion compares (lower is better)."""
    return holdout_scores(bundle, x, y)[0]
