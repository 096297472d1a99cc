"""What every measurement shares: the broker, one MLflow store, the models and the requests.

One model is trained once (``trainer.bootstrap``) and published on every system's topics, so the
predictor and the seed-style loop answer with the same trees. The hot-swap models are that
model's trees in distinct bundles (other metadata, hence another sha256 and version): each is
downloaded, verified, parsed and warmed up like any new model, and loading cost depends on the
size of the trees, not on their values, so training five more would only make the run longer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamfit.common.bundle import ModelBundle
from streamfit.common.kafka import ensure_topics, make_producer, send_and_wait
from streamfit.common.messages import ModelReload
from streamfit.common.model_store import ModelStore
from streamfit.common.pipeline import read_table
from streamfit.common.settings import ADULT_TEST, ADULT_TRAIN, Settings, load_settings
from streamfit.trainer.bootstrap import bootstrap

log = logging.getLogger(__name__)

MODEL_NAME = "bench"


@contextlib.contextmanager
def broker(bootstrap_servers: str | None) -> Iterator[str]:
    """The broker given, or a private single-node Apache Kafka from the cached jars, stopped at the end."""
    if bootstrap_servers:
        yield bootstrap_servers
        return
    from streamfit.kafka_server import KafkaServer, kafka_version

    server = KafkaServer(extra_config={"log.retention.bytes": str(2 * 1024**3)})
    log.info("starting Apache Kafka %s from the cached jars", kafka_version())
    try:
        yield server.start().bootstrap
    finally:
        server.cleanup()


@dataclass
class Bench:
    """The run's broker, working folder and model; ``settings(system)`` gives fresh topics."""

    bootstrap_servers: str
    home: Path
    data: Path
    max_rounds: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    champion: ModelReload | None = None

    def settings(self, system: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "topic_prefix": f"bench-{self.run_id}-{system}.",
            "model_name": MODEL_NAME,
            "home": self.home,
            "data": self.data,
            "test_data": ADULT_TEST,
            "max_rounds": self.max_rounds,
            "retrain_every": 0,
            "log_level": "WARNING",
        }
        values.update(overrides)
        settings = load_settings(**values)
        ensure_topics(settings)
        return settings

    def train_champion(self) -> ModelReload:
        self.champion = bootstrap(self.settings("bootstrap"), publish=False)
        return self.champion

    def publish(self, settings: Settings, message: ModelReload) -> None:
        producer = make_producer(settings, client_id="bench-models")
        try:
            send_and_wait(producer, settings.topic("models"), settings.model_name, message)
        finally:
            producer.close(timeout=5)

    def champion_bundle(self) -> ModelBundle:
        assert self.champion is not None
        return ModelStore(self.settings("bootstrap")).fetch_bundle(self.champion.uri, self.champion.sha256)

    def variants(self, count: int) -> list[ModelReload]:
        """``count`` more registered versions: the champion's trees in bundles of their own."""
        bundle = self.champion_bundle()
        store = ModelStore(self.settings("bootstrap"))
        experiment = store.experiment_id()
        out = []
        for i in range(count):
            variant = ModelBundle(bundle.booster, bundle.pipeline, {**bundle.meta, "bench_variant": i})
            run_id = store.client.create_run(experiment, run_name=f"bench-variant-{i}").info.run_id
            uri, sha = store.save_bundle(run_id, variant)
            store.client.set_terminated(run_id)
            out.append(store.reload_message(store.register(run_id, uri, sha, bundle.metrics)))
        return out


@contextlib.contextmanager
def bench(bootstrap_servers: str, base_rows: int | None, max_rounds: int) -> Iterator[Bench]:
    home = Path(tempfile.mkdtemp(prefix="streamfit-bench-"))
    try:
        data = ADULT_TRAIN
        if base_rows is not None:
            data = home / "adult_sample.csv"
            read_table(ADULT_TRAIN).sample(n=base_rows, random_state=0).to_csv(data, index=False)
        yield Bench(bootstrap_servers, home / "home", data, max_rounds)
    finally:
        shutil.rmtree(home, ignore_errors=True)


class Requests:
    """Request payloads from the Adult test split, cycled, with unique ids."""

    def __init__(self, target: str = "income") -> None:
        frame = read_table(ADULT_TEST).drop(columns=[target])
        self.rows: list[dict[str, Any]] = [
            {str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")
        ]

    def payload(self, request_id: str, i: int) -> bytes:
        return orjson.dumps({"request_id": request_id, "features": self.rows[i % len(self.rows)]})

    def batch(self, tag: str, start: int, count: int) -> list[tuple[bytes, bytes]]:
        """(key, value) of requests ``tag-start`` .. ``tag-(start+count-1)``."""
        out = []
        for i in range(start, start + count):
            request_id = f"{tag}-{i}"
            out.append((request_id.encode(), self.payload(request_id, i)))
        return out
