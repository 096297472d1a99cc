"""``streamfit predictor`` SIGKILLed three times in the middle of a stream and started again each
time: every request gets a prediction. At-least-once may answer some twice (counted); in
exactly-once mode a read_committed reader sees exactly one prediction per request."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamfit.common.kafka import make_producer
from streamfit.common.settings import Settings
from tests.conftest import SettingsFactory
from tests.faults.conftest import Ledger, Stream
from tests.predictor.conftest import CLIENTS, Models, TopicReader, send_requests
from tests.predictor.test_process import start

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.slow]

KILLS = 3
SERVED_BETWEEN_KILLS = 600  # predictions a restarted process makes before it is killed again


def read_to_the_end(reader: TopicReader, timeout: float = 60) -> list[Any]:
    """Everything the topic holds now, aborted transactions included for a read_uncommitted reader."""
    partitions = list(reader.consumer.assignment())
    ends = reader.consumer.end_offsets(partitions)
    deadline = time.monotonic() + timeout
    while any(reader.consumer.position(tp) < ends[tp] for tp in partitions):
        assert time.monotonic() < deadline, f"{reader.topic}: not read to its end offsets {ends} in {timeout}s"
        reader.poll()
    return reader.values


@pytest.mark.parametrize("kafka_client", CLIENTS)
@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_predictor_sigkilled_three_times_mid_stream_answers_every_request(
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
    committed = reader(settings, "predictions", read_committed=True)
    everything = reader(settings, "predictions", read_committed=False)  # also what aborted transactions wrote
    ledger = Ledger(f"kill-{guarantee}")
    producer = make_producer(settings)
    backlog = [f"backlog-{i}" for i in range(1000)]  # batches are in flight when the first kill lands
    send_requests(producer, settings, backlog, start=100_000)
    producer.close()
    log = tmp_path / "predictor.log"
    process = start(settings, log)
    kills: list[int] = []
    try:
        with Stream(settings, ledger):
            for _ in range(KILLS):
                target = len(committed.records) + SERVED_BETWEEN_KILLS
                committed.count(target, timeout=90)
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                kills.append(len(committed.records))
                process = start(settings, log)
            committed.count(len(committed.records) + SERVED_BETWEEN_KILLS, timeout=90)  # serving after the last
        sent = ledger.acknowledged | set(backlog)
        values = committed.until(lambda values: {p["request_id"] for p in values} >= sent, 90, "every answer")
        ledger.read(values)
        all_written = Counter(p["request_id"] for p in read_to_the_end(everything))
        ledger.report(
            backlog=len(backlog), kills=KILLS, predictions_seen_at_kills=kills,
            written_incl_aborted=sum(all_written.values()),
            ids_written_twice_incl_aborted=sum(n - 1 for n in all_written.values()),
        )  # fmt: skip
        assert not (sent - set(ledger.answers)), f"{len(sent - set(ledger.answers))} requests without a prediction"
        assert set(ledger.answers) <= sent | set(ledger.sent)
        if exactly_once:
            assert ledger.duplicates == 0, f"{ledger.duplicates} duplicates seen by a read_committed reader"

        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert process.wait(15) == 0, log.read_text()[-3000:]
        assert time.monotonic() - stopping < 10
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
