"""Kafka wiring: clients with the security settings and low-latency defaults, and the topics.

Every client of every service is built here, so that TLS/SASL settings, timeouts and the
"broker unreachable" error are the same everywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from common.errors import BrokerUnavailable, ConfigError
from common.messages import Message
from common.settings import Settings

log = logging.getLogger(__name__)

TOPICS = ("requests", "predictions", "labels", "observations", "retrain", "models", "dead-letters")
CO_PARTITIONED = ("requests", "labels", "predictions", "observations")
KEEP_FOREVER = {"retention.ms": "-1"}  # observations are training data; models holds the champion


def client_config(settings: Settings, client_id: str = "streamfit") -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": 30_000,
        "reconnect_backoff_max_ms": 2_000,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        config.update(
            ssl_cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
            ssl_password=settings.ssl_password.get_secret_value() if settings.ssl_password else None,
            ssl_check_hostname=settings.ssl_check_hostname,
        )
    if settings.security_protocol.startswith("SASL"):
        config.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
        )
    return config


def _unavailable(settings: Settings, exc: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"no Kafka broker answered at {settings.bootstrap_servers} within {settings.broker_timeout:.0f}s "
        f"({type(exc).__name__}: {exc}); start one (`streamfit broker`) or set "
        "--bootstrap-servers / STREAMFIT_BOOTSTRAP_SERVERS (and the security settings if it needs them)"
    )


def make_producer(settings: Settings, client_id: str = "streamfit", **overrides: Any) -> KafkaProducer:
    config = client_config(settings, client_id)
    config.update(
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        batch_size=256 * 1024,
        max_block_ms=int(settings.broker_timeout * 1000),
        bootstrap_timeout_ms=int(settings.broker_timeout * 1000),
        compression_type=None,
    )
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc


def make_consumer(
    settings: Settings,
    group_id: str | None,
    topics: Iterable[str] = (),
    client_id: str = "streamfit",
    **overrides: Any,
) -> KafkaConsumer:
    """A consumer that commits by hand and joins its group in seconds, not twenty."""
    config = client_config(settings, client_id)
    config.update(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=300_000,
        max_poll_records=settings.batch_size,
        fetch_max_wait_ms=50,
        isolation_level="read_committed" if settings.processing_guarantee == "exactly-once" else "read_uncommitted",
        bootstrap_timeout_ms=int(settings.broker_timeout * 1000),
    )
    config.update(overrides)
    try:
        consumer = KafkaConsumer(**config)
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc
    topics = list(topics)
    if topics:
        consumer.subscribe(topics)
    return consumer


def make_admin(settings: Settings) -> KafkaAdminClient:
    config = client_config(settings, "streamfit-admin")
    config["bootstrap_timeout_ms"] = int(settings.broker_timeout * 1000)
    try:
        return KafkaAdminClient(**config)
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc


def topic_plan(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Partitions and configs of every topic. The one-partition topics are ordered logs."""
    plan: dict[str, tuple[int, dict[str, str]]] = {}
    for name in TOPICS:
        partitions = settings.partitions if name in CO_PARTITIONED else 1
        config = KEEP_FOREVER if name in ("observations", "models") else {}
        plan[settings.topic(name)] = (partitions, dict(config))
    return plan


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create every missing topic; safe to call twice and from several processes at once.

    Returns the partition count of each topic, and refuses a requests/labels pair whose counts
    differ (the label join needs them co-partitioned).
    """
    plan = topic_plan(settings)
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=parts, replication_factor=1, topic_configs=config)
            for name, (parts, config) in plan.items()
            if name not in existing
        ]
        for topic in missing:
            try:
                admin.create_topics([topic])
                log.info("created topic %s (%d partitions)", topic.name, topic.num_partitions)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    counts = partition_counts(settings, list(plan))
    requests, labels = counts[settings.topic("requests")], counts[settings.topic("labels")]
    if requests != labels:
        raise ConfigError(
            f"topics {settings.topic('requests')} ({requests} partitions) and {settings.topic('labels')} "
            f"({labels}) must have the same partition count for the label join; recreate one of them"
        )
    return counts


def partition_counts(settings: Settings, topics: list[str], timeout: float = 15.0) -> dict[str, int]:
    consumer = make_consumer(settings, group_id=None)
    try:
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        while True:
            for topic in topics:
                parts = consumer.partitions_for_topic(topic)
                if parts:
                    counts[topic] = len(parts)
            if len(counts) == len(topics) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        missing = set(topics) - set(counts)
        if missing:
            raise BrokerUnavailable(f"topics {sorted(missing)} have no metadata after {timeout:.0f}s")
        return counts
    finally:
        consumer.close()


def send_and_wait(producer: KafkaProducer, topic: str, key: str, message: Message, timeout: float = 30.0) -> Any:
    """Produce one message and wait for the broker's acknowledgement (its record metadata)."""
    future = producer.send(topic, key=key.encode(), value=message.encode())
    producer.flush(timeout=timeout)
    return future.get(timeout=timeout)


def read_last(settings: Settings, topic: str, timeout: float = 10.0) -> tuple[bytes | None, bytes] | None:
    """The last record of a one-partition topic (key, value), or None if it is empty."""
    consumer = make_consumer(settings, group_id=None, client_id="streamfit-last")
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        if end == 0:
            return None
        # Read a short tail, not just end-1: with transactions the last offset is a commit marker.
        consumer.seek(tp, max(0, end - 20))
        last: tuple[bytes | None, bytes] | None = None
        deadline = time.monotonic() + timeout
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    last = (record.key, record.value)
        return last
    finally:
        consumer.close()
