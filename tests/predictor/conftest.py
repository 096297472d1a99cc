"""Fixtures of the predictor tests: tiny real models in a real MLflow store, a predictor running
in a thread, and readers that wait on a topic until a condition holds (with a deadline)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
from kafka import KafkaProducer, TopicPartition

from streamfit.common.bundle import ModelBundle
from streamfit.common.kafka import ensure_topics, make_consumer, make_producer, send_and_wait
from streamfit.common.messages import ModelReload
from streamfit.common.model_store import ModelStore
from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.settings import Settings
from streamfit.predictor.service import Predictor
from tests.conftest import SettingsFactory

COLORS = ("red", "green", "blue")
CLIENTS = ("kafka-python", "confluent")  # the serving loop's two Kafka clients (STREAMFIT_KAFKA_CLIENT)


def synthetic_frame(rows: int = 300, seed: int = 0, extra: bool = False) -> pd.DataFrame:
    """Two numbers and a colour decide a yes/no target; ``extra`` adds a column (another schema)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x1": rng.normal(size=rows), "x2": rng.normal(size=rows), "color": rng.choice(COLORS, rows)})
    if extra:
        df["x3"] = rng.normal(size=rows)
    df["y"] = np.where(df.x1 + 0.5 * df.x2 + (df.color == "red") > 0.5, "yes", "no")
    return df


def features(i: int) -> dict[str, Any]:
    rng = np.random.default_rng(i)
    return {"x1": float(rng.normal()), "x2": float(rng.normal()), "color": COLORS[i % 3]}


def request_json(request_id: str, i: int, **extra: Any) -> bytes:
    return orjson.dumps({"request_id": request_id, "features": features(i), **extra})


def train(seed: int = 0, extra: bool = False, rounds: int = 10) -> ModelBundle:
    df = synthetic_frame(seed=seed, extra=extra)
    pipeline = FeaturePipeline.fit(df, "y")
    x, y = pipeline.transform_frame(df), pipeline.encode_labels(df.y.tolist())
    data = lgb.Dataset(x, y, categorical_feature=pipeline.categorical_indices, params={"verbosity": -1})
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": seed}, data, rounds)
    return ModelBundle(booster, pipeline, {"metrics": {"loss": 0.5}})


class Models:
    """Stores real bundles in the test's MLflow store and publishes their reload messages."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings)
        self.experiment = self.store.experiment_id()
        self.producer: KafkaProducer = make_producer(settings, client_id="test-models")

    def store_bundle(self, bundle: ModelBundle) -> tuple[str, str]:
        run_id = self.store.client.create_run(self.experiment).info.run_id
        uri, sha = self.store.save_bundle(run_id, bundle)
        self.store.client.set_terminated(run_id)
        return uri, sha

    def publish(self, version: str, uri: str, sha256: str) -> ModelReload:
        message = ModelReload(
            model_name=self.settings.model_name, version=version, uri=uri, sha256=sha256,
            metrics={"loss": 0.5}, published_at=time.time(),
        )  # fmt: skip
        send_and_wait(self.producer, self.settings.topic("models"), self.settings.model_name, message)
        return message

    def release(self, version: str, seed: int = 0, extra: bool = False) -> ModelReload:
        uri, sha = self.store_bundle(train(seed=seed, extra=extra))
        return self.publish(version, uri, sha)

    def close(self) -> None:
        self.producer.close(timeout=5)


@pytest.fixture(scope="session")
def mlflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for the session: creating a SQLite store costs seconds; names stay unique."""
    return tmp_path_factory.mktemp("mlflow-home")


@pytest.fixture
def make_settings(settings_factory: SettingsFactory, mlflow_home: Path) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"home": mlflow_home, "batch_timeout_ms": 20, "retrain_every": 0}
        values.update(overrides)
        settings = settings_factory(**values)
        ensure_topics(settings)
        return settings

    return make


@pytest.fixture
def models_factory() -> Iterator[Callable[[Settings], Models]]:
    made: list[Models] = []

    def make(settings: Settings) -> Models:
        made.append(Models(settings))
        return made[-1]

    yield make
    for models in made:
        models.close()


@contextmanager
def running(predictor: Predictor, ready: bool = True, timeout: float = 40.0) -> Iterator[Predictor]:
    """Run the predictor in a thread; stop it (and check it stopped) on exit."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            predictor.run()
        except BaseException as exc:
            errors.append(exc)
            raise

    thread = threading.Thread(target=target, name="test-predictor", daemon=True)
    thread.start()
    try:
        if ready and not predictor.wait_ready(timeout):
            metrics = predictor.metrics
            raise AssertionError(
                f"the predictor did not become ready in {timeout:.0f}s: {predictor.readiness()[1]}; "
                f"model store errors {metrics.value('model_store_errors_total'):.0f} (each retried with backoff), "
                f"thread alive {thread.is_alive()}"
            )
        yield predictor
    finally:
        predictor.stop()
        thread.join(15)
        assert not thread.is_alive(), "the predictor did not stop within 15 s"
    assert not errors, errors


class TopicReader:
    """Reads every partition of a topic from the beginning, keeping (partition, offset, key, value)."""

    def __init__(self, settings: Settings, name: str, read_committed: bool = False) -> None:
        self.topic = settings.topic(name)
        isolation = "read_committed" if read_committed else "read_uncommitted"
        self.consumer = make_consumer(
            settings, None, client_id=f"test-{uuid.uuid4().hex[:6]}", isolation_level=isolation
        )
        partitions = self.consumer.partitions_for_topic(self.topic) or {0}
        self.consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        self.consumer.seek_to_beginning()
        self.records: list[tuple[int, int, bytes | None, Any]] = []

    def poll(self, timeout_ms: int = 200) -> int:
        got = 0
        for records in self.consumer.poll(timeout_ms=timeout_ms, max_records=5000).values():
            for r in records:
                self.records.append((r.partition, r.offset, r.key, orjson.loads(r.value)))
                got += 1
        return got

    @property
    def values(self) -> list[Any]:
        return [value for _, _, _, value in self.records]

    def until(self, condition: Callable[[list[Any]], bool], timeout: float = 30.0, what: str = "") -> list[Any]:
        deadline = time.monotonic() + timeout
        while not condition(self.values):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: {what or 'condition'} not met in {timeout}s "
                                     f"({len(self.records)} records read)")  # fmt: skip
            self.poll()
        return self.values

    def count(self, n: int, timeout: float = 30.0) -> list[Any]:
        return self.until(lambda values: len(values) >= n, timeout, f"{n} records")

    def close(self) -> None:
        self.consumer.close(autocommit=False)


@pytest.fixture
def reader() -> Iterator[Callable[..., TopicReader]]:
    made: list[TopicReader] = []

    def make(settings: Settings, name: str, read_committed: bool = False) -> TopicReader:
        made.append(TopicReader(settings, name, read_committed))
        return made[-1]

    yield make
    for r in made:
        r.close()


def send_requests(producer: KafkaProducer, settings: Settings, ids: list[str], start: int = 0, **extra: Any) -> None:
    topic = settings.topic("requests")
    for i, request_id in enumerate(ids, start):
        producer.send(topic, key=request_id.encode(), value=request_json(request_id, i, **extra))
    producer.flush()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


class SteadyStream:
    """Sends requests at a steady pace from a thread until stopped."""

    def __init__(self, settings: Settings, per_tick: int = 20, tick: float = 0.05) -> None:
        self.settings, self.per_tick, self.tick = settings, per_tick, tick
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.producer = make_producer(settings, client_id="test-stream")

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            ids = [f"s-{n + i}" for i in range(self.per_tick)]
            send_requests(self.producer, self.settings, ids, start=n)
            self.ids.extend(ids)
            n += self.per_tick
            self._stop.wait(self.tick)

    def __enter__(self) -> SteadyStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.producer.close(timeout=5)
