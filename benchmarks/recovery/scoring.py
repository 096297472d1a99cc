"""The recovery evaluation's arithmetic: pure functions on per-request arrays, no broker.

Every series is indexed by request (the stream's rows after the base rows, in the order they
were sent). For classification a series holds 1.0 (right) or 0.0 (wrong) per request and the
metric is accuracy in %; for regression it holds the prediction, and the metric is R² in % of the
target's variance in the same rows (so that "2 points" means the same thing for both). NaN marks
a request that was never answered: it counts in no metric, for any model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamfit.common.pipeline import category_key

CLASSIFICATION_METRIC = "accuracy (%)"
REGRESSION_METRIC = "R² (% of the variance explained)"


def metric_name(task: str) -> str:
    return REGRESSION_METRIC if task == "regression" else CLASSIFICATION_METRIC


def pointwise(task: str, truth: Sequence[object], predictions: Sequence[object | None]) -> np.ndarray:
    """The series of one model: 1/0 per request (classification), the prediction (regression); NaN when
    there is none."""
    out = np.full(len(truth), math.nan)
    for i, (true, predicted) in enumerate(zip(truth, predictions, strict=True)):
        if predicted is None:
            continue
        if task == "regression":
            out[i] = float(predicted)  # type: ignore[arg-type]
        else:
            out[i] = 1.0 if category_key(predicted) == category_key(true) else 0.0
    return out


def metric(task: str, truth: np.ndarray, series: np.ndarray) -> float:
    """The metric over the answered requests of the arrays given (NaN if none)."""
    ok = ~np.isnan(series)
    if not ok.any():
        return math.nan
    if task != "regression":
        return float(series[ok].mean() * 100)
    y, p = truth[ok], series[ok]
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        return math.nan
    return float((1 - ((y - p) ** 2).sum() / total) * 100)


def rolling(task: str, truth: np.ndarray, series: np.ndarray, width: int) -> np.ndarray:
    """The metric over the ``width`` requests ending at each index (NaN until the first full window,
    and where fewer than half of them were answered)."""
    n = len(series)
    ok = ~np.isnan(series)

    def trailing(values: np.ndarray) -> np.ndarray:
        sums = np.concatenate([[0.0], np.cumsum(values)])
        out = np.full(n, math.nan)
        if n >= width:
            out[width - 1 :] = sums[width:] - sums[: n - width + 1]
        return out

    count = trailing(ok.astype(float))
    enough = count >= max(1, width // 2)
    if task != "regression":
        hits = trailing(np.where(ok, series, 0.0))
        return np.where(enough, hits / np.maximum(count, 1) * 100, math.nan)
    y = np.where(ok, truth, 0.0)
    sse = trailing(np.where(ok, (truth - np.where(ok, series, 0.0)) ** 2, 0.0))
    sy, syy = trailing(y), trailing(y * y)
    sst = syy - sy * sy / np.maximum(count, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = (1 - sse / sst) * 100
    return np.where(enough & (sst > 0), r2, math.nan)


def requests_to_recovery(
    served: np.ndarray,
    reference: np.ndarray,
    drift: int,
    pre_level: float = math.nan,
    *,
    tolerance: float = 2.0,
    width: int = 500,
    hold: int = 500,
    end: int | None = None,
) -> int | None:
    """Requests after the drift until the served rolling metric is back: within ``tolerance`` points
    of the reference's rolling metric (River's), or of the pre-drift level, and stays so for
    ``hold`` requests. Both series are rolling metrics over ``width`` requests (see ``rolling``).

    Only windows wholly after the drift count (the first ends at ``drift + width - 1``), so the
    pre-drift rows never vouch for recovery. Returns the count of requests from the drift to the
    end of the first such window (``index - drift + 1``), or None: not recovered before ``end``
    (the next drift, or the end of the stream).
    """
    stop = len(served) if end is None else min(end, len(served))
    with np.errstate(invalid="ignore"):
        close = served >= reference - tolerance
        if not math.isnan(pre_level):
            close |= served >= pre_level - tolerance
    close &= ~np.isnan(served)
    run = 0
    for i in range(drift + width - 1, stop):
        run = run + 1 if close[i] else 0
        if run >= hold:
            return i - hold + 1 - drift + 1
    return None


def worst_window(task: str, truth: np.ndarray, served: np.ndarray, other: np.ndarray, width: int) -> tuple[float, int]:
    """The lowest (served - other) over every ``width``-request window, and the index where that window
    ends; (nan, -1) if the stream is shorter than one window."""
    gap = rolling(task, truth, served, width) - rolling(task, truth, other, width)
    if np.isnan(gap).all():
        return math.nan, -1
    at = int(np.nanargmin(gap))
    return float(gap[at]), at


@dataclass(frozen=True)
class Window:
    start: int  # first request index
    stop: int  # one past the last
    served: float
    frozen: float
    river: float
    versions: dict[str, int] = field(default_factory=dict)  # model version → answers in the window
    unanswered: int = 0


def windows(
    task: str,
    truth: np.ndarray,
    served: np.ndarray,
    frozen: np.ndarray,
    river: np.ndarray,
    versions: Sequence[str | None],
    size: int,
) -> list[Window]:
    """The three metrics per window of ``size`` requests in request order, on the same (answered) rows."""
    out = []
    for start in range(0, len(served), size):
        stop = min(start + size, len(served))
        part = slice(start, stop)
        answered = ~np.isnan(served[part])
        counted = Counter(v for v in versions[part] if v is not None)
        out.append(
            Window(
                start=start,
                stop=stop,
                served=metric(task, truth[part], served[part]),
                frozen=metric(task, truth[part], _mask(frozen[part], answered)),
                river=metric(task, truth[part], _mask(river[part], answered)),
                versions=dict(sorted(counted.items(), key=lambda kv: _version_order(kv[0]))),
                unanswered=int((~answered).sum()),
            )
        )
    return out


def _mask(series: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.where(keep, series, math.nan)


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 30, version)


def same_rows(series: np.ndarray, served: np.ndarray) -> np.ndarray:
    """``series`` on the rows the service answered only (NaN elsewhere): every model is scored on the
    same requests."""
    return _mask(series, ~np.isnan(served))


def first_answers(versions: Sequence[str | None]) -> list[tuple[str, int]]:
    """(version, first request index it answered), in the order the versions first appear."""
    seen: dict[str, int] = {}
    for i, version in enumerate(versions):
        if version is not None and version not in seen:
            seen[version] = i
    return list(seen.items())
