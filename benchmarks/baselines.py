"""The two systems the predictor is measured against, each a process of its own like the predictor.

- ``echo``: the ceiling. The predictor's own client, configuration and batching (``collect``, the
  same consumer, the same producer linger, one flush and one commit per batch), and no model: the
  request is not even read, and its answer is a fixed prediction-sized message under its key, so
  that both write the same bytes. On either Kafka client, as the predictor (``kafka_client``); one
  batch at a time on both (the predictor on librdkafka polls and predicts the next batch while
  the previous one's acknowledgements are awaited).
- ``seed``: the loop the project replaces, as faithfully as we know it: per message, JSON (the
  standard library) to a one-row DataFrame, the feature transform, ``predict``, ``send``, ``flush``;
  offsets auto-committed. Same model (the champion's bundle), same topics and partitions.

``python -m benchmarks.baselines echo|seed`` reads its settings from the ``STREAMFIT_*``
environment, like ``streamfit predictor``, and stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import pandas as pd

from streamfit.common import confluent
from streamfit.common.kafka import await_partitions, make_consumer, make_producer, read_last
from streamfit.common.messages import ModelReload, decode
from streamfit.common.model_store import ModelStore
from streamfit.common.settings import Settings, load_settings
from streamfit.predictor.batching import collect
from streamfit.predictor.encoding import prediction_json
from streamfit.predictor.service import POLL_WAIT_MS, PRODUCER_LINGER_MS

_running = True


def _stop(signum: int, frame: Any) -> None:
    global _running
    _running = False


def echo(settings: Settings) -> None:
    consumer: Any
    producer: Any
    if settings.kafka_client == "confluent":  # the echo of the serving loop on librdkafka
        consumer = confluent.Consumer(settings, settings.group_id("echo"), "bench-echo")
        await_partitions(consumer, settings, {settings.topic("requests"): 1})
        consumer.subscribe([settings.topic("requests")])
        producer = confluent.Producer(settings, "bench-echo")
    else:
        consumer = make_consumer(settings, settings.group_id("echo"), [settings.topic("requests")],
                                 client_id="bench-echo")  # fmt: skip
        producer = make_producer(settings, client_id="bench-echo", linger_ms=PRODUCER_LINGER_MS)
    answers = settings.topic("predictions")
    try:
        while _running:
            batch = collect(
                lambda ms, n: consumer.poll(timeout_ms=ms, max_records=n),
                settings.batch_size, POLL_WAIT_MS, settings.batch_timeout_ms,
            )  # fmt: skip
            if not batch.records:
                continue
            at = time.time()
            for record in batch.records:
                value = prediction_json(record.key.decode(), "echo", 0.5, "echo", at)
                producer.send(answers, key=record.key, value=value, partition=record.partition)
            producer.flush()
            consumer.commit(batch.offsets())
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)


def _champion(settings: Settings) -> Any:
    """The bundle the last reload message names: the model the predictor would serve."""
    deadline = time.monotonic() + 60
    while True:
        last = read_last(settings, settings.topic("models"))
        if last is not None:
            message = decode(ModelReload, last[1])
            if not isinstance(message, ModelReload):
                raise SystemExit(f"the last message on {settings.topic('models')} is not a reload: {message}")
            return ModelStore(settings).fetch_bundle(message.uri, message.sha256)
        if time.monotonic() > deadline:
            raise SystemExit("no model published within 60 s")
        time.sleep(0.5)


def seed(settings: Settings) -> None:
    bundle = _champion(settings)
    pipeline, booster = bundle.pipeline, bundle.booster
    consumer = make_consumer(
        settings, settings.group_id("seed"), [settings.topic("requests")], client_id="bench-seed",
        enable_auto_commit=True, max_poll_records=500,
    )  # fmt: skip
    producer = make_producer(settings, client_id="bench-seed")
    answers = settings.topic("predictions")
    negative, positive = pipeline.classes if pipeline.task == "binary" else (None, None)
    try:
        while _running:
            for records in consumer.poll(timeout_ms=POLL_WAIT_MS).values():
                for record in records:
                    request = json.loads(record.value)
                    frame = pd.DataFrame([request["features"]])
                    score = float(booster.predict(pipeline.transform_frame(frame))[0])
                    answer = {
                        "request_id": request["request_id"], "prediction": positive if score >= 0.5 else negative,
                        "score": score, "model_version": "seed", "predicted_at": time.time(),
                    }  # fmt: skip
                    producer.send(answers, key=record.key, value=json.dumps(answer).encode())
                    producer.flush()
    finally:
        consumer.close()
        producer.close(timeout=5)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["echo"], ["seed"]):
        print("usage: python -m benchmarks.baselines echo|seed  (settings from STREAMFIT_* variables)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settings = load_settings()
    (echo if args[0] == "echo" else seed)(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
