"""The serving loop's Kafka clients on librdkafka (``STREAMFIT_KAFKA_CLIENT=confluent``; ``pip
install 'streamfit[confluent]'``), behind the part of kafka-python's interface the predictor uses.

The predictor speaks kafka-python: ``poll`` answers ``{TopicPartition: [record, ...]}``, ``send``
answers a future, errors are ``kafka.errors`` types. ``Consumer`` and ``Producer`` here give the same
answers from confluent-kafka's clients, so the loop, its batching, its rewinds and its transactions
are one code on both clients. librdkafka parses and batches in C on its own threads, which is where
kafka-python spends half of the predictor's CPU (docs/benchmarks.md).

Only the serving loop runs here; topics, the models topic, the trainer and the sample app stay on
kafka-python (they move a few messages a second).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError, ProducerFencedError

from streamfit.common.errors import BrokerUnavailable, ConfigError
from streamfit.common.settings import Settings

log = logging.getLogger(__name__)

CONSUME_MAX: Final = 500  # messages per consume() call when the caller sets no bound


def _library() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        raise ConfigError(
            "STREAMFIT_KAFKA_CLIENT=confluent needs confluent-kafka: pip install 'streamfit[confluent]' "
            "(or set STREAMFIT_KAFKA_CLIENT=kafka-python, the default)"
        ) from exc
    return confluent_kafka


def describe() -> str:
    """The client's name and versions, for the predictor's first log line."""
    ck = _library()
    return f"librdkafka {ck.libversion()[0]} (confluent-kafka {ck.version()[0]})"


def config(settings: Settings, client_id: str) -> dict[str, Any]:
    """librdkafka's names for what ``common.kafka.client_config`` gives kafka-python."""
    out: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": client_id,
        "security.protocol": settings.security_protocol,
        "socket.timeout.ms": 30_000,
        "reconnect.backoff.max.ms": 2_000,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        files = {"ssl.ca.location": settings.ssl_cafile, "ssl.certificate.location": settings.ssl_certfile,
                 "ssl.key.location": settings.ssl_keyfile}  # fmt: skip
        out.update({key: str(path) for key, path in files.items() if path})
        if settings.ssl_password:
            out["ssl.key.password"] = settings.ssl_password.get_secret_value()
        out["ssl.endpoint.identification.algorithm"] = "https" if settings.ssl_check_hostname else "none"
    if settings.security_protocol.startswith("SASL"):
        out["sasl.mechanism"] = settings.sasl_mechanism
        out["sasl.username"] = settings.sasl_username or ""
        out["sasl.password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    return out


def _translated(exc: Exception, doing: str) -> Exception:
    """A confluent-kafka error as the ``kafka.errors`` type the loop handles: fenced, or retried."""
    ck = _library()
    error = exc.args[0] if exc.args and isinstance(exc.args[0], ck.KafkaError) else None
    if error is None:
        return _kafka_error(KafkaError, doing, exc)
    if error.fatal():
        return BrokerUnavailable(f"librdkafka reported a fatal error {doing}: {error.str()}; the client cannot go on")
    fenced = (ck.KafkaError._FENCED, ck.KafkaError.PRODUCER_FENCED, ck.KafkaError.INVALID_PRODUCER_EPOCH)
    kind = KafkaError
    if error.code() in fenced:
        kind = ProducerFencedError
    elif error.code() == ck.KafkaError._TIMED_OUT:
        kind = KafkaTimeoutError
    return _kafka_error(kind, doing, error.str())


def _kafka_error(kind: Any, doing: str, what: object) -> Exception:
    out: Exception = kind(f"{doing}: {what}")
    return out


def _positions(ck: Any, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> list[Any]:
    """kafka-python's offsets to commit as librdkafka's partitions with offsets."""
    return [ck.TopicPartition(tp.topic, tp.partition, meta.offset) for tp, meta in offsets.items()]


class Record:
    """One consumed message, with the attributes of kafka-python's ``ConsumerRecord`` the loop reads."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 timestamp: int) -> None:  # fmt: skip
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.timestamp = key, value, timestamp


class Consumer:
    """A group member that commits by hand (``common.kafka.make_consumer``'s settings)."""

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        client_id: str,
        *,
        range_assignment: bool = False,
        on_commit_failure: Callable[[str], None] | None = None,
    ) -> None:
        ck = _library()
        self._ck = ck
        self._settings = settings
        conf = config(settings, client_id)
        conf.update({
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
            "fetch.wait.max.ms": 50,
            "isolation.level": "read_committed" if settings.processing_guarantee == "exactly-once"
            else "read_uncommitted",
            "partition.assignment.strategy": "range" if range_assignment else "cooperative-sticky",
        })  # fmt: skip
        self._on_commit_failure = on_commit_failure
        if on_commit_failure is not None:
            conf["on_commit"] = self._committed
        self._consumer = ck.Consumer(conf, logger=log)
        self._partitions: dict[tuple[str, int], TopicPartition] = {}

    def _tp(self, topic: str, partition: int) -> TopicPartition:
        key = (topic, partition)
        tp = self._partitions.get(key)
        if tp is None:
            tp = self._partitions[key] = TopicPartition(topic, partition)
        return tp

    def partitions_for_topic(self, topic: str) -> set[int]:
        try:
            metadata = self._consumer.list_topics(topic, timeout=self._settings.broker_timeout)
        except self._ck.KafkaException as exc:
            raise _translated(exc, f"reading the metadata of {topic}") from exc
        found = metadata.topics.get(topic)
        return set(found.partitions) if found is not None and found.error is None else set()

    def subscribe(self, topics: Iterable[str]) -> None:
        self._consumer.subscribe(list(topics))

    def unsubscribe(self) -> None:
        self._consumer.unsubscribe()

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        """What the client holds now, up to ``max_records``; if nothing, waits up to ``timeout_ms``
        for a first record (kafka-python's ``poll``: librdkafka's ``consume`` would wait until the
        whole count arrived, holding the records it has)."""
        most = max_records or CONSUME_MAX
        messages = self._consumer.consume(num_messages=most, timeout=0)
        if not messages and timeout_ms > 0:
            first = self._consumer.poll(timeout_ms / 1000)
            if first is None:
                return {}
            messages = [first, *self._consumer.consume(num_messages=most - 1, timeout=0)] if most > 1 else [first]
        out: dict[TopicPartition, list[Record]] = {}
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise BrokerUnavailable(f"librdkafka reported a fatal consumer error: {error.str()}")
                log.warning("consumer: %s", error.str())
                continue
            topic, partition = m.topic(), m.partition()
            tp = self._tp(topic, partition)
            records = out.get(tp)
            if records is None:
                records = out[tp] = []
            records.append(Record(topic, partition, m.offset(), m.key(), m.value(), m.timestamp()[1]))
        return out

    def assignment(self) -> set[TopicPartition]:
        return {self._tp(p.topic, p.partition) for p in self._consumer.assignment()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(self._ck.TopicPartition(tp.topic, tp.partition, offset))
        except self._ck.KafkaException as exc:
            raise _translated(exc, f"seeking {tp.topic}[{tp.partition}] to {offset}") from exc

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit ``offsets``; without waiting for the broker when the consumer was given
        ``on_commit_failure`` (which then hears of a refusal), else waiting and raising it."""
        wanted = _positions(self._ck, offsets)
        try:
            self._consumer.commit(offsets=wanted, asynchronous=self._on_commit_failure is not None)
        except self._ck.KafkaException as exc:
            raise CommitFailedError(f"committing {len(wanted)} offset(s): {exc}") from exc

    def _committed(self, error: Any, partitions: list[Any]) -> None:
        failed = [p for p in partitions if p.error is not None]
        if error is not None or failed:
            what = error.str() if error is not None else failed[0].error.str()
            assert self._on_commit_failure is not None
            self._on_commit_failure(f"{len(failed) or len(partitions)} offset(s) not committed: {what}")

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def close(self, autocommit: bool = False) -> None:
        del autocommit  # never: offsets are committed by hand, with the batch's output
        self._consumer.close()


class _Deliveries:
    """What ``send`` answers: one object for every message sent between two flushes, failed when
    any of them was refused (librdkafka's delivery reports, served by ``flush``). The loop sends a
    batch, flushes, and rewinds the whole batch if any answer failed: one object per flush says the
    same as one per message, without a callback per message."""

    __slots__ = ("exception",)

    def __init__(self) -> None:
        self.exception: Exception | None = None

    def failed(self) -> bool:
        return self.exception is not None


class Producer:
    """An idempotent producer; transactional when ``transactional_id`` is given."""

    def __init__(self, settings: Settings, client_id: str, *, transactional_id: str | None = None,
                 linger_ms: int = 5) -> None:  # fmt: skip
        ck = _library()
        self._ck = ck
        self._timeout = settings.broker_timeout
        conf = config(settings, client_id)
        conf.update({"acks": "all", "enable.idempotence": True, "linger.ms": linger_ms, "batch.size": 256 * 1024,
                     "on_delivery": self._delivered})  # fmt: skip
        if transactional_id:
            conf["transactional.id"] = transactional_id
        self._producer = ck.Producer(conf, logger=log)
        self._produce = self._producer.produce
        self._deliveries = _Deliveries()

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None and self._deliveries.exception is None:
            self._deliveries.exception = KafkaError(f"delivery to {message.topic()}: {error.str()}")

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None,
             partition: int | None = None) -> _Deliveries:  # fmt: skip
        while True:
            try:
                self._produce(topic, value, key, -1 if partition is None else partition)
                return self._deliveries
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.05)
            except self._ck.KafkaException as exc:
                raise _translated(exc, f"producing to {topic}") from exc

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message sent is delivered or refused; what ``send`` answered says which."""
        wait = self._timeout if timeout is None else timeout
        left = self._producer.flush(wait)
        self._deliveries = _Deliveries()  # the next messages answer to the next flush
        if left:
            raise KafkaTimeoutError(f"{left} message(s) not delivered within {wait:.0f}s (--broker-timeout)")

    def _call(self, doing: str, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except self._ck.KafkaException as exc:
            raise _translated(exc, doing) from exc

    def init_transactions(self) -> None:
        self._call("initialising transactions", self._producer.init_transactions, self._timeout)

    def begin_transaction(self) -> None:
        self._call("beginning a transaction", self._producer.begin_transaction)

    def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, OffsetAndMetadata],
                                    group_metadata: Any) -> None:  # fmt: skip
        wanted = _positions(self._ck, offsets)
        self._call("adding offsets to the transaction", self._producer.send_offsets_to_transaction, wanted,
                   group_metadata, self._timeout)  # fmt: skip

    def commit_transaction(self) -> None:
        self._call("committing the transaction", self._producer.commit_transaction, self._timeout)
        self._producer.poll(0)  # serve the delivery reports the commit left queued
        self._deliveries = _Deliveries()  # a refusal fails the commit; its reports belong to no later send

    def abort_transaction(self) -> None:
        self._call("aborting the transaction", self._producer.abort_transaction, self._timeout)
        self._producer.poll(0)
        self._deliveries = _Deliveries()

    def close(self, timeout: float = 5.0) -> None:
        self._producer.flush(timeout)
