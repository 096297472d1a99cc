"""Fitting a ``common.linear.LinearScore`` on a cycle's rows.

The trees learn from the score of every training row, so that score must come from a linear model
that did not see the row's label (stacking's rule): each row's score is out-of-fold, from a model
fitted on the other folds; the model that travels in the bundle, and scores every row served and
held out, is fitted on all rows. A score fitted on the row itself would look better in
cross-validation than it is on new rows, and the trees would lean on it too much.

Offline (``python -m benchmarks.linear_score``: 3-fold early-stopped ``lgb.cv`` for the rounds, the
default parameters, the next 2,000 rows scored; four seeds; accuracy), from 300 / 1,000 / 3,000 rows
after a change: SEA 95.8 / 97.8 / 98.7% without the score, 99.1 / 99.5 / 99.9% with it; a rotating
hyperplane (5% noise) 83.6 / 87.1 / 88.0 and 90.9 / 92.2 / 92.4; Agrawal 87.9 / 95.4 / 100.0 and 90.8 / 98.7 /
100.0; but LED (ten classes, seven of 24 inputs relevant) 72.4 / 75.0 / 76.6 and 70.5 / 74.7 /
76.5, Sine 98.1 and 97.9 at 1,000. So the cycle asks its cross-validation, with the parameters it
starts from, whether the score helps on its data, and keeps it only then (``trainer.cycle``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold

from streamfit.common.linear import LinearScore, standardise
from streamfit.common.pipeline import FeaturePipeline
from streamfit.trainer.objective import TrialScore

FOLDS = 5
MIN_ROWS = 50  # fewer rows than this: no linear score
C = 1.0  # inverse L2 strength of the logistic regression, on standardised inputs
ALPHA = 1.0  # L2 strength of the ridge regression
NAME = "linear_score"


def linear_score_wins(with_score: TrialScore, without: TrialScore, folds: int) -> tuple[bool, float]:
    """Whether the cross-validation prefers the trees with the score, and the margin it asked for.

    The one-standard-error rule of CART: the simpler model (without the score) unless the richer one
    is lower by more than its standard error, the folds' spread over the square root of their
    number. On a curved boundary (Sine) a few hundred rows after a change the score had been kept on
    margins of 0.0025 to 0.015 of log loss, and those runs served 0.2 to 0.3 points less than without
    the score; on a slanted one (SEA) it wins by far more. One split has no spread: the lower loss
    decides. A pruned trial with the score never wins."""
    error = with_score.std / math.sqrt(folds) if folds > 1 and math.isfinite(with_score.std) else 0.0
    return with_score.loss + error < without.loss and not with_score.pruned, error


def fit_linear_score(
    pipeline: FeaturePipeline, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None, seed: int
) -> tuple[LinearScore, np.ndarray] | None:
    """The linear score fitted on all rows of ``x`` (the pipeline's matrix), and ``x`` with the
    out-of-fold scores appended; None when the pipeline has no numeric column, the rows are fewer
    than ``MIN_ROWS``, or a class has no rows."""
    columns = [i for i, f in enumerate(pipeline.features) if f.kind == "numeric"]
    if not columns or len(y) < MIN_ROWS:
        return None
    if pipeline.task != "regression" and len(np.unique(y)) < 2:
        return None
    raw = x[:, columns]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column
        mean = np.nan_to_num(np.nanmean(raw, axis=0))
        scale = np.nanstd(raw, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    z = standardise(raw, mean, scale)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    width = len(pipeline.classes) if pipeline.task == "multiclass" else 1

    out_of_fold = np.zeros((len(y), width))
    for train, held in KFold(FOLDS, shuffle=True, random_state=seed).split(z):
        coef, intercept = _fit(pipeline, z[train], y[train], w[train], width)
        out_of_fold[held] = z[held] @ coef.T + intercept
    coef, intercept = _fit(pipeline, z, y, w, width)
    taken = set(pipeline.feature_names)
    names = [NAME] if width == 1 else [f"{NAME}_{k}" for k in range(width)]
    while taken.intersection(names):
        names = [f"{n}_" for n in names]
    linear = LinearScore(
        columns=tuple(columns), mean=tuple(map(float, mean)), scale=tuple(map(float, scale)),
        coef=tuple(tuple(map(float, row)) for row in coef), intercept=tuple(map(float, intercept)), names=tuple(names),
    )  # fmt: skip
    return linear, np.hstack([x, out_of_fold])


def _fit(
    pipeline: FeaturePipeline, z: np.ndarray, y: np.ndarray, w: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (``width`` rows) and intercepts; a class a fold lacks scores 0."""
    coef, intercept = np.zeros((width, z.shape[1])), np.zeros(width)
    if pipeline.task == "regression":
        model: Any = Ridge(alpha=ALPHA).fit(z, y, sample_weight=w)
        coef[0], intercept[0] = model.coef_, model.intercept_
        return coef, intercept
    labels = y.astype(int)
    present = np.unique(labels)
    if len(present) < 2:
        return coef, intercept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=C, max_iter=300).fit(z, labels, sample_weight=w)
    if pipeline.task == "binary":
        coef[0], intercept[0] = model.coef_[0], model.intercept_[0]
    elif len(present) == 2:  # two classes of many: one row, the second class's log-odds
        coef[present[1]], intercept[present[1]] = model.coef_[0], model.intercept_[0]
    else:
        coef[present], intercept[present] = model.coef_, model.intercept_
    return coef, intercept
