"""Kafka wiring against the real test broker."""

import time

import pytest
from kafka.admin import NewTopic

from streamfit.common.errors import BrokerUnavailable, ConfigError
from streamfit.common.kafka import ensure_topics, make_admin, make_consumer, make_producer, read_last, send_and_wait
from streamfit.common.messages import Label, decode
from streamfit.common.settings import load_settings
from tests.conftest import SettingsFactory, unique_group

pytestmark = pytest.mark.kafka


def test_ensure_topics_creates_all_and_is_safe_twice(settings_factory: SettingsFactory) -> None:
    settings = settings_factory(partitions=2)
    first = ensure_topics(settings)
    second = ensure_topics(settings)
    assert first == second
    assert first[settings.topic("requests")] == first[settings.topic("labels")] == 2
    assert first[settings.topic("models")] == 1 and first[settings.topic("retrain")] == 1
    assert len(first) == 7


def test_requests_and_labels_with_different_partitions_are_refused(settings_factory: SettingsFactory) -> None:
    settings = settings_factory(partitions=2)
    admin = make_admin(settings)
    try:
        admin.create_topics([NewTopic(settings.topic("labels"), num_partitions=3, replication_factor=1)])
    finally:
        admin.close()
    with pytest.raises(ConfigError, match="must have the same partition count"):
        ensure_topics(settings)


def test_produce_and_consume_through_a_group(settings_factory: SettingsFactory) -> None:
    settings = settings_factory(partitions=2)
    ensure_topics(settings)
    producer = make_producer(settings)
    for i in range(20):
        producer.send(settings.topic("labels"), key=f"r{i}".encode(), value=Label(request_id=f"r{i}", label=i).encode())
    producer.flush()
    producer.close()
    started = time.monotonic()
    consumer = make_consumer(settings, unique_group(), [settings.topic("labels")])
    seen: set[str] = set()
    try:
        while len(seen) < 20 and time.monotonic() - started < 20:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    message = decode(Label, record.value)
                    assert isinstance(message, Label)
                    seen.add(message.request_id)
        consumer.commit()
    finally:
        consumer.close()
    assert seen == {f"r{i}" for i in range(20)}
    assert time.monotonic() - started < 15, "group join should take seconds, not twenty"


def test_read_last_gives_the_last_record(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    ensure_topics(settings)
    assert read_last(settings, settings.topic("models")) is None
    producer = make_producer(settings)
    for i in range(3):
        send_and_wait(producer, settings.topic("models"), "m", Label(request_id=str(i), label=i))
    producer.close()
    last = read_last(settings, settings.topic("models"))
    assert last is not None and last[0] == b"m" and b'"request_id":"2"' in last[1]


def test_unreachable_broker_is_one_clear_error() -> None:
    from streamfit.kafka_server import free_port

    settings = load_settings(bootstrap_servers=f"127.0.0.1:{free_port()}", broker_timeout=2)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="STREAMFIT_BOOTSTRAP_SERVERS"):
        ensure_topics(settings)
    assert time.monotonic() - started < 15
