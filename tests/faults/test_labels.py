"""Labels that do not fit the happy path: for request ids never served, twice for the same request,
and before their request. Exactly one observation per served-and-labelled request, none for a
ghost, every odd label counted (not dead-lettered: a late or stray label is not bad input)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from kafka import KafkaProducer

from streamfit.common.kafka import make_producer
from streamfit.common.settings import Settings
from streamfit.predictor.service import Predictor
from tests.conftest import SettingsFactory
from tests.predictor.conftest import Models, TopicReader, running, send_requests, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

N = 100
HOLD_AGE = 2.0  # seconds an early label waits for its request (30 by default; shorter keeps the test short)


def send_labels(producer: KafkaProducer, settings: Settings, ids: list[str]) -> None:
    topic = settings.topic("labels")
    for i, request_id in enumerate(ids):
        value = orjson.dumps({"request_id": request_id, "label": "yes" if i % 2 else "no"})
        producer.send(topic, key=request_id.encode(), value=value)
    producer.flush()


def test_ghost_twice_and_early_labels_make_exactly_one_observation_per_served_request(
    make_settings: SettingsFactory,
    models_factory: Callable[[Settings], Models],
    reader: Callable[..., TopicReader],
) -> None:
    settings = make_settings()
    models_factory(settings).release("1")
    predictor = Predictor(settings)
    predictor.join.hold_age = HOLD_AGE
    metrics = predictor.metrics
    producer = make_producer(settings)
    predictions, observations = reader(settings, "predictions"), reader(settings, "observations")
    served = [f"served-{i}" for i in range(N)]
    twice = [f"twice-{i}" for i in range(N)]
    early = [f"early-{i}" for i in range(N)]
    ghosts = [f"ghost-{i}" for i in range(N)]
    with running(predictor):
        send_requests(producer, settings, served + twice)
        predictions.count(2 * N)
        send_labels(producer, settings, served + twice + twice + ghosts + early)
        wait_for(lambda: metrics.value("labels_total") >= 5 * N, what="every label read")
        send_requests(producer, settings, early, start=1000)  # their labels came first
        observations.count(3 * N)
        # Stray labels are held HOLD_AGE seconds, then counted as unknown; a trickle of requests turns the loop.
        trickle = 0

        def all_counted() -> bool:
            nonlocal trickle
            send_requests(producer, settings, [f"trickle-{trickle}"], start=2000 + trickle)
            trickle += 1
            return metrics.value("label_outcomes_total", {"outcome": "unknown"}) >= 2 * N

        wait_for(all_counted, 30, "the stray labels to be counted as unknown")
        predictions.count(3 * N + trickle)
        outcomes = {o: metrics.value("label_outcomes_total", {"outcome": o}) for o in ("joined", "held", "unknown")}
        dead = metrics.value("dead_letters_total", {"reason": "label"})
    per_id = Counter(o["request_id"] for o in observations.values)
    print(
        f"\n[fault] labels: requests={3 * N + trickle} labels={5 * N} (ghost={N}, twice={N}x2, early={N}, once={N}) "
        f"observations={sum(per_id.values())} outcomes={outcomes} dead_letters={dead:.0f}"
    )
    assert per_id == Counter(served + twice + early)  # one each: none for ghosts, none for a second label
    assert outcomes == {"joined": 3 * N, "held": 3 * N, "unknown": 2 * N}
    assert dead == 0
    producer.close()
