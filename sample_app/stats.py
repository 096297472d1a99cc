"""What the sample app measures, as pure logic: latency percentiles, rolling accuracy or error,
model swaps and the accuracy on either side of each swap. No clock, no broker: the stream feeds
it times and answers, tests feed it lists.

While replicas roll over, the old and the new model version answer side by side for a moment, so
a version becomes "the one answering" only once it holds ``confirm`` of the last ``window``
answers; the swap is then dated back to its first answer. The summary runs this over the answers
in request order (the order the predictor reads them in, give or take partitions), not arrival
order: a consumer catching up reads one partition's answers, old and new, before the next one's,
which would look like a swap back and forth. The live view uses arrival order, as it must.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from streamfit.common.pipeline import category_key
from streamfit.sample_app.source import Task, Value

Metric = Literal["accuracy", "mae"]

SWAP_WINDOW = 9
SWAP_CONFIRM = 5
LATENCY_RECENT = 1000  # latencies behind the live percentiles
THROUGHPUT_SECONDS = 5.0  # the live throughput is over this many seconds
MAX_SERIES = 500_000  # answers held for the plot, percentiles and swaps; longer runs are thinned


def metric_for(task: Task) -> Metric:
    return "mae" if task == "regression" else "accuracy"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default; NaN if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not between 0 and 100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def score_answer(task: Task, prediction: Value, truth: Value) -> float | None:
    """1.0/0.0 (right/wrong) for a classification, the absolute error for a regression; None when
    the truth is unknown or the answer cannot be compared."""
    if truth is None:
        return None
    if task != "regression":
        return 1.0 if category_key(prediction) == category_key(truth) else 0.0
    if isinstance(prediction, bool) or isinstance(truth, bool):
        return None
    if not isinstance(prediction, (int, float)) or not isinstance(truth, (int, float)):
        return None
    error = abs(float(prediction) - float(truth))
    return error if math.isfinite(error) else None


class Rolling:
    """The mean of the last ``size`` values."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the rolling window needs at least one value")
        self._values: deque[float] = deque(maxlen=size)
        self._sum = 0.0

    def add(self, value: float) -> None:
        if len(self._values) == self._values.maxlen:
            self._sum -= self._values[0]
        self._values.append(value)
        self._sum += value

    def __len__(self) -> int:
        return len(self._values)

    @property
    def mean(self) -> float:
        # Re-summing now and then would bound float drift; windows here are small enough.
        return self._sum / len(self._values) if self._values else math.nan


@dataclass(frozen=True)
class SwapPoint:
    position: int  # the answer position (arrival order) of the new version's first answer
    old: str
    new: str


@dataclass
class SwapDetector:
    """Which model version is answering now, robust to old and new answering side by side."""

    window: int = SWAP_WINDOW
    confirm: int = SWAP_CONFIRM
    current: str | None = None
    _recent: deque[str] = field(default_factory=deque)
    _first_seen: dict[str, int] = field(default_factory=dict)
    _been_current: set[str] = field(default_factory=set)
    _position: int = -1

    def observe(self, version: str, position: int) -> SwapPoint | None:
        self._position = position
        if self.current is None:
            self.current = version
            self._been_current.add(version)
            self._recent.append(version)
            return None
        if version != self.current and (version not in self._recent or version not in self._first_seen):
            self._first_seen[version] = position  # a fresh run of this version starts here
        self._recent.append(version)
        if len(self._recent) > self.window:
            self._recent.popleft()
        if version == self.current or self._recent.count(version) < self.confirm:
            return None
        return self._switch(version)

    def finish(self) -> SwapPoint | None:
        """At the end of a stream, with no more answers to confirm it: a version that was never
        current and has answered most answers since its first one is taken as current (a swap just
        before the end); a late answer of an earlier version is not (a straggler)."""
        if self.current is None or not self._recent:
            return None
        last = self._recent[-1]
        if last == self.current or last in self._been_current or last not in self._first_seen:
            return None
        since = list(self._recent)[-(self._position - self._first_seen[last] + 1) :]
        if since.count(last) * 2 > len(since):
            return self._switch(last)
        return None

    def _switch(self, version: str) -> SwapPoint:
        assert self.current is not None
        point = SwapPoint(self._first_seen.get(version, self._position), self.current, version)
        self.current = version
        self._been_current.add(version)
        self._first_seen.clear()
        self._recent.clear()  # the old version's answers before the swap must not swap it back
        return point


def detect_swaps(versions: Sequence[str], window: int = SWAP_WINDOW, confirm: int = SWAP_CONFIRM) -> list[SwapPoint]:
    """Every swap in a sequence of answering versions (arrival order)."""
    detector = SwapDetector(window, confirm)
    points = [p for i, v in enumerate(versions) if (p := detector.observe(v, i)) is not None]
    last = detector.finish()
    return [*points, last] if last is not None else points


@dataclass(frozen=True)
class Around:
    """The metric of the old version just before a swap and of the new one just after it."""

    before: float
    before_n: int
    after: float
    after_n: int
    request_index: int  # the lowest request index the new version answered in its era


def around_swaps(
    versions: Sequence[str],
    values: Sequence[float],
    requests: Sequence[int],
    points: Sequence[SwapPoint],
    window: int,
) -> list[Around]:
    """For each swap: the old version's last ``window`` scored answers before it, and the new
    version's first ``window`` after it, each within its era (between neighbouring swaps).
    ``values`` holds NaN for an answer without a known truth."""
    out = []
    bounds = [p.position for p in points]
    for i, point in enumerate(points):
        start = bounds[i - 1] if i else 0
        end = bounds[i + 1] if i + 1 < len(bounds) else len(versions)
        before = [
            values[j] for j in range(start, point.position) if versions[j] == point.old and not math.isnan(values[j])
        ][-window:]
        mine = [j for j in range(point.position, end) if versions[j] == point.new]
        after = [values[j] for j in mine if not math.isnan(values[j])][:window]
        out.append(
            Around(
                before=_mean(before),
                before_n=len(before),
                after=_mean(after),
                after_n=len(after),
                request_index=min((requests[j] for j in mine), default=-1),
            )
        )
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


# --- the results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionStats:
    version: str
    answered: int
    scored: int  # answers whose truth is known
    metric: float  # accuracy or MAE over the scored answers (NaN if none)


@dataclass(frozen=True)
class Swap:
    from_version: str
    to_version: str
    request_index: int  # the first request (in request order) the new version answered
    elapsed: float  # seconds from the start of the run to the new version's first answer
    at: float  # the same moment, epoch seconds
    before: float  # metric of the old version over its last answers before the swap
    before_n: int
    after: float  # metric of the new version over its first answers after the swap
    after_n: int


@dataclass(frozen=True)
class Summary:
    """What a run of the sample app measured; ``streamfit demo`` reports from it."""

    task: Task
    metric: Metric  # "accuracy" (classification) or "mae" (regression)
    sent: int
    answered: int
    unanswered: int  # sent, never answered within the timeout (or before a stop)
    labels_sent: int
    labels_unsent: int  # due after the run ended (stopped early or timed out)
    duplicates: int  # a second prediction for an answered request (at-least-once redelivery)
    ignored: int  # predictions for requests of other clients or earlier runs
    invalid: int  # predictions that did not decode
    send_errors: int
    elapsed: float
    throughput: float  # answered per second over the run
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    overall: float  # the metric over every scored answer
    versions: tuple[VersionStats, ...]
    swaps: tuple[Swap, ...]
    window: int  # answers behind the rolling metric and each side of a swap
    started_at: float  # epoch seconds
    drift_at: int | None = None
    drift: str | None = None  # what the drift does, in words
    drift_elapsed: float | None = None  # seconds from the start to request drift_at
    plot: Path | None = None
    interrupted: bool = False

    @property
    def lost(self) -> int:
        return self.unanswered

    @property
    def metric_by_version(self) -> dict[str, float]:
        return {v.version: v.metric for v in self.versions}


@dataclass(frozen=True)
class Snapshot:
    """The numbers of the live view at one moment."""

    elapsed: float
    sent: int
    count: int  # 0: forever
    answered: int
    in_flight: int
    labels_sent: int
    labels_pending: int
    throughput: float  # answers per second over the last few seconds
    latency_p50_ms: float
    latency_p99_ms: float
    metric: Metric
    rolling: float
    rolling_n: int
    version: str | None
    swaps: int
    drift_at: int | None
    unanswered: int = 0


class StreamStats:
    """Accumulates one run: the per-answer series (for the plot and the summary) and live state."""

    def __init__(self, task: Task, window: int = 200, started_at: float = 0.0, max_series: int = MAX_SERIES) -> None:
        self.task: Task = task
        self.metric: Metric = metric_for(task)
        self.window = window
        self.started_at = started_at
        self.rolling = Rolling(window)
        self.detector = SwapDetector()
        self.points: list[SwapPoint] = []
        self._recent_latency: deque[float] = deque(maxlen=LATENCY_RECENT)
        self._recent_answers: deque[float] = deque()
        # Exact per-version counts: version -> [answered, scored, sum of scores].
        self._by_version: dict[str, list[float]] = {}
        self._answered = 0
        self._latency_max = math.nan
        # One entry per recorded answer, in arrival order: every answer until ``max_series`` are
        # held, then every ``stride``-th (the stride doubles and the series is thinned to match),
        # so a run that goes on for days keeps the whole timeline at a coarser grain.
        self.max_series = max_series
        self.stride = 1
        self.elapsed = array("d")
        self.latency = array("d")  # seconds
        self.values = array("d")  # score_answer, NaN when the truth is unknown
        self.rolling_series = array("d")  # the rolling metric after each answer
        self.requests = array("q")
        self.versions: list[str] = []
        self.latest_version: str | None = None
        # Counters the stream keeps here so that snapshots and the summary see one truth.
        self.sent = 0
        self.labels_sent = 0
        self.duplicates = 0
        self.ignored = 0
        self.invalid = 0
        self.send_errors = 0
        self.drift_elapsed: float | None = None

    @property
    def answered(self) -> int:
        return self._answered

    def answer(
        self, request: int, version: str, latency: float, value: float | None, elapsed: float
    ) -> SwapPoint | None:
        """Record one answer; returns the swap it confirms, if any."""
        position = self._answered
        self._answered += 1
        self.latest_version = version
        counts = self._by_version.setdefault(version, [0, 0, 0.0])
        counts[0] += 1
        self._recent_latency.append(latency)
        self._recent_answers.append(elapsed)
        self._latency_max = latency if math.isnan(self._latency_max) else max(self._latency_max, latency)
        if value is not None:
            self.rolling.add(value)
            counts[1] += 1
            counts[2] += value
        if position % self.stride == 0:
            self.versions.append(version)
            self.requests.append(request)
            self.elapsed.append(elapsed)
            self.latency.append(latency)
            self.values.append(math.nan if value is None else value)
            self.rolling_series.append(self.rolling.mean)
            if len(self.versions) >= self.max_series:
                self._thin()
        point = self.detector.observe(version, position)
        if point is not None:
            self.points.append(point)
        return point

    def _thin(self) -> None:
        self.stride *= 2
        self.versions = self.versions[::2]
        for name in ("requests", "elapsed", "latency", "values", "rolling_series"):
            setattr(self, name, getattr(self, name)[::2])

    def snapshot(
        self, elapsed: float, count: int, in_flight: int, labels_pending: int, drift_at: int | None
    ) -> Snapshot:
        recent = self._recent_answers
        while recent and recent[0] < elapsed - THROUGHPUT_SECONDS:
            recent.popleft()
        span = min(THROUGHPUT_SECONDS, elapsed)
        latencies = list(self._recent_latency)
        return Snapshot(
            elapsed=elapsed,
            sent=self.sent,
            count=count,
            answered=self.answered,
            in_flight=in_flight,
            labels_sent=self.labels_sent,
            labels_pending=labels_pending,
            throughput=len(recent) / span if span > 0 else 0.0,
            latency_p50_ms=percentile(latencies, 50) * 1000,
            latency_p99_ms=percentile(latencies, 99) * 1000,
            metric=self.metric,
            rolling=self.rolling.mean,
            rolling_n=len(self.rolling),
            version=self.latest_version,
            swaps=len(self.points),
            drift_at=drift_at,
        )

    def summary(
        self,
        elapsed: float,
        unanswered: int,
        labels_unsent: int,
        *,
        drift_at: int | None = None,
        drift: str | None = None,
        plot: Path | None = None,
        interrupted: bool = False,
    ) -> Summary:
        versions = self.versions
        values = list(self.values)
        order = sorted(range(len(versions)), key=self.requests.__getitem__)
        by_request = [versions[j] for j in order]
        points = detect_swaps(by_request)
        arounds = around_swaps(
            by_request, [values[j] for j in order], [self.requests[j] for j in order], points, self.window
        )
        swaps = []
        for i, (point, around) in enumerate(zip(points, arounds, strict=True)):
            end = points[i + 1].position if i + 1 < len(points) else len(order)
            first = min(self.elapsed[order[k]] for k in range(point.position, end) if by_request[k] == point.new)
            swaps.append(
                Swap(
                    from_version=point.old,
                    to_version=point.new,
                    request_index=around.request_index,
                    elapsed=first,
                    at=self.started_at + first,
                    before=around.before,
                    before_n=around.before_n,
                    after=around.after,
                    after_n=around.after_n,
                )
            )
        latencies = list(self.latency)
        scored = sum(c[1] for c in self._by_version.values())
        total = sum(c[2] for c in self._by_version.values())
        return Summary(
            task=self.task,
            metric=self.metric,
            sent=self.sent,
            answered=self.answered,
            unanswered=unanswered,
            labels_sent=self.labels_sent,
            labels_unsent=labels_unsent,
            duplicates=self.duplicates,
            ignored=self.ignored,
            invalid=self.invalid,
            send_errors=self.send_errors,
            elapsed=elapsed,
            throughput=self.answered / elapsed if elapsed > 0 else 0.0,
            latency_p50_ms=percentile(latencies, 50) * 1000,
            latency_p90_ms=percentile(latencies, 90) * 1000,
            latency_p99_ms=percentile(latencies, 99) * 1000,
            latency_max_ms=self._latency_max * 1000,
            overall=total / scored if scored else math.nan,
            versions=tuple(
                VersionStats(v, int(c[0]), int(c[1]), c[2] / c[1] if c[1] else math.nan)
                for v, c in self._by_version.items()
            ),
            swaps=tuple(swaps),
            window=self.window,
            started_at=self.started_at,
            drift_at=drift_at,
            drift=drift,
            drift_elapsed=self.drift_elapsed,
            plot=plot,
            interrupted=interrupted,
        )
