"""The drift hook in the real predictor, on real Kafka: a shifted input asks for a retrain with
reason ``drift`` (once per cooldown), the observations carry served vectors for the skew check,
and the metrics show the PSI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from common.kafka import make_producer
from common.messages import Observation, Retrain, decode
from predictor.metrics import PredictorMetrics
from predictor.service import Predictor
from tests.conftest import SettingsFactory
from tests.predictor.conftest import Models, TopicReader, features, running, train, wait_for
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
