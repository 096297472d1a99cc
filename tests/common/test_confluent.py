"""The librdkafka clients' pure parts: the settings in librdkafka's names, its errors as the
``kafka.errors`` types the serving loop handles, and a clear error when the extra is missing. The
clients themselves are tested on the real broker with every serving test (``kafka_client``), and
here where a serving test cannot reach: a commit the broker refuses."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import confluent_kafka as ck
import pytest
from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError, ProducerFencedError

from streamfit.common import confluent
from streamfit.common.errors import BrokerUnavailable, ConfigError
from streamfit.common.settings import load_settings
from tests.conftest import SettingsFactory, unique_group


def test_plaintext_settings_in_librdkafka_names() -> None:
    conf = confluent.config(load_settings(bootstrap_servers="a:9092,b:9092"), "me")
    assert conf["bootstrap.servers"] == "a:9092,b:9092"
    assert conf["client.id"] == "me"
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not [key for key in conf if key.startswith(("ssl.", "sasl."))]


def test_tls_and_sasl_settings_in_librdkafka_names(tmp_path: Path) -> None:
    settings = load_settings(
        security_protocol="SASL_SSL", ssl_cafile=tmp_path / "ca.pem", ssl_certfile=tmp_path / "c.pem",
        ssl_keyfile=tmp_path / "k.pem", ssl_password="key-secret", ssl_check_hostname=False,
        sasl_mechanism="SCRAM-SHA-512", sasl_username="alice", sasl_password="pw",
    )  # fmt: skip
    conf = confluent.config(settings, "me")
    assert conf["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert conf["ssl.certificate.location"] == str(tmp_path / "c.pem")
    assert conf["ssl.key.location"] == str(tmp_path / "k.pem")
    assert conf["ssl.key.password"] == "key-secret"
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == ("SCRAM-SHA-512", "alice", "pw")
    # that librdkafka takes them: the TLS and SASL serving tests (tests/security), on a real broker


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ck.KafkaError(ck.KafkaError._FENCED), ProducerFencedError),
        (ck.KafkaError(ck.KafkaError.PRODUCER_FENCED), ProducerFencedError),
        (ck.KafkaError(ck.KafkaError._TIMED_OUT), KafkaTimeoutError),
        (ck.KafkaError(ck.KafkaError.COORDINATOR_NOT_AVAILABLE), KafkaError),
        (ck.KafkaError(ck.KafkaError._FATAL, fatal=True), BrokerUnavailable),
    ],
    ids=["fenced", "producer-fenced", "timed-out", "retriable", "fatal"],
)
def test_librdkafka_errors_become_what_the_loop_handles(error: ck.KafkaError, expected: type) -> None:
    translated = confluent._translated(ck.KafkaException(error), "committing the transaction")
    assert type(translated) is expected
    assert "committing the transaction" in str(translated)


def test_without_the_extra_the_error_names_the_install_and_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import fails as when it is not installed
    with pytest.raises(ConfigError, match=r"streamfit\[confluent\].*STREAMFIT_KAFKA_CLIENT=kafka-python"):
        confluent.Producer(load_settings(kafka_client="confluent"), "me")


@pytest.mark.kafka
def test_a_commit_the_broker_refuses_reaches_the_failure_hook_without_blocking(
    settings_factory: SettingsFactory,
) -> None:
    """At-least-once commits on librdkafka do not wait for the broker; a refusal must still be heard
    (the predictor counts and logs it). Offsets of a topic that does not exist are refused."""
    settings = settings_factory(kafka_client="confluent")
    refused: list[str] = []
    consumer = confluent.Consumer(settings, unique_group(), "test-commit", on_commit_failure=refused.append)
    try:
        consumer.commit({TopicPartition(f"absent-{uuid.uuid4().hex[:8]}", 0): OffsetAndMetadata(5, "", -1)})
        deadline = time.monotonic() + 20
        while not refused and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100)  # librdkafka serves the commit's answer inside poll
    finally:
        consumer.close()
    assert refused and "not committed" in refused[0], refused
