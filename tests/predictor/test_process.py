"""``streamfit predictor`` as a real process: SIGKILL mid-stream loses nothing, SIGTERM exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from streamfit.common.kafka import make_producer
from streamfit.common.settings import Settings
from tests.conftest import SettingsFactory
from tests.predictor.conftest import CLIENTS, Models, SteadyStream, TopicReader, send_requests

pytestmark = pytest.mark.kafka


def start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    args = [
        "--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix,
        "--model-name", settings.model_name, "--home", str(settings.home), "--batch-timeout-ms", "20",
        "--log-level", "INFO", "--processing-guarantee", settings.processing_guarantee, "--replica-id", "solo",
        "--kafka-client", settings.kafka_client,
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "streamfit.cli", "predictor", *args], stdout=out, stderr=out)


@pytest.mark.parametrize("kafka_client", CLIENTS)
@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_sigkill_mid_stream_then_restart_answers_every_request_and_sigterm_exits_0(
    guarantee: str,
    kafka_client: str,
    make_settings: SettingsFactory,
    models_factory: Callable[[Settings], Models],
    reader: Callable[..., TopicReader],
    tmp_path: Path,
) -> None:
    settings = make_settings(processing_guarantee=guarantee, kafka_client=kafka_client)
    models_factory(settings).release("1")
    exactly_once = guarantee == "exactly-once"
    predictions = reader(settings, "predictions", read_committed=exactly_once)
    log = tmp_path / "predictor.log"
    producer = make_producer(settings)
    backlog = [f"backlog-{i}" for i in range(4000)]  # so that the kill lands while batches are in flight
    send_requests(producer, settings, backlog, start=100_000)
    producer.close()
    process = start(settings, log)
    try:
        with SteadyStream(settings) as stream:
            predictions.count(1000, timeout=60)  # serving the backlog
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            killed_at = len(stream.ids)
            process = start(settings, log)
            predictions.until(lambda values: len(values) >= len(backlog) + killed_at, timeout=60, what="serving again")
        sent = set(stream.ids) | set(backlog)
        values = predictions.until(lambda values: {p["request_id"] for p in values} >= sent, timeout=60,
                                   what="every request answered")  # fmt: skip
        counts = Counter(p["request_id"] for p in values)
        duplicates = sum(n - 1 for n in counts.values())
        print(f"\n{guarantee}: {len(sent)} requests, {len(values)} predictions, {duplicates} duplicates after SIGKILL")
        assert set(counts) == sent
        if exactly_once:  # what a read_committed reader sees: the killed run's open transaction was aborted
            assert duplicates == 0

        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log.read_text()[-3000:]
        took = time.monotonic() - stopping
        assert took < 10, f"SIGTERM took {took:.1f}s"
        text = log.read_text()
        assert "SIGTERM: finishing the batch in hand" in text and "predictor stopped" in text
        assert "Traceback" not in text, text[-3000:]
        assert ("on librdkafka" in text) == (kafka_client == "confluent"), "the serving loop's client, in its log"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
