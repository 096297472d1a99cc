"""Fixtures of the fault suite: private brokers a test may stop and restart, a ledger of every
request sent (acknowledged by the broker) and every prediction read, and the predictor and trainer
helpers of their own suites.

Every fault test counts: requests sent, requests acknowledged, predictions read, request ids without
a prediction, duplicates. ``Ledger.report`` prints one line with the counts (``pytest -s`` shows it;
docs/reliability.md quotes the last run).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka.producer.future import FutureRecordMetadata

from streamfit.common.kafka import ensure_topics, make_producer
from streamfit.common.settings import Settings, load_settings
from streamfit.kafka_server import KafkaServer
from tests.predictor.conftest import (  # noqa: F401 - fixtures shared with the predictor suite
    make_settings,
    mlflow_home,
    models_factory,
    reader,
    request_json,
)
from tests.trainer.conftest import adult, shared_home, trainer_settings  # noqa: F401 - fixtures


@pytest.fixture
def private_kafka() -> Iterator[KafkaServer]:
    """A broker of this test alone: it may be stopped and started again (same port, same log dir)."""
    server = KafkaServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


def settings_on(bootstrap: str, home: Path, **overrides: Any) -> Settings:
    unique = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap, "topic_prefix": f"f{unique}.", "model_name": f"m{unique}", "home": home,
        "broker_timeout": 20.0, "batch_timeout_ms": 20, "retrain_every": 0,
    }  # fmt: skip
    values.update(overrides)
    settings = load_settings(**values)
    ensure_topics(settings)
    return settings


@dataclass
class Ledger:
    """Every request id sent, whether the broker acknowledged it, and every prediction read."""

    name: str
    sent: list[str] = field(default_factory=list)
    futures: dict[str, FutureRecordMetadata] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)

    @property
    def acknowledged(self) -> set[str]:
        return {rid for rid, future in self.futures.items() if future.is_done and future.succeeded()}

    @property
    def refused(self) -> set[str]:
        return {rid for rid, future in self.futures.items() if future.is_done and future.failed()}

    def read(self, values: list[Any]) -> None:
        self.answers = Counter(v["request_id"] for v in values)

    @property
    def missing(self) -> set[str]:
        return self.acknowledged - set(self.answers)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.answers.values())

    def report(self, **more: Any) -> str:
        extra = "".join(f", {k}={v}" for k, v in more.items())
        line = (
            f"[fault] {self.name}: sent={len(self.sent)} acknowledged={len(self.acknowledged)} "
            f"refused={len(self.refused)} predictions={sum(self.answers.values())} "
            f"answered={len(set(self.answers) & self.acknowledged)} missing={len(self.missing)} "
            f"duplicates={self.duplicates}{extra}"
        )
        print("\n" + line)
        return line


class Stream:
    """Sends requests at a steady pace from a thread, never waiting for the broker (a broker that is
    down only delays the acknowledgements); each id's send future lands in the ledger."""

    def __init__(self, settings: Settings, ledger: Ledger, per_tick: int = 20, tick: float = 0.05) -> None:
        self.settings, self.ledger, self.per_tick, self.tick = settings, ledger, per_tick, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-stream")
        self.producer = make_producer(settings, client_id="fault-stream", linger_ms=5)

    def _run(self) -> None:
        topic, n = self.settings.topic("requests"), 0
        while not self._stop.is_set():
            for _ in range(self.per_tick):
                rid = f"{self.ledger.name}-{n}"
                future = self.producer.send(topic, key=rid.encode(), value=request_json(rid, n))
                self.ledger.sent.append(rid)
                self.ledger.futures[rid] = future
                n += 1
            self._stop.wait(self.tick)

    def sent(self) -> int:
        return len(self.ledger.sent)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.producer.flush(timeout=120)  # every future resolves: acknowledged or refused
        self.producer.close(timeout=10)
