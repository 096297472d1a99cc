"""The interim answer: between a drift alarm and the first model trained after it, serve the class
that the newest labels say each of the old model's answers stands for.

After an abrupt change of the world the loop needs a second or two (a hundred observations at
100 requests/s, a fit, a swap) before a retrained model answers; meanwhile the old model is served
as it is, and on a concept whose classes it now confuses it is wrong most of the time. The
observations since the change already say how: among the requests the model answered "no", how
many were "yes". Serving, for each of its answers, the class that followed it most often since the
change is the best any rule can do that sees only the model's answer (the confusion matrix of a
model under label shift, as black-box shift estimation uses it: Lipton, Wang and Smola, 2018,
arXiv:1802.03916).

A model answer is remapped only when it was given at least ``MIN_ANSWERS`` times since the change
and another class followed it ``MIN_FOLLOWED`` times at least, more often than itself by ``Z``
standard errors of a sign test, so a stream whose concept did not move (or moved where the old
answers say nothing) is served as before.
The drift monitor looks for it from the alarm on, every 10 observations, for 500 at most. The
correction belongs to one model version and ends when another version swaps in, or after
``LIFETIME`` seconds (the trainer waits at most 30 s for the rows of the new world). The score sent
with a remapped answer is the share of the newest labels behind it: for a binary task the share of
positive labels after that answer (so the prediction is still "positive when the score is at least
0.5"), for several classes the share of the class served.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

MIN_ANSWERS: Final = 20  # times the model gave an answer since the change before it can be remapped
MIN_FOLLOWED: Final = 10  # ... and times the class served instead followed it (several classes: 4 of 22 is no rule)
# Sign test: another class must follow that answer this many standard errors more often than itself
# (one-sided 98% for one answer; the alarm has already said the error rose).
Z: Final = 2.0
LIFETIME: Final = 60.0  # seconds a correction lasts without a new model


@dataclass(frozen=True)
class Remap:
    served: int  # index in the pipeline's classes of the class served instead
    score: float  # the score sent with it
    followed: int  # observations since the change where the label was ``served``
    given: int  # observations since the change where the model gave this answer


def remaps(pairs: np.ndarray, classes: int, binary: bool) -> dict[int, Remap]:
    """From (model answer, label) class indices since the change (-1: a label of no known class),
    the answers to serve otherwise, by the model's answer."""
    known = pairs[(pairs[:, 0] >= 0) & (pairs[:, 1] >= 0)]
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (known[:, 0], known[:, 1]), 1)
    out: dict[int, Remap] = {}
    for answer in range(classes):
        given = int(counts[answer].sum())
        if given < MIN_ANSWERS:
            continue
        best = int(np.argmax(counts[answer]))
        better, kept = int(counts[answer, best]), int(counts[answer, answer])
        if best == answer or better < MIN_FOLLOWED or (better - kept) < Z * math.sqrt(better + kept):
            continue
        score = counts[answer, 1] / given if binary else better / given
        out[answer] = Remap(best, float(score), better, given)
    return out


@dataclass(frozen=True)
class Correction:
    version: str
    classes: tuple[Any, ...]
    remaps: dict[int, Remap]
    until: float  # time.monotonic() after which the model is served as it is again

    def active(self, version: str, now: float | None = None) -> bool:
        return version == self.version and (time.monotonic() if now is None else now) < self.until

    def apply(self, predictions: Sequence[Any], scores: Sequence[float]) -> tuple[list[Any], list[float]]:
        index = {value: i for i, value in enumerate(self.classes)}
        out_p, out_s = list(predictions), list(scores)
        for row, prediction in enumerate(predictions):
            remap = self.remaps.get(index.get(prediction, -1))
            if remap is not None:
                out_p[row], out_s[row] = self.classes[remap.served], remap.score
        return out_p, out_s

    def describe(self) -> str:
        return ", ".join(
            f"{self.classes[answer]!r} -> {self.classes[r.served]!r} ({r.followed} of {r.given} labels)"
            for answer, r in sorted(self.remaps.items())
        )
