"""The five measurements. Each takes running systems (or starts its own) and returns plain figures;
``benchmarks.run`` orders them and ``benchmarks.report`` turns them into the table."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import orjson

from benchmarks.environment import Requests
from benchmarks.load import Answers, Paced, blast, wait_answered, wait_ready
from benchmarks.services import Service
from streamfit.common.bundle import ModelBundle
from streamfit.common.compiled import CompiledTrees
from streamfit.common.messages import ModelReload
from streamfit.common.settings import Settings

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 30.0  # seconds to wait for the last answers after the load stops
SWAP_SETTLE = 0.5  # a swap window lasts until this long after the new version's first answer
WARM_UP = 1.0  # seconds of paced load not counted (connections, first fetches)


def predict_cost(
    bundle: ModelBundle, requests: Requests, compiled: CompiledTrees | None = None, rows: int = 500, repeats: int = 20
) -> float:
    """Microseconds per row of the model's own ``predict`` (or its ``compiled`` trees') on one thread,
    as the predictor calls it for a batch (best of ``repeats``): the part of a request's cost no client
    or loop can remove."""
    matrix = bundle.pipeline.transform(requests.rows[:rows])
    model: ModelBundle | CompiledTrees = compiled or bundle
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict_matrix(matrix, 1)
        best = min(best, time.perf_counter() - started)
    return best / rows * 1e6


@dataclass(frozen=True)
class Throughput:
    rate: float  # requests answered per second
    cpu_ms: float  # CPU milliseconds the system spent per 1,000 requests


def throughput(service: Service, requests: Requests, count: int, tag: str) -> Throughput:
    """Requests answered per second, end to end: first request sent to last answer written."""
    settings = service.settings
    answers = Answers(settings)
    try:
        payloads = requests.batch(tag, 0, count)
        cpu = service.cpu_seconds
        started = blast(settings, payloads)
        wait_answered(answers, count, timeout=max(60.0, count / 100))
        service.check()
        answers.read_all()
        # With transactions the end offsets also count the commit markers: read on until every answer is in.
        created = _created(answers, tag)
        deadline = time.monotonic() + 60.0
        while len(created) < count and time.monotonic() < deadline:
            answers.poll(200)
            created = _created(answers, tag)
        cpu = service.cpu_seconds - cpu
    finally:
        answers.close()
    if len(created) < count:
        raise RuntimeError(f"{service.system}: {len(created)} of {count} requests answered")
    rate = count / (max(created) - started)
    result = Throughput(rate, cpu / count * 1e6)
    log.info("throughput %s: %d requests, %.0f/s, %.0f CPU ms per 1,000", service.system, count, rate, result.cpu_ms)
    return result


def _created(answers: Answers, tag: str) -> list[float]:
    prefix = f"{tag}-"
    return [a.created for key, a in answers.by_id.items() if key.startswith(prefix)]


@dataclass
class Latency:
    """Send-to-answer delays (seconds) of the requests counted, pooled over the slices of a run."""

    rate: float
    delays: list[float] = field(default_factory=list)
    sent: int = 0
    lost: int = 0

    @property
    def p50(self) -> float:
        return _percentiles(self.delays)[0]

    @property
    def p99(self) -> float:
        return _percentiles(self.delays)[1]

    @property
    def max(self) -> float:
        return _percentiles(self.delays)[2]


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return float("nan"), float("nan"), float("nan")
    array = np.asarray(values)
    return float(np.percentile(array, 50)), float(np.percentile(array, 99)), float(array.max())


def _drain(answers: Answers, sent: dict[str, float]) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline and not all(key in answers.by_id for key in sent):
        answers.poll(200)


def latency(service: Service, requests: Requests, into: Latency, seconds: float, tag: str) -> None:
    """Paced load at ``into.rate`` for ``seconds``; adds the delays from send to the answer being read."""
    answers = Answers(service.settings)
    try:
        paced = Paced(service.settings, requests, tag, into.rate).start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            answers.poll(50)
        paced.stop()
        _drain(answers, paced.sent)
        service.check()
    finally:
        answers.close()
    counted_from = min(paced.sent.values(), default=0.0) + (WARM_UP if seconds >= 3 * WARM_UP else 0.0)
    by_id = answers.by_id
    into.delays += [by_id[k].received - t for k, t in paced.sent.items() if t >= counted_from and k in by_id]
    into.sent += len(paced.sent)
    into.lost += sum(1 for k in paced.sent if k not in by_id)
    log.info("latency %s at %.0f/s so far: p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d lost",
             service.system, into.rate, into.p50 * 1e3, into.p99 * 1e3, into.max * 1e3, into.lost)  # fmt: skip


@dataclass(frozen=True)
class Swaps:
    published: int
    swapped: int  # versions that answered at least one request
    sent: int
    lost: int
    p99_steady: float
    p99_swap: float
    reload_to_first: list[float]  # per version: seconds from the reload message to its first answer


def hot_swap(
    service: Service, requests: Requests, models: list[ModelReload], publish: object, rate: float, every: float
) -> Swaps:
    """A steady stream at ``rate``; a new model published every ``every`` seconds."""
    assert callable(publish)
    answers = Answers(service.settings)
    published: list[tuple[str, float]] = []
    try:
        paced = Paced(service.settings, requests, "swap", rate).start()
        next_at = time.monotonic() + every
        pending = list(models)
        end = next_at + every * len(models)
        while time.monotonic() < end:
            if pending and time.monotonic() >= next_at:
                message = pending.pop(0)
                at = time.time()
                publish(service.settings, message.model_copy(update={"published_at": at}))
                published.append((message.version, at))
                next_at += every
            answers.poll(20)
        paced.stop()
        _drain(answers, paced.sent)
        service.check()
    finally:
        answers.close()
    first: dict[str, float] = {}
    for key, done in answers.by_id.items():
        if key.startswith("swap-"):
            version = answer_version(done.value)
            if version not in first or done.received < first[version]:
                first[version] = done.received
    windows = [(at, first.get(version, at + every) + SWAP_SETTLE) for version, at in published]
    # A short run (the tiny plan) has no time to spare for a warm-up: its first second is all the steady load.
    counted_from = min(paced.sent.values(), default=0.0) + (WARM_UP if every >= 3 * WARM_UP else 0.0)
    steady: list[float] = []
    in_swap: list[float] = []
    for key, sent_at in paced.sent.items():
        answer = answers.by_id.get(key)
        if answer is None or sent_at < counted_from:
            continue
        inside = any(start <= sent_at <= stop for start, stop in windows)
        (in_swap if inside else steady).append(answer.received - sent_at)
    lost = sum(1 for k in paced.sent if k not in answers.by_id)
    delays = [first[version] - at for version, at in published if version in first]
    result = Swaps(len(published), len(delays), len(paced.sent), lost, _percentiles(steady)[1],
                   _percentiles(in_swap)[1], delays)  # fmt: skip
    log.info("hot swap: %s", result)
    return result


def answer_version(value: bytes) -> str:
    return str(orjson.loads(value).get("model_version", ""))


def memory(service: Service, requests: Requests, marks: tuple[int, ...], chunk: int = 10_000) -> list[float]:
    """Resident memory of the predictor (MiB) after each mark of requests answered."""
    settings: Settings = service.settings
    answers = Answers(settings)
    out: list[float] = []
    sent = 0
    try:
        for mark in marks:
            while sent < mark:
                n = min(chunk, mark - sent)
                blast(settings, requests.batch("rss", sent, n))
                sent += n
            wait_answered(answers, mark, timeout=max(120.0, mark / 200))
            service.check()
            time.sleep(1.0)
            out.append(service.rss_mb)
            log.info("memory: %.1f MiB after %d requests", out[-1], mark)
    finally:
        answers.close()
    return out


__all__ = ["Latency", "Swaps", "hot_swap", "latency", "memory", "throughput", "wait_ready"]
