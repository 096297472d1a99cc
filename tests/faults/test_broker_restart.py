"""The broker stopped (cleanly, or killed) and started again in the middle of a stream: every
request the broker acknowledged gets a prediction, and the predictor never stops."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamfit.common.settings import Settings
from streamfit.kafka_server import KafkaServer
from streamfit.predictor.service import Predictor
from tests.faults.conftest import Ledger, Stream, settings_on
from tests.predictor.conftest import CLIENTS, Models, TopicReader, running, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.slow]

DOWN_FOR = 4.0  # seconds the broker stays down while the stream keeps sending


@pytest.mark.parametrize("kafka_client", CLIENTS)
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_broker_stopped_and_restarted_mid_stream_loses_no_request(
    kill: bool,
    kafka_client: str,
    private_kafka: KafkaServer,
    mlflow_home: Path,
    models_factory: Callable[[Settings], Models],
    reader: Callable[..., TopicReader],
) -> None:
    settings = settings_on(private_kafka.bootstrap, mlflow_home, kafka_client=kafka_client)
    models_factory(settings).release("1")
    ledger = Ledger("broker-" + ("kill" if kill else "stop"))
    predictor = Predictor(settings)
    predictions = reader(settings, "predictions")
    with running(predictor):
        with Stream(settings, ledger) as stream:
            predictions.count(400, timeout=60)  # serving at a steady pace
            before = stream.sent()
            private_kafka.stop(kill=kill)
            stopped = time.monotonic()
            wait_for(lambda: stream.sent() >= before + 100, 10, "the stream to keep sending while the broker is down")
            time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - stopped)))  # the outage itself, not a wait for a result
            private_kafka.start()
            outage = time.monotonic() - stopped
            restarted_at = stream.sent()
            wait_for(lambda: stream.sent() >= restarted_at + 400, 60, "the stream to go on after the restart")
        acknowledged = ledger.acknowledged  # the stream is flushed: every send is acknowledged or refused
        try:
            predictions.until(lambda values: {v["request_id"] for v in values} >= acknowledged, 120, "every answer")
        finally:
            ledger.read(predictions.values)
            ledger.report(
                outage_s=f"{outage:.1f}", requests_read=predictor.metrics.value("requests_total"),
                batch_retries=predictor.metrics.value("batch_retries_total"),
            )  # fmt: skip
        assert predictor.model_version == "1"
    assert not ledger.missing
    assert set(ledger.answers) <= set(ledger.sent)  # nothing answered that was never sent
