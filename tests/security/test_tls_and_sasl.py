"""The services on an Apache Kafka that requires TLS (mutual: client certificates), and on one that
requires SASL/SCRAM-SHA-512 over TLS, with certificates the test makes. Wrong credentials or TLS
settings give one clear error within seconds, not a hang; no secret reaches a log, ``streamfit
status`` or MLflow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from streamfit.common.errors import BrokerRefused
from streamfit.common.kafka import ensure_topics, make_producer
from streamfit.common.model_store import ModelStore
from streamfit.common.settings import Settings, load_settings
from streamfit.kafka_server import KafkaServer
from streamfit.predictor.service import Predictor
from streamfit.trainer.service import Trainer
from tests.predictor.conftest import CLIENTS, Models, TopicReader, running, send_requests
from tests.support.secure_kafka import SCRAM, Certificates, make_certificates, secure_kafka
from tests.trainer.support import send_retrain

pytestmark = [pytest.mark.security, pytest.mark.kafka, pytest.mark.slow]

USER = "alice"
PASSWORD = f"alice-{uuid.uuid4().hex}"  # unique: any appearance in an output is a leak
WRONG = f"wrong-{uuid.uuid4().hex}"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_kafka(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    server = secure_kafka("SSL", certificates, tmp_path_factory.mktemp("kafka-tls"))
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def sasl_kafka(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    server = secure_kafka("SASL_SSL", certificates, tmp_path_factory.mktemp("kafka-sasl"), users={USER: PASSWORD})
    try:
        yield server.start()
    finally:
        server.cleanup()


def secured(kind: str, server: KafkaServer, certificates: Certificates, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"bootstrap_servers": server.bootstrap, "security_protocol": kind,
                              "ssl_cafile": certificates.ca, "broker_timeout": 20.0}  # fmt: skip
    if kind == "SSL":
        values.update(ssl_certfile=certificates.client_cert, ssl_keyfile=certificates.client_key,
                      ssl_password=certificates.client_key_password)  # fmt: skip
    else:
        values.update(sasl_mechanism=SCRAM, sasl_username=USER, sasl_password=PASSWORD)
    values.update(overrides)
    return values


def settings_for(values: dict[str, Any], home: Path, **more: Any) -> Settings:
    unique = uuid.uuid4().hex[:10]
    return load_settings(**{"topic_prefix": f"s{unique}.", "model_name": f"m{unique}", "home": home,
                            "batch_timeout_ms": 20, "retrain_every": 0, **values, **more})  # fmt: skip


def env_of(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFIT_", "MLFLOW_"))}
    for name in ("bootstrap_servers", "topic_prefix", "model_name", "home", "security_protocol", "sasl_mechanism",
                 "sasl_username", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "broker_timeout"):  # fmt: skip
        value = getattr(settings, name)
        if value is not None:
            env[f"STREAMFIT_{name.upper()}"] = str(value)
    for name in ("sasl_password", "ssl_password"):
        secret = getattr(settings, name)
        if secret is not None:
            env[f"STREAMFIT_{name.upper()}"] = secret.get_secret_value()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def streamfit(settings: Settings, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamfit.cli", *args], env=env_of(settings), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.mark.parametrize("kafka_client", CLIENTS)
@pytest.mark.parametrize("kind", ["SSL", "SASL_SSL"])
def test_the_predictor_serves_over_tls_and_sasl_and_no_secret_is_logged(
    kind: str,
    kafka_client: str,
    certificates: Certificates,
    tls_kafka: KafkaServer,
    sasl_kafka: KafkaServer,
    tmp_path: Path,
    reader: Callable[..., TopicReader],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    server = tls_kafka if kind == "SSL" else sasl_kafka
    settings = settings_for(secured(kind, server, certificates), tmp_path / "home", kafka_client=kafka_client)
    ensure_topics(settings)
    models = Models(settings)
    models.release("1")
    producer = make_producer(settings)
    predictions = reader(settings, "predictions")
    ids = [f"{kind}-{i}" for i in range(300)]
    with running(Predictor(settings)):
        send_requests(producer, settings, ids)
        values = predictions.count(len(ids))
    producer.close()
    models.close()
    print(f"\n[security] {kind}: requests={len(ids)} predictions={len(values)}")
    assert sorted(p["request_id"] for p in values) == sorted(ids)
    secrets = [PASSWORD, certificates.client_key_password]
    assert not [s for s in secrets if s in caplog.text], "a secret reached the log"


def test_the_predictor_command_and_status_print_no_secret(
    certificates: Certificates, sasl_kafka: KafkaServer, tmp_path: Path
) -> None:
    """The real commands, with both secrets in their environment (SASL password, and the password of
    a client key the client loads although this broker does not ask for it): DEBUG log and status."""
    values = secured("SASL_SSL", sasl_kafka, certificates, ssl_certfile=certificates.client_cert,
                     ssl_keyfile=certificates.client_key, ssl_password=certificates.client_key_password)  # fmt: skip
    settings = settings_for(values, tmp_path / "home")
    ensure_topics(settings)
    models = Models(settings)
    models.release("1")
    models.close()
    log = tmp_path / "predictor.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "streamfit.cli", "predictor", "--log-level", "DEBUG"],
                                   env=env_of(settings), cwd=REPO, stdout=out, stderr=out)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "partitions assigned" not in log.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    status = streamfit(settings, "status")
    status_json = streamfit(settings, "status", "--json")
    assert status.returncode == 0 and status_json.returncode == 0, status.stderr + status_json.stderr
    outputs = {"predictor log": log.read_text(errors="replace"), "status": status.stdout + status.stderr,
               "status --json": status_json.stdout + status_json.stderr}  # fmt: skip
    assert "**********" in outputs["predictor log"]  # the settings were logged, masked
    secrets = [PASSWORD, certificates.client_key_password]
    leaks = {where for where, text in outputs.items() for s in secrets if s in text}
    print(f"\n[security] command: log={len(outputs['predictor log'])} chars, status checked twice, leaks={len(leaks)}")
    assert not leaks, f"a secret appears in {leaks}"


def test_the_trainer_over_sasl_keeps_the_password_out_of_mlflow(
    certificates: Certificates, sasl_kafka: KafkaServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.trainer.support import adult_files

    caplog.set_level("DEBUG")
    base, test, _ = adult_files(tmp_path / "adult")
    settings = settings_for(
        secured("SASL_SSL", sasl_kafka, certificates), tmp_path / "home", data=base, test_data=test,
        trials=2, max_rounds=30, cv_folds=2, num_threads=1, min_rows=100, optimizer="random",
    )  # fmt: skip
    ensure_topics(settings)
    send_retrain(settings)
    with Trainer(settings, progress=False) as trainer:
        result = trainer.run_once()
    assert result is not None and result.state == "promoted"
    client = MlflowClient(settings.tracking_uri)
    experiment = ModelStore(settings).experiment_id()
    runs = client.search_runs([experiment], max_results=1000)
    texts = [f"{k}={v}" for run in runs for k, v in {**run.data.params, **run.data.tags}.items()]
    assert runs and texts
    assert not [t for t in texts if PASSWORD in t], "the SASL password reached MLflow"
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("kind", "change", "names"),
    [
        ("SASL_SSL", {"sasl_password": WRONG}, "STREAMFIT_SASL_PASSWORD"),
        ("SASL_SSL", {"sasl_username": "mallory"}, "STREAMFIT_SASL_USERNAME"),
        ("SASL_SSL", {"security_protocol": "SSL", "sasl_mechanism": None}, "STREAMFIT_SECURITY_PROTOCOL"),
        ("SSL", {"ssl_certfile": None, "ssl_keyfile": None, "ssl_password": None}, "STREAMFIT_SSL_CERTFILE"),
        ("SSL", {"ssl_cafile": "other-ca"}, "STREAMFIT_SSL_CAFILE"),
        ("SSL", {"security_protocol": "PLAINTEXT"}, "STREAMFIT_SECURITY_PROTOCOL"),
    ],
    ids=["wrong-password", "unknown-user", "tls-without-sasl", "no-client-certificate", "untrusted-ca", "plaintext"],
)
def test_wrong_credentials_or_tls_settings_are_one_clear_error_in_seconds(
    kind: str,
    change: dict[str, Any],
    names: str,
    certificates: Certificates,
    tls_kafka: KafkaServer,
    sasl_kafka: KafkaServer,
    tmp_path: Path,
) -> None:
    server = tls_kafka if kind == "SSL" else sasl_kafka
    if change.get("ssl_cafile") == "other-ca":
        change = {"ssl_cafile": make_certificates(tmp_path / "other").ca}
    settings = settings_for({**secured(kind, server, certificates), **change, "broker_timeout": 60.0}, tmp_path)
    started = time.monotonic()
    with pytest.raises(BrokerRefused) as refused:
        ensure_topics(settings)
    took = time.monotonic() - started
    message = str(refused.value)
    print(f"\n[security] {names} after {took:.1f}s: {message[:160]}")
    assert took < 15, f"took {took:.1f}s (the broker timeout is 60s)"
    assert names in message and server.bootstrap in message
    assert PASSWORD not in message and WRONG not in message

    if change.get("sasl_password") == WRONG:  # the command: one line, non-zero, in seconds, no secret
        started = time.monotonic()
        answer = streamfit(settings, "predictor", timeout=60)
        took = time.monotonic() - started
        assert answer.returncode != 0 and took < 30, (answer.returncode, took)
        assert names in answer.stderr and "Traceback" not in answer.stderr, answer.stderr[-2000:]
        assert WRONG not in answer.stdout + answer.stderr
