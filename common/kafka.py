"""Kafka wiring: clients with the security settings and low-latency defaults, and the topics.

Every client of every service is built here, so that TLS/SASL settings, timeouts and the
"broker unreachable" error are the same everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streamfit.common.errors import BrokerRefused, BrokerUnavailable, ConfigError
from streamfit.common.messages import Message
from streamfit.common.settings import Settings

log = logging.getLogger(__name__)

TOPICS = ("requests", "predictions", "labels", "observations", "retrain", "models", "dead-letters")
CO_PARTITIONED = ("requests", "labels", "predictions", "observations")
KEEP_FOREVER = {"retention.ms": "-1"}  # observations are training data; models holds the champion


_SECRET_KEYS: Final = frozenset({"ssl_password", "sasl_plain_password"})


class _MaskClientSecrets(logging.Filter):
    """kafka-python's admin client logs its whole configuration at DEBUG, passwords included."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = _masked(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(_masked(arg) for arg in record.args)
        return True


def _masked(value: Any) -> Any:
    if isinstance(value, dict) and _SECRET_KEYS & value.keys():
        return {k: "**********" if k in _SECRET_KEYS and v is not None else v for k, v in value.items()}
    return value


logging.getLogger("kafka.admin.client").addFilter(_MaskClientSecrets())


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


# --- why a broker refused us -----------------------------------------------------------------------
# kafka-python retries a refused connection (bad password, untrusted certificate) like a broker that
# is away, until the bootstrap timeout, then says only "Unable to bootstrap". What it logs on the way
# names the cause: clients are first built with a short bootstrap timeout while those lines are
# collected, and a refusal is reported at once, with the settings to fix.

FIRST_TRY: Final = 5.0  # seconds of the first bootstrap attempt, after which a refusal is reported
_REFUSALS: Final = (  # (text kafka-python logs, what it means, the settings to check)
    ("SaslAuthenticationFailed", "refused the SASL credentials",
     "STREAMFIT_SASL_USERNAME / STREAMFIT_SASL_PASSWORD (--sasl-username / --sasl-password)"),
    ("UnsupportedSaslMechanism", "does not accept this SASL mechanism", "STREAMFIT_SASL_MECHANISM (--sasl-mechanism)"),
    ("IllegalSaslState", "refused the SASL handshake", "STREAMFIT_SECURITY_PROTOCOL and STREAMFIT_SASL_MECHANISM"),
    ("CERTIFICATE_VERIFY_FAILED", "presented a TLS certificate this client does not trust",
     "STREAMFIT_SSL_CAFILE (--ssl-cafile; the CA that signed the broker's certificate) or "
     "STREAMFIT_SSL_CHECK_HOSTNAME"),
    ("ALERT_BAD_CERTIFICATE", "refused this client's TLS certificate (or the lack of one)",
     "STREAMFIT_SSL_CERTFILE / STREAMFIT_SSL_KEYFILE / STREAMFIT_SSL_PASSWORD (a certificate the broker trusts)"),
    ("ALERT_CERTIFICATE_REQUIRED", "requires a client TLS certificate",
     "STREAMFIT_SSL_CERTFILE / STREAMFIT_SSL_KEYFILE (--ssl-certfile / --ssl-keyfile)"),
    ("ALERT_HANDSHAKE_FAILURE", "refused the TLS handshake",
     "STREAMFIT_SSL_CERTFILE / STREAMFIT_SSL_KEYFILE and STREAMFIT_SECURITY_PROTOCOL"),
    ("WRONG_VERSION_NUMBER", "does not speak TLS on this port", "STREAMFIT_SECURITY_PROTOCOL (--security-protocol)"),
    ("Invalid frame length", "answered with something that is not Kafka's plaintext protocol (TLS?)",
     "STREAMFIT_SECURITY_PROTOCOL (--security-protocol: SSL or SASL_SSL) and the SSL/SASL settings"),
)  # fmt: skip
_NET_LOGGER: Final = "kafka.net"  # kafka-python 3's connection, transport and manager loggers
_capture_lock = threading.Lock()
_capturing: list[_ConnectionLog] = []
_saved: dict[str, Any] = {}


class _ConnectionLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(record.getMessage()[:500])

    def refusal(self, sasl: bool) -> tuple[str, str, str] | None:
        for line in reversed(self.lines):
            for needle, meaning, fix in _REFUSALS:
                if needle in line:
                    return line, meaning, fix
        # A broker that is away refuses connections; one that accepts them and hangs up before any
        # answer, again and again, expects something else. A SASL client is most likely refused its
        # credentials (the broker's error and its hang-up race: under load only the hang-up is seen);
        # any other client, SASL or a client certificate.
        hang_ups = [line for line in self.lines if "Connection lost: KafkaConnectionError: socket disconnected" in line]
        if len(hang_ups) < 3:
            return None
        if sasl:
            return (
                hang_ups[-1],
                "closes every connection during the SASL exchange (credentials or mechanism refused?)",
                "STREAMFIT_SASL_USERNAME / STREAMFIT_SASL_PASSWORD and STREAMFIT_SASL_MECHANISM",
            )
        return (
            hang_ups[-1],
            "closes every connection before answering (does it require SASL, or a client certificate?)",
            "STREAMFIT_SECURITY_PROTOCOL (--security-protocol) and STREAMFIT_SASL_MECHANISM, "
            "or STREAMFIT_SSL_CERTFILE / STREAMFIT_SSL_KEYFILE",
        )


@contextlib.contextmanager
def _connection_log() -> Iterator[_ConnectionLog]:
    """Collect kafka-python's connection errors while a client bootstraps (whatever their log level)."""
    handler = _ConnectionLog()
    logger = logging.getLogger(_NET_LOGGER)
    with _capture_lock:
        if not _capturing:
            _saved.update(level=logger.level, propagate=logger.propagate)
            logger.setLevel(logging.ERROR)
            logger.propagate = False  # services silence these lines; they are reported below instead
        _capturing.append(handler)
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        with _capture_lock:
            logger.removeHandler(handler)
            _capturing.remove(handler)
            if not _capturing:
                logger.setLevel(_saved["level"])
                logger.propagate = _saved["propagate"]


C = TypeVar("C")


def _bootstrap(settings: Settings, build: Callable[[int], C]) -> C:
    """Build a client (``build(bootstrap_timeout_ms)``): a refusal fails within ``FIRST_TRY`` seconds
    with its cause, a broker that does not answer after ``broker_timeout`` seconds as before."""
    deadline = time.monotonic() + settings.broker_timeout
    timeout = min(settings.broker_timeout, FIRST_TRY)
    with _connection_log() as seen:
        while True:
            try:
                return build(int(timeout * 1000))
            except KafkaError as exc:
                refusal = seen.refusal(settings.security_protocol.startswith("SASL"))
                if refusal is not None:
                    line, meaning, fix = refusal
                    raise BrokerRefused(
                        f"the Kafka broker at {settings.bootstrap_servers} {meaning} "
                        f"(security protocol {settings.security_protocol}"
                        + (f", mechanism {settings.sasl_mechanism}, user {settings.sasl_username!r}"
                           if settings.security_protocol.startswith("SASL") else "")
                        + f"): check {fix}; the client said: {line}"
                    ) from exc  # fmt: skip
                timeout = deadline - time.monotonic()
                if timeout < 0.5:
                    raise _unavailable(settings, exc) from exc


def make_producer(settings: Settings, client_id: str = "streamfit", **overrides: Any) -> KafkaProducer:
    config = client_config(settings, client_id)
    config.update(
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        batch_size=256 * 1024,
        max_block_ms=int(settings.broker_timeout * 1000),
        compression_type=None,
    )
    config.update(overrides)
    return _bootstrap(settings, lambda ms: KafkaProducer(**{"bootstrap_timeout_ms": ms, **config}))


def producer_broken(producer: Any) -> bool:
    """Whether a kafka-python producer will send nothing more: its idempotence state took an error
    as fatal (kafka-python 3 does so when the broker refuses a message as too large for the topic,
    and a flush may then wait forever). Only a new producer sends again. Read from the producer's
    transaction manager (not public API); False for any other producer."""
    manager = getattr(producer, "_transaction_manager", None)
    return bool(manager is not None and manager.has_fatal_error())


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
    )
    config.update(overrides)
    consumer = _bootstrap(settings, lambda ms: KafkaConsumer(**{"bootstrap_timeout_ms": ms, **config}))
    topics = list(topics)
    if topics:
        await_partitions(consumer, settings, {topic: 1 for topic in topics})
        consumer.subscribe(topics)
    return consumer


def await_partitions(consumer: KafkaConsumer, settings: Settings, wanted: dict[str, int]) -> None:
    """Wait until ``consumer`` sees at least ``wanted[topic]`` partitions of each topic, before it
    subscribes. A group's leader assigns from its own metadata: just after the topics were created
    it may not know them, assigns nothing, and the group stays without partitions until the
    metadata is refreshed minutes later."""
    deadline = time.monotonic() + settings.broker_timeout
    for topic, count in wanted.items():
        while len(consumer.partitions_for_topic(topic)) < count:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"the broker at {settings.bootstrap_servers} did not show {count} partition(s) of {topic} "
                    f"within {settings.broker_timeout:.0f}s (--broker-timeout)"
                )
            time.sleep(0.1)


def make_admin(settings: Settings) -> KafkaAdminClient:
    config = client_config(settings, "streamfit-admin")
    return _bootstrap(settings, lambda ms: KafkaAdminClient(**{"bootstrap_timeout_ms": ms, **config}))


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
