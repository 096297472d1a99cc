"""River learning prequentially on the same stream: the yardstick of "how soon could it be known".

The online learner sees the base rows first (``learn_one``), as the service's first model did, then
every request in the same order: ``predict_one``, and ``learn_one`` once its label would have
arrived. With a label delay of d seconds at r requests/s, a request's label reaches River
``round(d * r)`` requests later, as it reaches the service; with no delay River learns each row
right after predicting it (its best case, and the service's: the client sends a label as soon as
its prediction arrives).
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)


def make_learner(task: str, seed: int) -> Any:
    """ARF for classification, ARF regressor for regression (river.forest), seeded."""
    from river import forest

    if task == "regression":
        return forest.ARFRegressor(seed=seed)
    return forest.ARFClassifier(seed=seed)


def learner_name(task: str) -> str:
    return "river.forest.ARFRegressor" if task == "regression" else "river.forest.ARFClassifier"


def _clean(x: Mapping[str, Any]) -> dict[str, Any]:
    """River takes a missing feature as absent, not as None/NaN."""
    return {k: v for k, v in x.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


def _target(task: str, y: Any) -> Any:
    return float(y) if task == "regression" else y


def prequential(
    task: str,
    base: Sequence[tuple[Mapping[str, Any], Any]],
    stream: Sequence[tuple[Mapping[str, Any], Any]],
    *,
    seed: int = 1,
    delay: int = 0,
    learner: Any = None,
    progress: Callable[[int], None] | None = None,
) -> list[Any]:
    """River's prediction for every row of ``stream`` (None before it can predict anything)."""
    model = learner if learner is not None else make_learner(task, seed)
    for x, y in base:
        model.learn_one(_clean(x), _target(task, y))
    waiting: collections.deque[tuple[dict[str, Any], Any]] = collections.deque()
    out: list[Any] = []
    for i, (x, y) in enumerate(stream):
        clean = _clean(x)
        out.append(model.predict_one(clean))
        waiting.append((clean, _target(task, y)))
        while len(waiting) > delay:
            model.learn_one(*waiting.popleft())
        if progress is not None and i % 1000 == 999:
            progress(1000)
    return out
