"""The predictor on real Kafka, a real MLflow store and real LightGBM models, run in-process."""

from __future__ import annotations

import random
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.structs import MemberState

from streamfit.common.kafka import make_admin, make_consumer, make_producer
from streamfit.common.messages import Label
from streamfit.common.settings import Settings
from streamfit.kafka_server import free_port
from streamfit.predictor.service import Predictor
from tests.conftest import SettingsFactory
from tests.predictor.conftest import (
    CLIENTS,
    Models,
    SteadyStream,
    TopicReader,
    features,
    request_json,
    running,
    send_requests,
    train,
    wait_for,
)

pytestmark = pytest.mark.kafka

ModelsFactory = Callable[..., Models]
ReaderFactory = Callable[..., TopicReader]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:  # not listening yet
        return 0, ""


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_waits_for_a_first_model_then_answers_every_request_once(
    kafka_client: str, make_settings: SettingsFactory, models_factory: ModelsFactory, reader: ReaderFactory
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port, batch_size=500, kafka_client=kafka_client)
    predictor = Predictor(settings)
    producer = make_producer(settings)
    ids = [f"req-{i}" for i in range(5000)]
    with running(predictor, ready=False):
        # No model: not ready, not in the group, nothing consumed, and it says so.
        wait_for(lambda: http_get(port, "/readyz")[0] == 503, what="readyz answering")
        assert "no model" in http_get(port, "/readyz")[1]
        assert http_get(port, "/healthz")[0] == 200
        send_requests(producer, settings, ids)
        assert predictor.assignment == frozenset() and predictor.metrics.value("requests_total") == 0

        models = models_factory(settings)
        published = models.release("1")
        predictions = reader(settings, "predictions").count(len(ids), timeout=60)

        assert len(predictions) == len(ids)
        assert Counter(p["request_id"] for p in predictions) == Counter(ids)  # one per request_id
        assert {p["model_version"] for p in predictions} == {published.version}
        assert all(p["prediction"] in ("yes", "no") and 0 <= p["score"] <= 1 for p in predictions)
        assert predictor.ready
        wait_for(lambda: predictor.metrics.value("predictions_total") == len(ids), what="predictions counted")
        status, body = http_get(port, "/readyz")
        assert status == 200 and "serving version 1" in body
        status, metrics = http_get(port, "/metrics")
        assert status == 200
        assert "streamfit_predictor_predictions_total 5000.0" in metrics
        assert "streamfit_predictor_model_version 1.0" in metrics
        assert "streamfit_predictor_swaps_total 1.0" in metrics
        assert "streamfit_predictor_batch_size_bucket" in metrics and "streamfit_predictor_ready 1.0" in metrics
    producer.close()


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_three_new_models_under_a_steady_stream_swap_in_order_and_miss_nothing(
    kafka_client: str, make_settings: SettingsFactory, models_factory: ModelsFactory, reader: ReaderFactory
) -> None:
    settings = make_settings(kafka_client=kafka_client)
    models = models_factory(settings)
    models.release("1", seed=1)
    predictor = Predictor(settings)
    predictions = reader(settings, "predictions")
    with running(predictor), SteadyStream(settings) as stream:
        for version, seed in (("2", 2), ("3", 3), ("4", 4)):
            served = len(predictions.values)
            predictions.until(lambda values, n=served: len(values) >= n + 100, what="answers by the serving version")
            models.release(version, seed=seed)
            predictions.until(lambda values, v=version: any(p["model_version"] == v for p in values[-200:]),
                              what=f"predictions by version {version}")  # fmt: skip
    sent = stream.ids
    values = predictions.until(lambda values: {p["request_id"] for p in values} >= set(sent), what="every answer")
    assert Counter(p["request_id"] for p in values) == Counter(sent)  # none missing, none twice
    for partition in {p for p, _, _, _ in predictions.records}:  # versions only ever move forward
        versions = [int(v["model_version"]) for p, _, _, v in sorted(predictions.records) if p == partition]
        assert versions == sorted(versions), f"partition {partition} went back to an older version"
    assert {v["model_version"] for v in values} == {"1", "2", "3", "4"}
    assert predictor.metrics.value("swaps_total") == 4
    assert predictor.metrics.value("swap_failures_total", {"reason": "schema"}) == 0
    assert predictor.metrics.value("dead_letters_total", {"reason": "schema"}) == 0


def test_forged_or_incompatible_bundles_are_refused_while_the_old_version_serves(
    make_settings: SettingsFactory, models_factory: ModelsFactory, reader: ReaderFactory
) -> None:
    settings = make_settings()
    models = models_factory(settings)
    first = models.release("1")
    predictor = Predictor(settings)
    producer = make_producer(settings)
    predictions = reader(settings, "predictions")
    with running(predictor):
        metrics = predictor.metrics

        def refused(reason: str) -> None:  # one at a time: the follower coalesces what arrives together
            wait_for(lambda: metrics.value("swap_failures_total", {"reason": reason}) == 1, what=f"{reason} refusal")

        models.publish("1", first.uri, first.sha256)  # the version already serving: a no-op
        uri, sha = models.store_bundle(train(seed=7))
        models.publish("2", uri, "0" * 64)  # a wrong sha256
        refused("sha256")
        models.publish("3", "file:///etc/passwd", sha)  # outside the model store
        refused("uri")
        uri, sha = models.store_bundle(train(seed=8, extra=True))
        models.publish("4", uri, sha)  # another feature schema
        refused("schema")
        assert metrics.value("swaps_total") == 1 and predictor.model_version == "1"

        ids = [f"after-{i}" for i in range(300)]
        send_requests(producer, settings, ids)
        values = predictions.count(len(ids))
        assert {p["model_version"] for p in values} == {"1"}
        assert {p["request_id"] for p in values} == set(ids)
    producer.close()


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_labels_after_a_delay_become_observations_and_every_n_a_retrain_signal(
    kafka_client: str, make_settings: SettingsFactory, models_factory: ModelsFactory, reader: ReaderFactory
) -> None:
    settings = make_settings(retrain_every=50, kafka_client=kafka_client)
    models_factory(settings).release("1")
    producer = make_producer(settings)
    predictions, observations = reader(settings, "predictions"), reader(settings, "observations")
    retrain, dead = reader(settings, "retrain"), reader(settings, "dead-letters")
    ids = [f"lab-{i}" for i in range(200)]
    with running(Predictor(settings)) as predictor:
        send_requests(producer, settings, ids)
        served = {p["request_id"]: p for p in predictions.count(len(ids))}
        labels_topic = settings.topic("labels")
        truth = {request_id: ("yes" if i % 2 else "no") for i, request_id in enumerate(ids[:150])}
        for request_id, label in truth.items():
            producer.send(
                labels_topic, key=request_id.encode(), value=Label(request_id=request_id, label=label).encode()
            )
        for i in range(10):  # never served here: counted, not an error
            producer.send(labels_topic, key=b"ghost", value=Label(request_id=f"ghost-{i}", label="yes").encode())
        for request_id in ids[150:155]:  # not a class of the model: dead letters
            producer.send(
                labels_topic, key=request_id.encode(), value=Label(request_id=request_id, label="maybe").encode()
            )
        carried = [f"carry-{i}" for i in range(50)]  # requests that carry their label
        send_requests(producer, settings, carried, start=1000, label="yes")

        joined = observations.count(200)
        signals = retrain.count(4)
        letters = dead.count(5)
        metrics = predictor.metrics
        wait_for(lambda: metrics.value("label_outcomes_total", {"outcome": "held"}) == 10, what="held labels counted")
        wait_for(lambda: metrics.value("observations_total") == 200, what="observations counted")
        assert metrics.value("label_outcomes_total", {"outcome": "joined"}) == 150  # from the labels topic
        assert metrics.value("retrain_signals_total") == 4

    assert len(joined) == 200
    assert {o["request_id"] for o in joined} == set(truth) | set(carried)
    served.update({p["request_id"]: p for p in predictions.count(250)})
    for o in joined:
        answer = served[o["request_id"]]
        assert (o["prediction"], o["score"], o["model_version"]) == (answer["prediction"], answer["score"], "1")
        assert o["label"] == truth.get(o["request_id"], "yes")
        kind, number = o["request_id"].split("-")
        index = int(number) + (1000 if kind == "carry" else 0)
        assert o["features"] == features(index), "the observation carries the features that were served"
    assert len(signals) == 4 and all(s["reason"] == "count" and s["observations"] == 50 for s in signals)
    assert {key for _, _, key, _ in retrain.records} == {settings.model_name.encode()}
    assert len(letters) == 5 and all(d["source_topic"] == labels_topic and "not a class" in d["error"] for d in letters)
    producer.close()


def malformed(i: int) -> bytes | None:
    good = features(i)
    kinds: list[bytes | None] = [
        b"not json at all",
        b"[1, 2, 3]",
        orjson.dumps({"features": good}),
        orjson.dumps({"request_id": "", "features": good}),
        orjson.dumps({"request_id": f"bad-{i}", "features": {**good, "x1": "forty"}}),
        orjson.dumps({"request_id": f"bad-{i}", "features": {"x1": 1.0, "color": "red"}}),
        orjson.dumps({"request_id": f"bad-{i}", "features": {**good, "x2": [1, 2]}}),
        None,
        b"\xff\xfe\x00 not utf-8",
        orjson.dumps({"request_id": f"bad-{i}", "features": {**good, "note": "x" * 2000}}),
        orjson.dumps({"request_id": i, "features": good}),
        b'{"request_id": "nan", "features": {"x1": NaN}}',
    ]
    return kinds[i % len(kinds)]


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_malformed_messages_are_dead_lettered_and_valid_ones_answered(
    kafka_client: str, make_settings: SettingsFactory, models_factory: ModelsFactory, reader: ReaderFactory
) -> None:
    settings = make_settings(max_message_bytes=1024, kafka_client=kafka_client)
    models_factory(settings).release("1")
    producer = make_producer(settings)
    topic = settings.topic("requests")
    order = [("good", i) for i in range(1000)] + [("bad", i) for i in range(1000)]
    random.Random(3).shuffle(order)
    for kind, i in order:
        if kind == "good":
            producer.send(topic, key=f"good-{i}".encode(), value=request_json(f"good-{i}", i))
        else:
            producer.send(topic, key=f"bad-{i}".encode(), value=malformed(i))
    producer.flush()
    with running(Predictor(settings)) as predictor:
        letters = reader(settings, "dead-letters").count(1000)
        answers = reader(settings, "predictions").count(1000)
        assert predictor.ready
        by_reason = {r: predictor.metrics.value("dead_letters_total", {"reason": r})
                     for r in ("decode", "schema", "features", "too_large")}  # fmt: skip
    assert sorted(p["request_id"] for p in answers) == sorted(f"good-{i}" for i in range(1000))
    assert len(letters) == 1000
    assert all(d["source_topic"] == topic and d["error"] and d["offset"] >= 0 for d in letters)
    assert len({(d["partition"], d["offset"]) for d in letters}) == 1000
    assert by_reason == {"decode": 417, "schema": 334, "features": 166, "too_large": 83}
    assert any(d["payload_encoding"] == "base64" for d in letters)
    assert any("missing feature 'x2'" in d["error"] for d in letters)
    assert any("must be a number" in d["error"] for d in letters)
    producer.close()


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_two_replicas_share_the_partitions_and_both_swap(
    kafka_client: str, make_settings: SettingsFactory, models_factory: ModelsFactory, reader: ReaderFactory
) -> None:
    settings = make_settings(kafka_client=kafka_client)
    models = models_factory(settings)
    models.release("1")
    producer = make_producer(settings)
    predictions = reader(settings, "predictions")
    one, two = Predictor(settings, replica_id="one"), Predictor(settings, replica_id="two")
    with running(one), running(two):
        wait_for(lambda: not one.assignment & two.assignment and len(one.assignment | two.assignment) == 6,
                 what="a shared assignment")  # fmt: skip
        assert (
            {tp.topic for tp in one.assignment}
            == {tp.topic for tp in two.assignment}
            == {settings.topic("requests"), settings.topic("labels")}
        )
        for replica in (one, two):  # partition i of requests and of labels go to the same replica
            parts = {tp.topic: set() for tp in replica.assignment}
            for tp in replica.assignment:
                parts[tp.topic].add(tp.partition)
            assert len(set(map(frozenset, parts.values()))) == 1

        first = [f"a-{i}" for i in range(600)]
        send_requests(producer, settings, first)
        predictions.until(lambda values: {p["request_id"] for p in values} >= set(first), what="first answers")

        def answered() -> tuple[float, float]:
            return one.metrics.value("predictions_total"), two.metrics.value("predictions_total")

        wait_for(lambda: sum(answered()) == 600, what="600 answers counted")
        assert min(answered()) > 0, f"one replica answered nothing: {answered()}"

        models.release("2", seed=5)
        wait_for(lambda: one.model_version == two.model_version == "2", what="both replicas on version 2")
        second = [f"b-{i}" for i in range(300)]
        send_requests(producer, settings, second, start=600)
        values = predictions.until(lambda values: {p["request_id"] for p in values} >= set(first + second))
    assert {p["model_version"] for p in values if p["request_id"] in set(second)} == {"2"}
    producer.close()


def test_with_compiled_trees_the_predictor_answers_through_them_as_lightgbm_would(
    make_settings: SettingsFactory, models_factory: ModelsFactory, reader: ReaderFactory
) -> None:
    pytest.importorskip("lleaves")
    settings = make_settings(compiled_trees=True)
    models_factory(settings).release("1", seed=1)
    predictor = Predictor(settings)
    producer = make_producer(settings)
    ids = [f"req-{i}" for i in range(400)]
    with running(predictor):
        wait_for(lambda: predictor.metrics.value("serving_compiled") == 1, timeout=60, what="compiled trees serving")
        assert predictor.model is not None and predictor.model.compiled is not None
        send_requests(producer, settings, ids)
        predictions = reader(settings, "predictions").count(len(ids), timeout=60)
    expected, scores = train(seed=1).predict([features(i) for i in range(len(ids))])
    by_id = {p["request_id"]: p for p in predictions}
    assert [by_id[i]["prediction"] for i in ids] == expected
    assert max(abs(by_id[i]["score"] - s) for i, s in zip(ids, scores, strict=True)) <= 1e-9
    assert predictor.metrics.value("compile_failures_total") == 0


def limit_messages(settings: Settings, topic: str, max_bytes: int | None) -> None:
    """Make the broker refuse (``max_bytes``) or take again (None) the topic's larger messages."""
    admin = make_admin(settings)
    try:
        value = ("DELETE", None) if max_bytes is None else str(max_bytes)
        result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic(topic),
                                                     configs={"max.message.bytes": value})])  # fmt: skip
        assert not any(getattr(error, "errno", 0) for errors in result.values() for error in errors.values()), result
    finally:
        admin.close()


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_a_batch_the_broker_refuses_is_rolled_back_and_read_again_until_it_is_taken(
    kafka_client: str, make_settings: SettingsFactory, models_factory: ModelsFactory, reader: ReaderFactory
) -> None:
    """For a while the observations topic refuses every message (``max.message.bytes`` 64): each
    batch of labels is refused, its joins rolled back and the batch read again; requests sent
    meanwhile wait behind it. Once the topic takes them, every label is joined exactly once and every
    request is answered. (kafka-python's producer takes that refusal as fatal and its flush may then
    wait for good: the predictor bounds the wait by ``broker_timeout`` and opens a new producer.)"""
    settings = make_settings(kafka_client=kafka_client, broker_timeout=5.0)
    models_factory(settings).release("1")
    producer = make_producer(settings)
    predictions, observations = reader(settings, "predictions"), reader(settings, "observations")
    ids = [f"rw-{i}" for i in range(100)]
    later = [f"rw-{i}" for i in range(100, 150)]
    labels_topic = settings.topic("labels")
    with running(Predictor(settings)) as predictor:
        metrics = predictor.metrics
        send_requests(producer, settings, ids)
        predictions.until(lambda values: {v["request_id"] for v in values} >= set(ids), what="every request answered")
        limit_messages(settings, "observations", 64)
        try:
            for request_id in ids:
                producer.send(labels_topic, key=request_id.encode(),
                              value=Label(request_id=request_id, label="yes").encode())  # fmt: skip
            producer.flush()
            wait_for(lambda: metrics.value("batch_retries_total") >= 2, what="a refused batch retried twice")
            send_requests(producer, settings, later, start=100)
            assert metrics.value("observations_total") == 0
        finally:
            limit_messages(settings, "observations", None)
        wait_for(lambda: metrics.value("observations_total") == len(ids), what="every label joined")
        predictions.until(lambda values: {v["request_id"] for v in values} >= set(ids + later),
                          what="every request answered")  # fmt: skip
        assert metrics.value("label_outcomes_total", {"outcome": "joined"}) == len(ids)
        assert metrics.value("batch_retries_total") >= 2
    observations.count(len(ids))
    observations.poll(1000)  # anything more the predictor wrote
    assert sorted(o["request_id"] for o in observations.values) == sorted(ids)  # each label joined once
    producer.close()


def group_state(settings: Settings, group_id: str) -> str | None:
    admin = make_admin(settings)
    try:
        return next((g["group_state"] for g in admin.list_groups() if g["group_id"] == group_id), None)
    finally:
        admin.close()


def uncommitted(settings: Settings, group_id: str) -> int:
    """Requests on the topic past the group's committed offsets."""
    consumer = make_consumer(settings, group_id, client_id="test-committed")  # never subscribes: no join
    try:
        topic = settings.topic("requests")
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        ends = consumer.end_offsets(partitions)
        return sum(ends[tp] - (consumer.committed(tp) or 0) for tp in partitions)
    finally:
        consumer.close()


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_a_consumer_that_lost_its_group_without_knowing_it_joins_again(
    guarantee: str, make_settings: SettingsFactory, models_factory: ModelsFactory, reader: ReaderFactory
) -> None:
    """kafka-python 3.0.12 can abandon a join it started and stay "rebalancing" with its heartbeats
    off, fetching from its old partitions while the broker expires it from the group; every commit
    is then refused, and nothing in the client joins again (the serving benchmark's exactly-once
    predictor answered nothing for ten minutes so). That state is made here by hand in the
    predictor's own consumer. After commits refused in a row for 15 s the predictor leaves the group
    and joins again: every request is answered and every offset committed."""
    settings = make_settings(kafka_client="kafka-python", processing_guarantee=guarantee)  # a kafka-python fault
    models_factory(settings).release("1")
    producer = make_producer(settings)
    predictions = reader(settings, "predictions", read_committed=True)
    ids = [f"lost-{i}" for i in range(20)]

    def answered(wanted: list[str]) -> Callable[[list[dict[str, object]]], bool]:
        return lambda values: {v["request_id"] for v in values} >= set(wanted)

    with running(Predictor(settings)) as predictor:
        send_requests(producer, settings, ids[:5])
        predictions.until(answered(ids[:5]), what="first answers")
        coordinator = predictor._consumer._coordinator  # type: ignore[union-attr]
        with coordinator._lock:  # what the abandoned join left, as read from the stuck predictor
            coordinator.state, coordinator.rejoining = MemberState.REBALANCING, True
        coordinator._disable_heartbeat()
        wait_for(lambda: group_state(settings, predictor.group_id) == "Empty", what="the broker expired the member")
        for start in range(5, 20, 5):  # three batches at least: at-least-once does not repeat a batch
            send_requests(producer, settings, ids[start : start + 5], start=start)
            if guarantee == "at-least-once":
                predictions.until(answered(ids[start : start + 5]), what="answers")
        predictions.until(answered(ids), timeout=60, what="every request answered")
        wait_for(lambda: uncommitted(settings, predictor.group_id) == 0, timeout=60, what="every offset committed")
        assert predictor.metrics.value("group_rejoins_total") >= 1
        assert predictor.metrics.value("commit_failures_total" if guarantee == "at-least-once"
                                       else "batch_retries_total") >= 3  # fmt: skip
    producer.close()
