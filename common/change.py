"""Where the world changed: the latest point at which the served model's error rose and stayed up.

Every observation carries how wrong the answer served for it was (0/1 for a class, the absolute
error for a number). A concept drift shows there as a step: the error of whatever model was serving
jumps at the change and stays up until a model trained after it is promoted. Rows from before that
step describe a world that is gone, so the cycle's training data and holdout start there
(``trainer.data.assemble``).

The test is a scan for a single upward step in the mean, the statistic of binary segmentation:
for every split ``t`` of the error series, the difference of the means after and before it in
units of its standard error under "no change". The best split counts when that score passes
``z`` (a high bar, since the maximum of many correlated scores is taken) *and* the step is large
enough to matter (``min_step`` in absolute terms for classes; ``relative_step`` of the error before
it for both). Steps down (a better model took over) are not changes of the world and are ignored.
After a step is found, the part after it is scanned again, so the latest of several changes wins.

Pure numpy, O(n) per scan; a few scans per cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEGMENT = 50  # fewest observations on either side of a change
Z = 6.0  # standard errors a step must pass (the scan takes the best of many splits)
MIN_STEP = 0.03  # classification: the error rate must rise by at least this much (3 points)
RELATIVE_STEP = 0.2  # ... and by at least this share of the error before the step


@dataclass(frozen=True)
class Change:
    """A step up in the served error at index ``at`` (the first row of the new world)."""

    at: int
    before: float  # mean error before the step (in the scanned segment)
    after: float  # mean error after it
    z: float

    def describe(self, total: int) -> str:
        return (
            f"served error rose from {self.before:.4g} to {self.after:.4g} at observation {self.at} of {total} "
            f"({self.z:.1f} standard errors)"
        )


def step_up(
    errors: np.ndarray,
    *,
    absolute: float,
    relative: float,
    z: float,
    min_segment: int,
    min_after: int | None = None,
    binary: bool = False,
) -> Change | None:
    """The most significant single step up in ``errors``, if it is significant and large enough, with
    ``min_segment`` rows before it and ``min_after`` (``min_segment`` unless given) after it. For
    ``binary`` (0/1) errors the count after the step must also pass an exact binomial test."""
    n = len(errors)
    after_rows = min_segment if min_after is None else min_after
    if after_rows < 1:
        raise ValueError(f"min_after must be at least 1, got {after_rows}")
    if n < min_segment + after_rows:
        return None
    sd = float(np.std(errors))
    if not sd > 0:
        return None
    cumulative = np.cumsum(errors)
    total = cumulative[-1]
    t = np.arange(min_segment, n - after_rows + 1)  # the split: errors[:t] before, errors[t:] after
    before = cumulative[t - 1] / t
    after = (total - cumulative[t - 1]) / (n - t)
    score = (after - before) / (sd * np.sqrt(1.0 / t + 1.0 / (n - t)))
    best = int(np.argmax(score))
    at, mean_before, mean_after, best_z = int(t[best]), float(before[best]), float(after[best]), float(score[best])
    step = mean_after - mean_before
    if best_z < z or step < absolute or step < relative * mean_before:
        return None
    if binary and not _rare_under_binomial(errors, at, mean_before, z):
        return None
    return Change(at, mean_before, mean_after, best_z)


def _rare_under_binomial(errors: np.ndarray, at: int, rate_before: float, z: float) -> bool:
    """Whether the errors after ``at`` are as unlikely as ``z`` standard errors of a normal under the
    error rate before it, counted exactly. The scan's score leans on the normal approximation, which
    a short tail after a few-errors-in-a-thousand model breaks: 4 errors in 20 answers after 9 in 980
    score 7.5 standard errors (a normal tail of 3e-14), yet happen by chance once in some 33,000 windows
    (a binomial tail of 3.1e-5): a false alarm every two hours or so at 100 answers a second."""
    rows = len(errors) - at
    rate = max(rate_before, 0.5 / at)  # a model with no error before still has some chance of one
    return float(stats.binom.sf(round(float(errors[at:].sum())) - 1, rows, rate)) <= float(stats.norm.sf(z))


def latest_change(
    errors: np.ndarray,
    classification: bool,
    *,
    z: float = Z,
    min_segment: int = MIN_SEGMENT,
    min_step: float = MIN_STEP,
    relative_step: float = RELATIVE_STEP,
    min_after: int | None = None,
) -> Change | None:
    """The latest significant step up in the served error of ``errors`` (time order; NaN = unknown,
    left out of the test), as an index into ``errors``; None when there is none. ``min_after``: the
    fewest rows after a step (``min_segment`` unless given; fewer find a large step sooner)."""
    errors = np.asarray(errors, dtype=np.float64)
    known = np.flatnonzero(~np.isnan(errors))
    series = errors[known]
    absolute = min_step if classification else 0.0
    found: Change | None = None
    offset = 0
    while True:
        change = step_up(series[offset:], absolute=absolute, relative=relative_step, z=z, min_segment=min_segment,
                         min_after=min_after, binary=classification)  # fmt: skip
        if change is None:
            break
        found = Change(offset + change.at, change.before, change.after, change.z)
        offset = found.at
    if found is None:
        return None
    at = int(known[found.at]) if found.at < len(known) else len(errors)
    return Change(at, found.before, found.after, found.z if math.isfinite(found.z) else 0.0)
