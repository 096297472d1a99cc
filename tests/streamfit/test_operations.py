"""`streamfit status` and `streamfit rollback` against a running predictor, real Kafka and MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamfit.common.kafka import make_consumer, make_producer
from streamfit.common.messages import Prediction, Request, decode
from streamfit.common.model_store import ModelStore
from streamfit.common.settings import Settings
from streamfit.predictor.service import Predictor
from streamfit.trainer.bootstrap import bootstrap
from tests.conftest import SettingsFactory
from tests.integration.test_bootstrap import churn_csv

pytestmark = pytest.mark.kafka


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    common = [
        "--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix,
        "--model-name", settings.model_name, "--home", str(settings.home),
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "streamfit.cli", args[0], *common, *args[1:]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def versions_answering(settings: Settings, sent: int, timeout: float = 30.0) -> list[str]:
    """Send ``sent`` requests and return the version of each prediction, in request order."""
    tag = f"{time.monotonic_ns()}-"
    consumer = make_consumer(
        settings, group_id=None, topics=[settings.topic("predictions")], auto_offset_reset="latest"
    )
    consumer.poll(timeout_ms=500)  # assignment before sending, so no answer is missed
    producer = make_producer(settings)
    for i in range(sent):
        request = Request(request_id=f"{tag}{i}", features={"tenure_months": 5.0, "monthly_eur": 40.0, "city": "Oslo"})
        producer.send(settings.topic("requests"), key=request.request_id.encode(), value=request.encode())
    producer.flush()
    producer.close()
    got: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(got) < sent and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                message = decode(Prediction, record.value)
                if isinstance(message, Prediction) and message.request_id.startswith(tag):
                    got[message.request_id] = message.model_version
    consumer.close()
    assert len(got) == sent, f"{len(got)} of {sent} answered"
    return [got[f"{tag}{i}"] for i in range(sent)]


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_rollback_makes_running_predictors_answer_with_the_previous_version(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    data = churn_csv(tmp_path / "churn.csv", rows=600)
    settings = settings_factory(data=data, target="churned", max_rounds=30, missing_features="impute", partitions=2)
    assert bootstrap(settings).version == "1"
    assert bootstrap(settings).version == "2"

    predictor = Predictor(settings)
    thread = threading.Thread(target=predictor.run, daemon=True)
    thread.start()
    try:
        predictor.wait_ready(timeout=60)
        wait_until(lambda: versions_answering(settings, 5) == ["2"] * 5, 30, "version 2 answering")

        result = cli(settings, "rollback")
        assert result.returncode == 0, result.stderr
        assert "version 2 → 1" in result.stdout
        assert ModelStore(settings).champion_version() == "1"
        wait_until(lambda: versions_answering(settings, 5) == ["1"] * 5, 30, "version 1 answering after rollback")

        status = cli(settings, "status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["champion"]["version"] == "1"
        assert [v["version"] for v in report["versions"]] == ["1", "2"]
        assert report["champions_published"] == 3  # v1, v2, the rollback to v1
        assert "requests" in report["lag"]["predictor"]  # no label was sent: labels has no commit yet
        assert report["lag"]["predictor"]["requests"] == 0  # every request answered and committed

        table = cli(settings, "status")
        assert table.returncode == 0 and "champion of" in table.stdout and "consumer lag" in table.stdout
    finally:
        predictor.stop()
        thread.join(timeout=30)


def test_rollback_without_history_or_to_an_unknown_version_is_one_clear_line(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory(data=churn_csv(tmp_path / "c.csv", rows=400), target="churned", max_rounds=20)
    bootstrap(settings)
    first = cli(settings, "rollback")
    assert first.returncode == 2 and "no earlier champion" in first.stderr
    second = cli(settings, "rollback", "--to", "9")
    assert second.returncode == 2 and "has no version '9'" in second.stderr


def test_status_shows_drift_retrains_and_a_predictors_live_drift(
    settings_factory: SettingsFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamfit.common.health import HealthServer
    from streamfit.common.kafka import send_and_wait
    from streamfit.common.messages import FeatureDrift, Retrain
    from streamfit.kafka_server import free_port
    from streamfit.predictor.drift import DriftMonitor
    from streamfit.predictor.metrics import PredictorMetrics
    from tests.predictor.conftest import synthetic_frame, train
    from tests.predictor.test_drift import feed, profiled

    settings = settings_factory(data=churn_csv(tmp_path / "c.csv", rows=400), target="churned", max_rounds=20)
    bootstrap(settings)
    message = Retrain(
        reason="drift", observations=1000, requested_at=time.time(),
        details={"model_version": "1", "causes": ["psi", "metric"], "psi": 0.4, "window": 1000,
                 "metric": "accuracy", "live": 0.61, "holdout": 0.87, "observations": 1000},
        top_features=[FeatureDrift(feature="hours_per_week", psi=2.5), FeatureDrift(feature="age", psi=0.1)],
    )  # fmt: skip
    producer = make_producer(settings)
    send_and_wait(producer, settings.topic("retrain"), settings.model_name, message)
    send_and_wait(producer, settings.topic("retrain"), settings.model_name,
                  Retrain(reason="count", observations=1000, requested_at=time.time()))  # fmt: skip
    producer.close()
    # A predictor's /metrics, with a drift monitor that has seen a shifted feature.
    metrics, monitor = PredictorMetrics(), DriftMonitor(200, 0.25, 0.05, 100_000)
    metrics.watch_drift(monitor)
    shifted = synthetic_frame(400, seed=3)
    shifted["x2"] += 3
    feed(monitor, "4", profiled(train(), {"accuracy": 0.9}), shifted)
    port = free_port()
    monkeypatch.setenv("COLUMNS", "200")  # the tables on one line each
    with HealthServer(port, metrics.registry):
        report = json.loads(cli(settings, "status", "--json", "--predictor-metrics", f"http://127.0.0.1:{port}/metrics",
                                "--predictor-metrics", "http://127.0.0.1:9/metrics").stdout)  # fmt: skip
        table = cli(settings, "status", "--predictor-metrics", f"http://127.0.0.1:{port}/metrics")
    assert report["drift_requests_total"] == 1  # the count request is not a drift
    (drift,) = report["drift_requests"]
    assert drift["top_features"] == {"hours_per_week": 2.5, "age": 0.1} and drift["live"] == 0.61
    live, unreachable = report["live"]
    assert live["psi"]["x2"] > 0.25 and live["metric"] == "accuracy" and live["holdout"] == 0.9
    assert 0 <= live["live"] <= 1 and "error" in unreachable
    assert report["cycle_drift"] is None  # bootstrap only: no cycle measured drift yet
    assert table.returncode == 0, table.stderr
    assert "drift retrain requests (1 in all" in table.stdout and "hours_per_week 2.50" in table.stdout
    assert "live accuracy" in table.stdout and "x2" in table.stdout
