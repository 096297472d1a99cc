"""The drift hook in the real predictor, on real Kafka: a shifted input asks for a retrain with
reason ``drift`` (once per cooldown), the observations carry served vectors for the skew check,
and the metrics show the PSI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from streamfit.common.kafka import make_producer
from streamfit.common.messages import Observation, Retrain, decode
from streamfit.predictor.metrics import PredictorMetrics
from streamfit.predictor.service import Predictor
from streamfit.trainer.fit import evaluate
from tests.conftest import SettingsFactory
from tests.predictor.conftest import Models, TopicReader, features, running, synthetic_frame, train, wait_for
from tests.predictor.test_drift import profiled


def test_shifted_requests_ask_for_one_drift_retrain_naming_the_feature(
    make_settings: SettingsFactory,
    models_factory: Callable[..., Models],
    reader: Callable[..., TopicReader],
) -> None:
    settings = make_settings(drift_window=100, drift_psi_threshold=0.25, drift_metric_drop=0, drift_cooldown=100_000)
    models = models_factory(settings)
    uri, sha = models.store_bundle(profiled(train()))
    models.publish("1", uri, sha)
    metrics = PredictorMetrics()
    retrain, observations = reader(settings, "retrain"), reader(settings, "observations")
    producer = make_producer(settings, client_id="test-drift")

    def send(start: int, count: int, shift: float) -> None:
        for i in range(start, start + count):
            row: dict[str, Any] = {**features(i), "x2": features(i)["x2"] + shift}
            value = orjson.dumps({"request_id": f"r{i}", "features": row, "label": "yes"})
            producer.send(settings.topic("requests"), key=f"r{i}".encode(), value=value)
        producer.flush()

    with running(Predictor(settings, metrics=metrics)):
        send(0, 150, 0.0)
        observations.count(150)
        assert retrain.values == [] and metrics.value("drift_signals_total", {"cause": "psi"}) == 0
        send(150, 300, 3.0)
        messages = retrain.count(1)
        observations.count(450)
        wait_for(lambda: metrics.value("predictions_total") >= 450, what="450 predictions counted")
    producer.close()

    message = decode(Retrain, orjson.dumps(messages[0]))
    assert isinstance(message, Retrain) and message.reason == "drift"
    assert message.top_features and message.top_features[0].feature == "x2" and message.top_features[0].psi > 0.25
    assert message.details is not None and message.details["model_version"] == "1"
    assert len(retrain.values) == 1  # the cooldown holds the next one back
    assert metrics.value("drift_signals_total", {"cause": "psi"}) == 1
    assert metrics.value("drift_psi", {"feature": "x2"}) > 0.25 and metrics.value("drift_psi_overall") > 0
    # The first request of each batch rides with the vector it was served, for the skew check.
    served = [decode(Observation, orjson.dumps(v)) for v in observations.values if "served" in v]
    assert served and all(isinstance(o, Observation) and o.served and len(o.served) == 3 for o in served)


def test_after_a_step_alarm_a_model_learnt_from_the_labels_since_the_change_serves_until_a_new_version(
    make_settings: SettingsFactory,
    models_factory: Callable[..., Models],
    reader: Callable[..., TopicReader],
) -> None:
    """The concept flips: every label becomes the other class. The step alarm asks for a retrain and,
    from the labels since the change, the predictor learns an interim model that answers as the new
    labels do (version 1 still named) until version 2 swaps in, which is then served as it answers."""
    settings = make_settings(drift_psi_threshold=0, drift_metric_drop=0.05, drift_cooldown=100_000)
    model = train(rounds=30)
    frame = synthetic_frame(3000, seed=9)
    bundle = profiled(model, evaluate(model, model.pipeline.transform_frame(frame),
                                      model.pipeline.encode_labels(frame.y.tolist())))  # fmt: skip
    models = models_factory(settings)
    models.publish("1", *models.store_bundle(bundle))
    # Requests the model answers yes, no, yes, no, ...: both answers are common after the change.
    answers = bundle.predict([features(i) for i in range(3000)])[0]
    yes, no = ([i for i, a in enumerate(answers) if a == value] for value in ("yes", "no"))
    order = [i for pair in zip(yes, no, strict=False) for i in pair][:900]
    other = {"yes": "no", "no": "yes"}
    metrics = PredictorMetrics()
    retrain, predictions = reader(settings, "retrain"), reader(settings, "predictions")
    producer = make_producer(settings, client_id="test-interim")

    def send(start: int, stop: int, flipped: bool) -> None:
        for n in range(start, stop):
            i = order[n]
            label = other[answers[i]] if flipped else answers[i]
            value = orjson.dumps({"request_id": f"r{n}", "features": features(i), "label": label})
            producer.send(settings.topic("requests"), key=f"r{n}".encode(), value=value)
        producer.flush()

    def served(start: int, stop: int) -> dict[int, Any]:
        wanted = {f"r{n}" for n in range(start, stop)}
        values = predictions.until(lambda vs: wanted <= {v["request_id"] for v in vs}, what=f"answers {start}-{stop}")
        return {int(v["request_id"][1:]): v for v in values if v["request_id"] in wanted}

    with running(Predictor(settings, metrics=metrics)):
        send(0, 400, flipped=False)
        assert all(v["prediction"] == answers[order[n]] for n, v in served(0, 400).items())
        send(400, 600, flipped=True)
        retrain.count(1)
        wait_for(lambda: metrics.value("interim_corrections_total") == 1, what="an interim model serving")
        send(600, 700, flipped=True)
        interim = served(600, 700)
        assert {v["model_version"] for v in interim.values()} == {"1"}
        as_new_labels = sum(v["prediction"] == other[answers[order[n]]] for n, v in interim.items())
        assert as_new_labels >= 95, interim
        assert all((v["score"] >= 0.5) == (v["prediction"] == "yes") for v in interim.values())
        models.publish("2", *models.store_bundle(profiled(train(seed=2, rounds=30))))
        wait_for(lambda: metrics.value("model_version") == 2, what="version 2 serving")
        send(700, 800, flipped=True)
        after = served(700, 800)
    producer.close()
    second = profiled(train(seed=2, rounds=30))
    expected = second.predict([features(order[n]) for n in range(700, 800)])[0]
    assert [after[n]["prediction"] for n in range(700, 800)] == expected  # version 2 as it answers
    assert {v["model_version"] for v in after.values()} == {"2"}
    assert metrics.value("interim_corrections_total") == 1
