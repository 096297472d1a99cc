"""From one live run to its numbers: windows, recoveries, post-drift means, the worst window."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.recovery import river_baseline, scoring
from benchmarks.recovery.replay import LiveRun, RunOptions
from benchmarks.recovery.streams import LabelledStream

log = logging.getLogger(__name__)

ROLLING = 500  # requests in the rolling metric of the recovery rule and the plot
TOLERANCE = 2.0  # points
PRE_DRIFT = 2500  # requests before a drift that give its pre-drift level
GOAL_WITHIN = 5000  # requests after an abrupt drift by which the service should have caught up
NO_DRIFT_WINDOW = 5000
NO_DRIFT_FLOOR = -0.5  # points: the most the served metric may lose to the frozen model without drift


@dataclass
class DriftResult:
    at: int  # request index (row - base rows)
    pre_level: float  # served metric over the PRE_DRIFT requests before it
    frozen_pre: float
    recovered_after: int | None  # requests; None: not recovered before the next drift / the end
    served_mean: float  # over the post-drift stream (to the next drift or the end)
    frozen_mean: float
    river_mean: float
    gap_at_goal: float  # served - River, rolling, at GOAL_WITHIN requests after the drift (nan if the stream ends)

    @property
    def goal_recovery(self) -> bool:
        return self.recovered_after is not None and self.recovered_after <= GOAL_WITHIN

    @property
    def goal_mean(self) -> bool:
        return self.served_mean >= self.river_mean


@dataclass
class StreamResult:
    label: str
    description: str
    task: str
    metric: str
    spec: dict[str, Any]
    requests: int
    unanswered: int
    duplicates: int
    seconds: float
    windows: list[scoring.Window]
    drifts: list[DriftResult]
    means: dict[str, float]  # whole replayed stream: served, frozen, river
    worst_vs_frozen: float  # lowest served - frozen over any NO_DRIFT_WINDOW requests
    worst_vs_frozen_at: int
    swaps: list[tuple[str, int]]  # (version, first request it answered)
    cycles: list[dict[str, Any]]
    problems: dict[str, list[str]]
    problem_counts: dict[str, int]
    river: str
    load: dict[str, float] = field(default_factory=dict)  # 1-minute load average during the replay: mean, max
    plot: str = ""
    rolling: dict[str, list[float]] = field(default_factory=dict)  # for the plot, every 10th request

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("rolling")
        for drift, raw in zip(self.drifts, out["drifts"], strict=True):
            raw["goal_recovery"], raw["goal_mean"] = drift.goal_recovery, drift.goal_mean
        cleaned: dict[str, Any] = _finite(out)
        return cleaned


def _finite(value: Any) -> Any:
    """JSON has no NaN: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def river_predictions(stream: LabelledStream, options: RunOptions) -> list[Any]:
    base = list(zip(stream.features(0, options.base_rows), stream.labels(0, options.base_rows), strict=True))
    rest = list(zip(stream.features(options.base_rows), stream.labels(options.base_rows), strict=True))
    delay = round(options.label_delay * options.rate)
    log.info(
        "River (%s) learning prequentially on %d + %d rows",
        river_baseline.learner_name(stream.task),
        len(base),
        len(rest),
    )
    return river_baseline.prequential(stream.task, base, rest, seed=stream.spec.seed, delay=delay)


def evaluate(stream: LabelledStream, options: RunOptions, live: LiveRun, river: list[Any], window: int) -> StreamResult:
    task = stream.task
    truth_values = stream.labels(options.base_rows)
    truth = np.array([float(v) for v in truth_values]) if task == "regression" else np.zeros(len(truth_values))
    served = scoring.pointwise(task, truth_values, live.predictions)
    frozen = scoring.same_rows(scoring.pointwise(task, truth_values, live.frozen), served)
    online = scoring.same_rows(scoring.pointwise(task, truth_values, river), served)
    n = len(served)
    roll = {
        name: scoring.rolling(task, truth, series, ROLLING)
        for name, series in (("served", served), ("frozen", frozen), ("river", online))
    }
    drift_at = [d - options.base_rows for d in stream.drifts if 0 < d - options.base_rows < n]
    drifts = []
    for k, at in enumerate(drift_at):
        end = drift_at[k + 1] if k + 1 < len(drift_at) else n
        pre = slice(max(0, at - PRE_DRIFT), at)
        post = slice(at, end)
        pre_level = scoring.metric(task, truth[pre], served[pre])
        goal_index = at + GOAL_WITHIN - 1
        drifts.append(
            DriftResult(
                at=at,
                pre_level=pre_level,
                frozen_pre=scoring.metric(task, truth[pre], frozen[pre]),
                recovered_after=scoring.requests_to_recovery(
                    roll["served"],
                    roll["river"],
                    at,
                    pre_level,
                    tolerance=TOLERANCE,
                    width=ROLLING,
                    hold=ROLLING,
                    end=end,
                ),
                served_mean=scoring.metric(task, truth[post], served[post]),
                frozen_mean=scoring.metric(task, truth[post], frozen[post]),
                river_mean=scoring.metric(task, truth[post], online[post]),
                gap_at_goal=float(roll["served"][goal_index] - roll["river"][goal_index])
                if goal_index < end
                else math.nan,
            )
        )
    worst, worst_at = scoring.worst_window(task, truth, served, frozen, NO_DRIFT_WINDOW)
    return StreamResult(
        label=stream.spec.label,
        description=stream.description,
        task=task,
        metric=scoring.metric_name(task),
        spec={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(stream.spec).items()},
        requests=n,
        unanswered=live.unanswered,
        duplicates=live.duplicates,
        seconds=live.seconds,
        windows=scoring.windows(task, truth, served, frozen, online, live.versions, window),
        drifts=drifts,
        means={
            name: scoring.metric(task, truth, series)
            for name, series in (("served", served), ("frozen", frozen), ("river", online))
        },
        worst_vs_frozen=worst,
        worst_vs_frozen_at=worst_at,
        swaps=scoring.first_answers(live.versions),
        cycles=live.cycles,
        problems=live.problems,
        problem_counts=live.problem_counts,
        river=river_baseline.learner_name(task),
        load={"mean": float(np.mean(live.load)), "max": float(np.max(live.load))} if live.load else {},
        rolling={name: [round(float(v), 3) for v in series[::10]] for name, series in roll.items()},
    )
