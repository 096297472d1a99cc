"""The promotion rule, as a pure function: a candidate replaces the champion only when it is
better on the same holdout by more than the configured margin.

Losses are "lower is better" (log loss for classification, L2 for regression). A tie is not a
win: retraining on the same data must not churn the champion. A champion that cannot be scored
(none yet, or trained for another schema) loses by default; a candidate whose loss is not a
finite number never wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    candidate_loss: float
    champion_loss: float | None
    margin: float


def decide(candidate_loss: float, champion_loss: float | None, margin: float) -> Decision:
    def verdict(promote: bool, reason: str) -> Decision:
        return Decision(promote, reason, candidate_loss, champion_loss, margin)

    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"promotion margin must be a finite number >= 0, got {margin}")
    if not math.isfinite(candidate_loss):
        return verdict(False, f"candidate holdout loss is {candidate_loss}")
    if champion_loss is None:
        return verdict(True, "no champion to beat")
    if not math.isfinite(champion_loss):
        return verdict(True, f"champion holdout loss is {champion_loss}")
    if candidate_loss < champion_loss - margin:
        return verdict(True, f"candidate loss {candidate_loss:.6g} < champion {champion_loss:.6g} - margin {margin:g}")
    return verdict(
        False, f"candidate loss {candidate_loss:.6g} does not beat champion {champion_loss:.6g} by more than {margin:g}"
    )
