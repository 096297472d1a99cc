"""Drift and skew on the training side, as pure functions on matrices.

- ``reference_rows``: which training rows a bundle's reference profile is taken on. The newest
  observations the model trained on, topped up with a seeded sample of base rows: the predictor
  compares what it serves with what the model was fitted to most recently, so that after a drift
  has been learnt the next model's reference already looks like the new data, and the alarm stops.
- ``adversarial_validation``: a small LightGBM classifier tries to tell reference rows from the
  newest observations; its cross-validated AUC says how different they are.
  drift = (max(AUC, 1 - AUC) - 0.5) x 2: 0 when they cannot be told apart, 1 when always.
- ``skew``: the train/serve skew check. The predictor attaches the vector it actually fed the
  model to a sample of observations (``served``); the trainer runs the same raw values through its
  own pipeline, and any difference means the two sides do not encode features the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.profile import REFERENCE_ROWS

ADVERSARIAL_ROWS = 2000  # most rows of each side in the adversarial sample
ADVERSARIAL_MIN_ROWS = 100  # fewer new observations: no adversarial validation
ADVERSARIAL_FOLDS = 3
ADVERSARIAL_PARAMS: dict[str, Any] = {
    "objective": "binary", "metric": "auc", "learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 20,
    "feature_fraction": 0.9, "verbosity": -1, "deterministic": True, "force_row_wise": True, "num_threads": 1,
}  # fmt: skip
ADVERSARIAL_ROUNDS = 50
SKEW_TOLERANCE = 1e-9


def reference_rows(n_base: int, n_observations: int, seed: int, limit: int = REFERENCE_ROWS) -> np.ndarray:
    """Indices into a training matrix laid out as base rows then observations (oldest first)."""
    newest = np.arange(n_base + max(0, n_observations - limit), n_base + n_observations)
    room = limit - len(newest)
    if room <= 0 or n_base == 0:
        return newest
    base = np.random.default_rng(seed).choice(n_base, size=min(room, n_base), replace=False)
    return np.concatenate([np.sort(base), newest])


@dataclass(frozen=True)
class AdversarialResult:
    auc: float
    drift: float
    reference_rows: int
    new_rows: int


def drift_score(auc: float) -> float:
    return (max(auc, 1.0 - auc) - 0.5) * 2.0


def adversarial_validation(
    pipeline: FeaturePipeline, reference: np.ndarray, new: np.ndarray, seed: int
) -> AdversarialResult | None:
    """Cross-validated AUC of reference (0) vs new (1) rows; None with too few new rows."""
    if len(new) < ADVERSARIAL_MIN_ROWS or len(reference) < ADVERSARIAL_MIN_ROWS:
        return None
    rng = np.random.default_rng(seed)
    ref = reference[rng.choice(len(reference), min(ADVERSARIAL_ROWS, len(reference)), replace=False)]
    fresh = new[-ADVERSARIAL_ROWS:]
    x = np.vstack([ref, fresh])
    y = np.concatenate([np.zeros(len(ref)), np.ones(len(fresh))])
    data = lgb.Dataset(
        x, label=y, feature_name=pipeline.feature_names, categorical_feature=pipeline.categorical_indices,
        params={"verbosity": -1}, free_raw_data=False,
    )  # fmt: skip
    result = lgb.cv(
        {**ADVERSARIAL_PARAMS, "seed": seed}, data, num_boost_round=ADVERSARIAL_ROUNDS, nfold=ADVERSARIAL_FOLDS,
        stratified=True, seed=seed,
    )  # fmt: skip
    auc = float(result["valid auc-mean"][-1])  # type: ignore[index]
    return AdversarialResult(auc, drift_score(auc), len(ref), len(fresh))


# --- train/serve skew --------------------------------------------------------------------------


@dataclass(frozen=True)
class Skew:
    feature: str
    served: float | None
    trained: float | None

    def describe(self) -> str:
        def show(value: float | None) -> str:
            return "missing" if value is None else f"{value:g}"

        return (
            f"train/serve skew on feature {self.feature!r}: the predictor served {show(self.served)}, "
            f"the trainer's pipeline makes {show(self.trained)} of the same raw value"
        )


def skew(pipeline: FeaturePipeline, features: Mapping[str, Any], served: Sequence[float | None]) -> Skew | None:
    """The first feature whose served value differs from what ``pipeline`` makes of the raw
    values (NaN and null both mean missing), or None when they agree."""
    names = pipeline.feature_names
    expected = pipeline.transform([features])[0]
    if len(served) != len(names):
        return Skew(f"<{len(served)} values for {len(names)} features>", None, None)
    for name, got, want in zip(names, served, expected.tolist(), strict=True):
        got_missing = got is None or (isinstance(got, float) and math.isnan(got))
        want_missing = math.isnan(want)
        if got_missing and want_missing:
            continue
        if got_missing or want_missing or abs(float(got) - want) > SKEW_TOLERANCE:  # type: ignore[arg-type]
            return Skew(name, None if got_missing else float(got), None if want_missing else want)  # type: ignore[arg-type]
    return None
