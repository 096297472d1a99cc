"""The promotion rule, as a pure function: a candidate replaces the champion only when it is
better on the same holdout by more than the configured margin, and by more than the holdout's
noise: a paired bootstrap over the holdout rows (both models' losses on the same rows, resampled
together) must find the candidate better in at least ``confidence`` of the resamples. On a small
holdout, or between two models that differ by chance, that keeps the champion; after a real change
of the world the difference is many times the noise and the candidate wins at once.

Losses are "lower is better" (log loss for classification, L2 for regression). A tie is not a
win: retraining on the same data must not churn the champion. A champion that cannot be scored
(none yet, or trained for another schema) loses by default; a candidate whose loss is not a
finite number never wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    candidate_loss: float
    champion_loss: float | None
    margin: float
    better_share: float | None = None  # share of bootstrap resamples where the candidate was better


def better_share(candidate: np.ndarray, champion: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> float:
    """Share of paired bootstrap resamples of the holdout rows in which the candidate's mean loss
    is lower than the champion's (``candidate`` and ``champion``: per-row losses on the same rows)."""
    if len(candidate) != len(champion):
        raise ValueError(f"paired losses of different lengths: {len(candidate)} and {len(champion)}")
    n = len(candidate)
    if n == 0:
        return math.nan
    gain = np.asarray(champion, dtype=np.float64) - np.asarray(candidate, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 100):  # in blocks: 100 x n indices at a time
        count = min(100, resamples - start)
        means[start : start + count] = gain[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return float(np.mean(means > 0))


def decide(
    candidate_loss: float,
    champion_loss: float | None,
    margin: float,
    *,
    share: float | None = None,
    confidence: float = 0.0,
) -> Decision:
    """``share``: what ``better_share`` found (None: no paired comparison, the losses alone decide)."""

    def verdict(promote: bool, reason: str) -> Decision:
        return Decision(promote, reason, candidate_loss, champion_loss, margin, share)

    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"promotion margin must be a finite number >= 0, got {margin}")
    if not math.isfinite(candidate_loss):
        return verdict(False, f"candidate holdout loss is {candidate_loss}")
    if champion_loss is None:
        return verdict(True, "no champion to beat")
    if not math.isfinite(champion_loss):
        return verdict(True, f"champion holdout loss is {champion_loss}")
    if candidate_loss < champion_loss - margin:
        if share is not None and confidence > 0 and not share >= confidence:
            return verdict(
                False,
                f"candidate loss {candidate_loss:.6g} < champion {champion_loss:.6g}, but better in only "
                f"{share:.0%} of paired bootstrap resamples of the holdout (needs {confidence:.0%}): within its noise",
            )
        sure = "" if share is None else f" (better in {share:.0%} of paired bootstrap resamples)"
        return verdict(
            True, f"candidate loss {candidate_loss:.6g} < champion {champion_loss:.6g} - margin {margin:g}{sure}"
        )
    return verdict(
        False, f"candidate loss {candidate_loss:.6g} does not beat champion {champion_loss:.6g} by more than {margin:g}"
    )
