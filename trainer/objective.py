"""The score of one trial: ``lgb.cv`` with early stopping on a Dataset built once per cycle.

Binning the features is the costly part of building a LightGBM Dataset; doing it once per cycle
and handing the same constructed Dataset to every trial keeps trials cheap. That only holds while
no trial changes a Dataset-level parameter (LightGBM then silently rebuilds it), which is why the
Dataset is built with the same fixed parameters as the trials and the search space holds only
booster parameters; ``CrossValidation`` checks it after every trial.

On a Spark cluster (hyperopt's ``SparkTrials``) the objective is pickled to the executors: it
travels as its raw arrays, and each executor process bins them once per cycle (``_WORKER_CACHE``).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

from streamfit.common.linear import LinearScore, model_feature_names
from streamfit.common.pipeline import FeaturePipeline

log = logging.getLogger(__name__)

# Metrics where a larger value is better; the search minimises, so their sign is flipped.
HIGHER_IS_BETTER = frozenset({"auc", "average_precision", "ndcg", "map", "auc_mu"})
DATASET_PARAMS: dict[str, Any] = {"max_bin": 255, "feature_pre_filter": False, "verbosity": -1}
# Early stopping ends a trial once 30 rounds improved the loss by less than this share of the
# baseline loss: a model whose loss is near zero stops there instead of running max_rounds.
EARLY_STOPPING_TOLERANCE = 1e-4
ONE_SPLIT_SHARE = 0.2  # with ``folds=1``: the share of the rows a trial is scored on (the rest train)
_WORKER_CACHE: dict[str, lgb.Dataset] = {}  # on a Spark executor: the cycle's Dataset, by token


def baseline_loss(dataset: lgb.Dataset, params: dict[str, Any]) -> float:
    """The loss of always predicting the (weighted) mean: the scale early stopping's tolerance is
    measured in. Log loss of the class shares for classes, the variance for numbers; 0 when the
    metric is something else (then there is no tolerance)."""
    y = np.asarray(dataset.get_label(), dtype=np.float64)
    weight = dataset.get_weight()
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    if not len(y) or not w.sum() > 0:
        return 0.0
    metric = first_metric(params)
    if metric in ("binary_logloss", "multi_logloss"):
        shares = np.bincount(y.astype(int), weights=w) / w.sum()
        shares = shares[shares > 0]
        return float(-(shares * np.log(shares)).sum())
    if metric in ("l2", "mse", "regression", "mean_squared_error"):
        mean = np.average(y, weights=w)
        return float(np.average((y - mean) ** 2, weights=w))
    return 0.0


# Pruning: a trial stops once, after PRUNE_AFTER patience windows, its lowest loss is worse than the
# best trial's by more than PRUNE_WINDOWS times what it gained over its last patience window.
PRUNE_AFTER = 2
PRUNE_WINDOWS = 3.0


class TrialPruned(Exception):
    """Raised inside ``lgb.cv`` when a trial cannot catch up with the best one at its pace."""

    def __init__(self, loss: float, rounds: int) -> None:
        super().__init__(f"pruned after {rounds} rounds at {loss:.6g}")
        self.loss = loss
        self.rounds = rounds


class TrialInterrupted(Exception):
    """Raised inside ``lgb.cv`` when the cycle must give way (a stop, or a drift request waiting):
    the trial is abandoned between two boosting rounds instead of running to its end."""


@dataclass(frozen=True)
class TrialScore:
    loss: float  # lower is better
    best_iteration: int
    std: float = math.nan
    pruned: bool = False  # stopped early as hopeless: ``loss`` is where it was, never the best
    seconds: float = math.nan  # what scoring took, when it was scored before the search (the fast refit)


def first_metric(params: dict[str, Any]) -> str:
    metric = params.get("metric", "")
    if isinstance(metric, (list, tuple)):
        metric = metric[0] if metric else ""
    return str(metric).split(",")[0].strip()


def build_dataset(
    pipeline: FeaturePipeline,
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None,
    base_params: dict[str, Any],
    linear: LinearScore | None = None,
) -> lgb.Dataset:
    """The cycle's one Dataset, binned now with the parameters every trial will pass again; ``x``
    holds ``linear``'s scores after the pipeline's columns when it is given."""
    dataset = lgb.Dataset(
        x, label=y, weight=weight, feature_name=model_feature_names(pipeline.feature_names, linear),
        categorical_feature=pipeline.categorical_indices, free_raw_data=False,
        params={**base_params, **DATASET_PARAMS},
    )  # fmt: skip
    return dataset.construct()


class CrossValidation:
    """Callable objective: booster parameters in, cross-validated loss and best iteration out.

    ``folds=1`` scores every trial on one held-out share of the rows (``ONE_SPLIT_SHARE``, stratified
    for classes, the same rows for every trial): one model per trial instead of ``folds``, for data
    large enough that one fifth of it ranks parameters as well as the folds' mean."""

    def __init__(
        self,
        dataset: lgb.Dataset,
        base_params: dict[str, Any],
        *,
        folds: int,
        max_rounds: int,
        early_stopping: int,
        seed: int,
        stratified: bool,
    ) -> None:
        self.dataset = dataset
        self.base_params = {**base_params, **DATASET_PARAMS}
        self.folds = folds
        # folds=1: the one (train rows, held-out rows) pair every trial is scored on; None: nfold=folds
        self.split: list[tuple[np.ndarray, np.ndarray]] | None = None
        if folds == 1:
            labels = np.asarray(dataset.get_label())
            stratify = stratified and np.unique(labels, return_counts=True)[1].min() >= 2
            splitter = (StratifiedShuffleSplit if stratify else ShuffleSplit)(
                n_splits=1, test_size=ONE_SPLIT_SHARE, random_state=seed
            )
            self.split = [next(splitter.split(np.empty(len(labels)), labels))]
        self.max_rounds = max_rounds
        self.early_stopping = early_stopping
        self.seed = seed
        self.stratified = stratified
        self.metric = first_metric(self.base_params)
        self.constructions = 1  # how often the Dataset was binned this cycle (should stay 1)
        self._handle = dataset._handle
        self._token = uuid.uuid4().hex
        self._dataset_params = dict(dataset.params or {})
        self.min_delta = EARLY_STOPPING_TOLERANCE * baseline_loss(dataset, self.base_params)
        # Asked between boosting rounds; True abandons the trial (TrialInterrupted). Not sent to Spark.
        self.interrupt: Callable[[], bool] | None = None
        self.prune = True  # stop hopeless trials (``TrialPruned``); the best is always trained in full
        self.best_loss = math.inf  # the lowest loss a trial of this objective finished with

    # --- pickling, for SparkTrials: the raw arrays travel, each executor bins them once ----------
    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("dataset", "_handle", "interrupt")}
        ds = self.dataset
        state["_raw"] = (ds.data, ds.label, ds.weight, ds.feature_name, ds.categorical_feature)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        raw = state.pop("_raw")
        self.__dict__.update(state)
        self.interrupt = None
        dataset = _WORKER_CACHE.get(self._token)
        if dataset is None:
            x, y, weight, names, categorical = raw
            dataset = lgb.Dataset(
                x, label=y, weight=weight, feature_name=names, categorical_feature=categorical,
                free_raw_data=False, params=dict(self._dataset_params),
            ).construct()  # fmt: skip
            _WORKER_CACHE.clear()  # one cycle's data at a time
            _WORKER_CACHE[self._token] = dataset
        self.dataset = dataset
        self._handle = dataset._handle

    def __call__(self, params: dict[str, Any]) -> TrialScore:
        full = {**self.base_params, **params}
        callbacks: list[Callable[[Any], None]] = [
            lgb.early_stopping(self.early_stopping, first_metric_only=True, verbose=False, min_delta=self.min_delta)
        ]
        if self.prune and math.isfinite(self.best_loss):
            callbacks.append(self._pruner(self.best_loss))
        interrupt = self.interrupt
        if interrupt is not None:

            def check(env: Any) -> None:
                if interrupt():
                    raise TrialInterrupted(f"abandoned after {env.iteration + 1} boosting rounds")

            callbacks.append(check)
        try:
            result = lgb.cv(
                full, self.dataset, num_boost_round=self.max_rounds, nfold=self.folds, folds=self.split,
                stratified=self.stratified, shuffle=True, seed=self.seed, callbacks=callbacks,
            )  # fmt: skip
        except TrialPruned as pruned:
            return TrialScore(pruned.loss, pruned.rounds, pruned=True)
        if self.dataset._handle is not self._handle:
            self.constructions += 1
            self._handle = self.dataset._handle
            log.warning("the LightGBM Dataset was rebuilt by a trial (a Dataset-level parameter changed)")
        key = self._result_key(result)
        history = result[key]
        assert isinstance(history, list)
        best = len(history)  # lgb.cv cuts the history at the best iteration when it stops early
        value = float(history[-1])
        std_key = key.removesuffix("-mean") + "-stdv"
        spread = result.get(std_key)
        std = float(spread[-1]) if isinstance(spread, list) and spread else math.nan
        loss = -value if self.metric in HIGHER_IS_BETTER else value
        self.best_loss = min(self.best_loss, loss)
        return TrialScore(loss, best, std)

    def _pruner(self, best: float) -> Callable[[Any], None]:
        """The callback that prunes a trial: after ``PRUNE_AFTER`` patience windows, a trial whose
        lowest loss so far is above ``best`` by more than ``PRUNE_WINDOWS`` times what that lowest
        loss gained over the last window would need more than that many windows at its present pace
        to catch up, and boosting curves only flatten; it ends there, with its lowest loss, and the
        optimizer learns it was a poor point. A trial that has been below ``best`` is never pruned."""
        window = self.early_stopping
        sign = -1.0 if self.metric in HIGHER_IS_BETTER else 1.0
        losses: list[float] = []

        def prune(env: Any) -> None:
            entry = next((e for e in env.evaluation_result_list if e[1] == self.metric), None)
            if entry is None:
                return
            losses.append(sign * float(entry[2]))
            rounds = len(losses)
            if rounds < PRUNE_AFTER * window:
                return
            reached = min(losses)  # the trial at its best so far, and what it gained in the last window
            gain = min(losses[:-window]) - reached
            if reached - best > PRUNE_WINDOWS * gain:
                raise TrialPruned(reached, int(np.argmin(losses)) + 1)

        return prune

    def _result_key(self, result: dict[str, Any]) -> str:
        wanted = f"valid {self.metric}-mean"
        if wanted in result:
            return wanted
        means = [k for k in result if k.endswith("-mean")]
        if not means:
            raise RuntimeError(f"lgb.cv returned no metric (asked for {self.metric!r})")
        return means[0]
