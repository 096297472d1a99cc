"""The whole drift loop on the Adult stream: real Kafka, a real MLflow store, real LightGBM, the
predictor and the trainer in threads, the sample app streaming the Adult test split with its
``--drift-at`` drift (married people report hours per month, and their label flips).

What it shows, with the bounds it asserts:

- the predictor asks for a retrain with reason ``drift`` within ``DETECTION_BOUND`` requests after
  the drift (counted as drifted requests answered before the retrain message was written);
- the trainer crowns a model after that drift retrain, and once a cycle has mostly drifted
  observations its drift report ranks the moved feature first with a drift score above 0.3 (the
  drift cycle itself may have seen only the first hundred or so drifted labels among 2,000 older
  ones: CI once recovered on its model alone, and its report scored 0.16);
- the served accuracy of the last ``WINDOW`` drifted requests, all answered by versions crowned
  after the drift retrain request, is within 2 points of the accuracy of the ``WINDOW`` requests before the
  drift. The loop runs as users run it: a count retrain every ``RETRAIN_EVERY`` labels, more than
  the stream has before the drift (a count retrain just after the drift would train on some of the
  new world and blur the step the test wants detected), and, after the alarm, the predictor's
  sooner count retrains on more and more of the new world;
- the frozen first model, on exactly those requests (predicted through the same bundle code the
  predictor runs), is at least 3 points lower.

"Recovers" is checked as a condition with a deadline: the stream runs until the last ``WINDOW``
drifted answers are within 2 points of the pre-drift level (``DEADLINE`` seconds at most), and then
stops; the frozen model is scored on exactly those answers. A single model trained on the few
hundred rows of the new world the first drift retrain finds can sit a point or two short of the
pre-drift level for good (CI once streamed 14,000 drifted requests past one such champion), so the
test does not stop the loop after the first retrain: later ones, on more of the new world, close
the gap. On two shared cores it takes about a minute (marked ``slow``); its figures are printed
(``pytest -s``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import TopicPartition

from streamfit.common.kafka import ensure_topics, make_consumer
from streamfit.common.messages import Retrain, decode
from streamfit.common.model_store import ModelStore
from streamfit.common.pipeline import category_key
from streamfit.common.settings import Settings
from streamfit.predictor.service import Predictor
from streamfit.sample_app import SampleAppOptions, run_sample_app
from streamfit.sample_app.drift import plan_drift
from streamfit.sample_app.source import load_source
from streamfit.sample_app.stream import request_row
from streamfit.trainer.bootstrap import bootstrap
from streamfit.trainer.service import Trainer
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.kafka

DRIFT_AT = 2000
DETECTION_BOUND = 600  # drifted requests answered before the drift retrain is asked for
WINDOW = 1000
RATE = 120.0
MAX_REQUESTS = 16_000  # the Adult test split, nearly all of it; the test stops earlier
DEADLINE = 420.0
RETRAIN_EVERY = 4000  # no count retrain before the drift; after the alarm at 1/8, 1/4, 1/2 of it


class Answers:
    """Every prediction of the run, by request index, read from the predictions topic."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("predictions")
        self.consumer = make_consumer(settings, None, client_id="test-answers")
        partitions = self.consumer.partitions_for_topic(self.topic) or {0}
        self.consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        self.consumer.seek_to_beginning()
        self.by_index: dict[int, tuple[Any, str, float]] = {}  # index -> (prediction, version, predicted_at)

    def poll(self) -> None:
        for records in self.consumer.poll(timeout_ms=200, max_records=5000).values():
            for record in records:
                value = orjson.loads(record.value)
                index = int(value["request_id"].rsplit("-", 1)[1])
                self.by_index.setdefault(index, (value["prediction"], value["model_version"], value["predicted_at"]))

    def close(self) -> None:
        self.consumer.close()


def retrain_messages(settings: Settings) -> list[Retrain]:
    consumer = make_consumer(settings, None, client_id="test-retrain-reader")
    tp = TopicPartition(settings.topic("retrain"), 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    end = consumer.end_offsets([tp])[tp]
    out: list[Retrain] = []
    deadline = time.monotonic() + 15
    while consumer.position(tp) < end and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(m for r in records if isinstance(m := decode(Retrain, r.value), Retrain))
    consumer.close()
    return out


@pytest.fixture
def loop_settings(settings_factory: SettingsFactory, tmp_path: Path) -> Settings:
    settings = settings_factory(
        home=tmp_path / "home", partitions=2, retrain_every=RETRAIN_EVERY, drift_cooldown=1500,
        trials=2, cv_folds=2, max_rounds=150, early_stopping=10, time_budget=60.0, num_threads=1,
        batch_timeout_ms=20,
    )  # fmt: skip
    ensure_topics(settings)
    return settings


@pytest.fixture
def services(loop_settings: Settings) -> Iterator[tuple[Predictor, Trainer]]:
    settings = loop_settings
    bootstrap(settings)
    predictor, trainer = Predictor(settings), Trainer(settings, progress=False)
    threads = [threading.Thread(target=predictor.run, daemon=True), threading.Thread(target=trainer.run, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        assert predictor.wait_ready(60), "the predictor did not become ready"
        yield predictor, trainer
    finally:
        predictor.stop()
        trainer.stop()
        for thread in threads:
            thread.join(60)
        trainer.close()


@pytest.mark.slow
def test_a_drift_is_detected_retrained_and_recovered_from(
    loop_settings: Settings, services: tuple[Predictor, Trainer]
) -> None:
    """``services``: the predictor and the trainer, running."""
    settings = loop_settings
    source = load_source(settings.test_data_path, settings.target)  # type: ignore[arg-type]
    plan = plan_drift(source.frame, settings.target, source.task, DRIFT_AT)
    truth: dict[int, Any] = {}  # the truth of every request, exactly as the sample app draws it

    def recent() -> list[int]:
        """The last WINDOW drifted requests answered, if versions crowned after the drift retrain
        request answered them all."""
        drifted = sorted(i for i in answers.by_index if i >= DRIFT_AT)[-WINDOW:]
        first = first_after_drift()
        if first is None or any(int(answers.by_index[i][1]) < first for i in drifted):
            return []
        return drifted

    asked: list[float] = []  # when the first drift retrain was asked for, once seen

    def first_after_drift() -> int | None:
        """The first version crowned after the first drift retrain request (by that drift cycle, or
        by one of the sooner count cycles after it, when the first model of the new world, trained
        on 80 of its rows, did not beat the champion)."""
        if not asked:
            asked.extend(m.requested_at for m in retrain_messages(settings) if m.reason == "drift")
            if not asked:
                return None
        crowned = [r for r in store.records() if r.promoted_at is not None and r.promoted_at > asked[0]]
        return min((int(r.version) for r in crowned), default=None)

    def accuracy(indices: list[int], predicted: dict[int, Any]) -> float:
        for i in indices:
            if i not in truth:
                truth[i] = request_row(source, plan, i)[1]
        return sum(category_key(predicted[i]) == category_key(truth[i]) for i in indices) / len(indices)

    started = time.monotonic()
    stop = threading.Event()
    options = SampleAppOptions(count=MAX_REQUESTS, rate=RATE, label_delay=0.5, drift_at=DRIFT_AT, timeout=60,
                               progress="off", handle_sigint=False)  # fmt: skip
    app = threading.Thread(target=run_sample_app, args=(settings, options), kwargs={"stop": stop}, daemon=True)
    app.start()
    answers = Answers(settings)
    store = ModelStore(settings)
    pre = list(range(DRIFT_AT - WINDOW, DRIFT_AT))
    pre_accuracy = math.nan
    shown = 0.0
    try:
        while True:  # until the champion is back within 2 points over a full window, or the deadline
            answers.poll()
            predicted = {i: p for i, (p, _, _) in answers.by_index.items()}
            if math.isnan(pre_accuracy) and all(i in predicted for i in pre):
                pre_accuracy = accuracy(pre, predicted)
            champion = store.champion_version()
            last = recent()
            now = accuracy(last, predicted) if len(last) == WINDOW else math.nan
            if time.monotonic() - shown > 10:
                shown = time.monotonic()
                print(
                    f"{shown - started:5.0f}s: {len(predicted)} answered, champion v{champion}, "
                    f"accuracy {now:.3f} over the last {len(last)} drifted answers (pre-drift {pre_accuracy:.3f})"
                )
            if len(last) == WINDOW and now >= pre_accuracy - 0.02:
                break  # the stream stops here: these WINDOW answers are the "after" figure
            assert time.monotonic() - started < DEADLINE, f"no recovery within {DEADLINE:.0f}s (v{champion}: {now:.3f})"
            assert app.is_alive(), "the stream ended before the loop recovered"
            time.sleep(1.0)
        scores: list[float] = []
        while (report := drift_report(store)) is None or report["drift_score"] <= 0.3:  # the stream goes on
            if report is not None and report["drift_score"] not in scores:
                scores.append(report["drift_score"])
            assert time.monotonic() - started < DEADLINE, f"no drift report scored above 0.3: {scores}"
            assert app.is_alive(), f"the stream ended before a drift report scored above 0.3: {scores}"
            time.sleep(1.0)
    finally:
        stop.set()
        app.join(90)
        answers.poll()
        answers.close()
    elapsed = time.monotonic() - started
    predicted = {i: p for i, (p, _, _) in answers.by_index.items()}

    # 1. A drift retrain was asked for within the bound.
    drifts = [m for m in retrain_messages(settings) if m.reason == "drift"]
    assert drifts, "no drift retrain was asked for"
    first = drifts[0]
    before_signal = sum(1 for i, (_, _, at) in answers.by_index.items() if i >= DRIFT_AT and at <= first.requested_at)
    assert before_signal <= DETECTION_BOUND, f"the drift retrain came {before_signal} drifted requests after the drift"

    # 2. The trainer crowned a model after the drift retrain, and its cycles saw the drift: the newest
    # drift report, waited for above until it scored above 0.3 (a cycle's adversarial validation of
    # its newest observations against the base data), ranks the moved feature first (a retrain asked
    # for by a step in the live error may come before the predictor's PSI window has seen much of the
    # shift, so the request itself may name none).
    made_for_drift = first_after_drift()
    assert made_for_drift is not None
    psi = {k.removeprefix("psi."): v for k, v in report.items() if k.startswith("psi.")}
    assert max(psi, key=psi.__getitem__) == "hours_per_week", (report["drift_score"], psi)

    # 3. Recovery, and the frozen model on exactly the same requests.
    frozen_bundle = store.fetch_bundle(*_uri_sha(store, "1"))
    frozen = dict(zip(last, frozen_bundle.predict([request_row(source, plan, i)[0] for i in last])[0], strict=True))
    after_accuracy, frozen_accuracy = accuracy(last, predicted), accuracy(last, frozen)
    print(
        f"\ndrift retrain after {before_signal} drifted requests ({len(drifts)} drift retrains in all); "
        f"first version after it v{made_for_drift}, answered by "
        f"{sorted({answers.by_index[i][1] for i in last}, key=int)}; "
        f"accuracy pre-drift {pre_accuracy:.4f}, after {after_accuracy:.4f} "
        f"(requests {last[0]}-{last[-1]}), frozen v1 on the same {frozen_accuracy:.4f}; "
        f"newest drift report {report['drift_score']:.3f} (lower ones before it: {scores}); "
        f"{len(answers.by_index)} requests, {elapsed:.0f}s"
    )
    assert len(last) == WINDOW
    assert after_accuracy >= pre_accuracy - 0.02, (pre_accuracy, after_accuracy)
    assert frozen_accuracy <= after_accuracy - 0.03, (frozen_accuracy, after_accuracy)


def drift_report(store: ModelStore) -> dict[str, float] | None:
    """The metrics of the newest cycle that wrote a drift report, if any has."""
    cycles = store.client.search_runs(
        [store.experiment_id()], "tags.`streamfit.kind` = 'cycle'", order_by=["attributes.start_time DESC"]
    )  # fmt: skip
    return next((r.data.metrics for r in cycles if "drift_score" in r.data.metrics), None)


def _uri_sha(store: ModelStore, version: str) -> tuple[str, str]:
    message = store.reload_message(version)
    return message.uri, message.sha256


def test_no_drift_retrain_over_20000_undrifted_requests(loop_settings: Settings) -> None:
    """The real predictor with the default drift settings (window 1,000, PSI 0.25, a 5-point drop)
    serves 20,000 undrifted Adult test requests, every one labelled, as fast as the sample app
    sends them: it judges full windows all along and never asks for a drift retrain."""
    settings = loop_settings
    bootstrap(settings)
    predictor = Predictor(settings)
    thread = threading.Thread(target=predictor.run, daemon=True)
    thread.start()
    try:
        assert predictor.wait_ready(60), "the predictor did not become ready"
        options = SampleAppOptions(count=20_000, rate=0, label_delay=0.2, timeout=120, progress="off",
                                   handle_sigint=False)  # fmt: skip
        summary = run_sample_app(settings, options)
        assert summary.answered == 20_000 and summary.labels_sent == 20_000
        deadline = time.monotonic() + 60
        while predictor.metrics.value("observations_total") < 20_000:
            assert time.monotonic() < deadline, "the predictor did not join every label"
            time.sleep(0.2)
    finally:
        predictor.stop()
        thread.join(60)
    monitor = predictor.drift
    assert monitor.served_in_window >= 900 and monitor.overall_psi is not None and monitor.live_metric is not None
    print(f"\nno drift: overall PSI {monitor.overall_psi:.4f}, highest {max(monitor.feature_psi().values()):.4f}, "
          f"live accuracy {monitor.live_metric:.4f} vs holdout {monitor.holdout_metric}")  # fmt: skip
    assert monitor.alarms == 0 and predictor.metrics.value("drift_signals_total", {"cause": "metric"}) == 0
    assert [m for m in retrain_messages(settings) if m.reason == "drift"] == []
