"""The sample app against a real broker.

The predictor is not under test here, so a small echo predictor stands in for it: it reads the
run's requests and answers each with a constant class, with a model version chosen by request
index (so the swap's place is known). The sample app itself talks to real Kafka throughout.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamfit.cli import main
from streamfit.common.kafka import ensure_topics, make_consumer, make_producer
from streamfit.common.messages import Decoder, Label, Prediction, Request
from streamfit.common.settings import ADULT_TEST, Settings
from streamfit.sample_app.drift import plan_drift
from streamfit.sample_app.source import load_source
from streamfit.sample_app.stream import SampleAppOptions, label_selected, request_row, run_sample_app
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.kafka

ANSWER = "<=50K"


class EchoPredictor(threading.Thread):
    """A stand-in for the predictor: requests in, one prediction each out."""

    def __init__(self, settings: Settings, version_of: Callable[[int], str]) -> None:
        super().__init__(daemon=True)
        self.settings, self.version_of = settings, version_of
        self.requests: dict[int, Request] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _serve(self) -> None:
        from kafka import TopicPartition

        topic = self.settings.topic("requests")
        consumer = make_consumer(self.settings, group_id=None, client_id="echo")
        producer = make_producer(self.settings, client_id="echo")
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(self.settings.partitions)])
            decode = Decoder(Request)
            while not self.stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        request = decode(record.value)
                        assert isinstance(request, Request)
                        index = int(request.request_id.rsplit("-", 1)[1])
                        self.requests[index] = request
                        answer = Prediction(
                            request_id=request.request_id,
                            prediction=ANSWER,
                            score=0.3,
                            model_version=self.version_of(index),
                            predicted_at=time.time(),
                        )
                        topic = self.settings.topic("predictions")
                        producer.send(topic, key=record.key, value=answer.encode())
                        if index == 1:  # at-least-once: the same answer twice, and another client's
                            producer.send(topic, key=record.key, value=answer.encode())
                            other = answer.model_copy(update={"request_id": "other-client-1"})
                            producer.send(topic, key=b"other-client-1", value=other.encode())
                producer.flush()
        finally:
            consumer.close()
            producer.close(timeout=5)


@pytest.fixture
def echo(settings_factory: SettingsFactory) -> Iterator[Callable[..., tuple[Settings, EchoPredictor]]]:
    started: list[EchoPredictor] = []

    def start(version_of: Callable[[int], str] = lambda i: "1", **overrides: Any) -> tuple[Settings, EchoPredictor]:
        settings = settings_factory(**overrides)
        ensure_topics(settings)
        thread = EchoPredictor(settings, version_of)
        thread.start()
        started.append(thread)
        return settings, thread

    yield start
    for thread in started:
        thread.stop.set()
        thread.join(10)
        assert thread.error is None, thread.error


def read_all(settings: Settings, name: str) -> list[bytes]:
    from kafka import TopicPartition

    consumer = make_consumer(settings, group_id=None, client_id="reader")
    try:
        partitions = [TopicPartition(settings.topic(name), p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + 10
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
        return values
    finally:
        consumer.close()


def test_streams_answers_labels_and_finds_the_swap(
    echo: Callable[..., tuple[Settings, EchoPredictor]], tmp_path: Path
) -> None:
    settings, predictor = echo(lambda i: "1" if i < 40 else "2")
    plot = tmp_path / "out" / "run.png"
    options = SampleAppOptions(
        count=80,
        rate=0,
        drift_at=30,
        label_fraction=0.5,
        label_delay=0.2,
        seed=5,
        timeout=20,
        window=20,
        plot=plot,
        progress="off",
        handle_sigint=False,
    )
    summary = run_sample_app(settings, options)

    assert (summary.sent, summary.answered, summary.unanswered, summary.interrupted) == (80, 80, 0, False)
    assert (summary.duplicates, summary.ignored, summary.invalid, summary.send_errors) == (1, 1, 0, 0)
    (swap,) = summary.swaps
    assert (swap.from_version, swap.to_version, swap.request_index) == ("1", "2", 40)

    source = load_source(ADULT_TEST, "income")
    drift = plan_drift(source.frame, "income", source.task, 30)
    truths = {i: request_row(source, drift, i)[1] for i in range(80)}
    expected = {v: [truths[i] == ANSWER for i in range(80) if (i < 40) == (v == "1")] for v in ("1", "2")}
    assert summary.metric_by_version == {v: pytest.approx(sum(e) / len(e)) for v, e in expected.items()}
    assert summary.drift is not None and "marital_status" in summary.drift

    # The requests carried the drifted rows, and no label.
    for i in (29, 30, 31, 70):
        features, _ = request_row(source, drift, i)
        assert predictor.requests[i].features == features and predictor.requests[i].label is None
    married = [i for i in range(30, 80) if predictor.requests[i].features["marital_status"] == "Married-civ-spouse"]
    assert married and all(predictor.requests[i].features["hours_per_week"] > 4 for i in married)

    # Labels: for the seeded share of requests, with the (drifted) truth, keyed by request id.
    labels = [Decoder(Label)(raw) for raw in read_all(settings, "labels")]
    got = {int(m.request_id.rsplit("-", 1)[1]): m.label for m in labels if isinstance(m, Label)}
    chosen = {i for i in range(80) if label_selected(5, i, 0.5)}
    assert set(got) == chosen and summary.labels_sent == len(chosen) and 20 < len(chosen) < 60
    assert got == {i: truths[i] for i in chosen}

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and summary.plot == plot


def test_ctrl_c_stops_a_forever_run_with_the_summary_so_far(
    echo: Callable[..., tuple[Settings, EchoPredictor]], tmp_path: Path
) -> None:
    settings, predictor = echo(target="y")
    small = tmp_path / "small.csv"
    small.write_text("colour,size,y\nred,1.5,yes\nblue,,no\ngreen,3,yes\n")
    before = signal.getsignal(signal.SIGINT)

    def press_ctrl_c() -> None:  # once the run is well under way: more requests than rows
        deadline = time.monotonic() + 20
        while len(predictor.requests) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    ctrl_c = threading.Thread(target=press_ctrl_c)
    ctrl_c.start()
    started = time.monotonic()
    try:
        summary = run_sample_app(
            settings, SampleAppOptions(file=small, count=0, rate=200, progress="off", label_delay=0, max_in_flight=50)
        )
    finally:
        ctrl_c.join()
    assert time.monotonic() - started < 15
    assert summary.interrupted and summary.sent >= 20 and summary.answered > 3  # it cycled the file
    assert summary.answered + summary.unanswered == summary.sent
    assert signal.getsignal(signal.SIGINT) is before
    assert summary.metric == "accuracy" and summary.versions[0].version == "1"


def test_unanswered_requests_are_counted_after_the_timeout(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    summary = run_sample_app(
        settings, SampleAppOptions(count=5, rate=0, timeout=0.5, progress="off", handle_sigint=False)
    )
    assert (summary.sent, summary.answered, summary.unanswered) == (5, 0, 5)
    assert not summary.interrupted and summary.plot is None


def test_the_command_runs_and_prints_its_summary(
    echo: Callable[..., tuple[Settings, EchoPredictor]], capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _ = echo()
    code = main(
        [
            "sample-app",
            "--count",
            "10",
            "--rate",
            "0",
            "--label-delay",
            "0",
            "--progress",
            "log",
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "requests sent" in out and "by model version" in out


def test_bad_settings_are_one_line_before_any_broker(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    unreachable = ["--bootstrap-servers", "127.0.0.1:1"]
    assert main(["sample-app", "--file", str(tmp_path / "none.csv"), *unreachable]) == 2
    assert main(["sample-app", "--target", "nope", *unreachable]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 2
    assert err[0].startswith("streamfit sample-app: error: file to stream") and "none.csv" in err[0]
    assert err[1].startswith("streamfit sample-app: error: target column 'nope'")
