"""Load generation and answer collection, in the benchmark's own process.

``Answers`` follows the predictions topic from a starting position; ``blast`` sends requests as
fast as the client can; ``Paced`` sends at a fixed rate from a thread and keeps each request's
send time, so that latency is measured on one clock (this process's) from ``send`` to the answer
being read.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from benchmarks.environment import Requests
from streamfit.common import confluent
from streamfit.common.kafka import make_consumer
from streamfit.common.settings import Settings

TICK = 0.005  # seconds between two sends of the paced load


def load_producer(settings: Settings) -> Any:
    """The load generator's producer: librdkafka's, whatever client the system under test uses, so
    that the load itself takes little of the two cores the systems share with it."""
    return confluent.Producer(settings, f"bench-load-{uuid.uuid4().hex[:6]}", linger_ms=2)


@dataclass
class Answer:
    received: float  # time.time() when read
    created: float  # the answer's record timestamp (when the system sent it), seconds
    value: bytes


@dataclass
class Answers:
    """Reads a predictions topic from where it ends now (or from ``start``), keyed by request id."""

    settings: Settings
    consumer: KafkaConsumer = field(init=False)
    by_id: dict[str, Answer] = field(default_factory=dict)
    duplicates: int = 0

    def __post_init__(self) -> None:
        topic = self.settings.topic("predictions")
        self.consumer = make_consumer(self.settings, None, client_id=f"bench-answers-{uuid.uuid4().hex[:6]}")
        parts = sorted(self.consumer.partitions_for_topic(topic) or {0})
        self.partitions = [TopicPartition(topic, p) for p in parts]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_end()
        self.start = {tp: self.consumer.position(tp) for tp in self.partitions}

    def end_total(self) -> int:
        ends = self.consumer.end_offsets(self.partitions)
        return sum(ends[tp] - self.start[tp] for tp in self.partitions)

    def poll(self, timeout_ms: int = 100) -> int:
        got = 0
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=10_000)
        now = time.time()
        for records in polled.values():
            for record in records:
                key = record.key.decode() if record.key else ""
                if key in self.by_id:
                    self.duplicates += 1
                    continue
                self.by_id[key] = Answer(now, record.timestamp / 1000, record.value)
                got += 1
        return got

    def read_all(self, timeout: float = 60.0) -> None:
        """Read up to the topic's current end."""
        ends = self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + timeout
        while any(self.consumer.position(tp) < ends[tp] for tp in self.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError("answers not read within the deadline")
            self.poll(200)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def wait_ready(settings: Settings, requests: Requests, timeout: float = 120.0) -> None:
    """Send a probe request every half second until one is answered: the system is serving."""
    answers = Answers(settings)
    producer = load_producer(settings)
    topic = settings.topic("requests")
    deadline = time.monotonic() + timeout
    try:
        n = 0
        while not answers.by_id:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer on {settings.topic('predictions')} within {timeout:.0f}s")
            for key, value in requests.batch("probe", n, 1):
                producer.send(topic, key=key, value=value)
            producer.flush()
            n += 1
            for _ in range(5):
                answers.poll(100)
        time.sleep(0.5)  # let the last probes' answers land before anyone counts
    finally:
        producer.close(timeout=5)
        answers.close()


def blast(settings: Settings, payloads: list[tuple[bytes, bytes]]) -> float:
    """Send every payload as fast as the client goes; returns the time of the first send."""
    producer = load_producer(settings)
    topic = settings.topic("requests")
    send = producer.send
    started = time.time()
    try:
        for key, value in payloads:
            send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close(timeout=10)
    return started


def wait_answered(answers: Answers, count: int, timeout: float) -> None:
    """Wait (cheaply: end offsets only) until ``count`` answers are on the topic."""
    deadline = time.monotonic() + timeout
    while answers.end_total() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{answers.end_total()} of {count} answers within {timeout:.0f}s")
        time.sleep(0.2)


class Paced:
    """Sends ``rate`` requests per second from a thread; ``sent`` maps each request id to its send time."""

    def __init__(self, settings: Settings, requests: Requests, tag: str, rate: float) -> None:
        self.settings, self.requests, self.tag, self.rate = settings, requests, tag, rate
        self.sent: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-paced", daemon=True)
        self.producer = load_producer(settings)

    def _run(self) -> None:
        topic, send, payload = self.settings.topic("requests"), self.producer.send, self.requests.payload
        started = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while n < due:
                request_id = f"{self.tag}-{n}"
                value = payload(request_id, n)
                self.sent[request_id] = time.time()
                send(topic, key=request_id.encode(), value=value)
                n += 1
            self._stop.wait(TICK)
        self.producer.flush()

    def start(self) -> Paced:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.producer.close(timeout=10)


def wait_compiled(settings: Settings, timeout: float = 120.0) -> None:
    """Wait until a predictor with ``compiled_trees`` says (on its metrics port) that they serve."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if "streamfit_predictor_serving_compiled 1.0" in response.read().decode():
                    return
        except OSError:  # not listening yet
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the predictor's compiled trees did not serve within {timeout:.0f}s (see its log)")
