"""The small pure parts: the retrain counter, the throttled log, the output encoding."""

from __future__ import annotations

import logging

import orjson
import pytest

from common.messages import Observation, Prediction
from predictor.encoding import observation_json, prediction_json
from predictor.retrain_signal import RetrainCounter
from predictor.throttled_log import ThrottledLog


def test_one_retrain_signal_per_n_observations() -> None:
    counter = RetrainCounter(every=10)
    assert [counter.add(n) for n in (4, 5, 1, 9, 1, 25)] == [0, 0, 1, 0, 1, 2]
    assert counter.total == 45 and counter.since_signal == 5
    state = counter.snapshot()
    assert counter.add(5) == 1
    counter.restore(state)
    assert counter.since_signal == 5 and counter.total == 45


def test_retrain_every_zero_never_signals() -> None:
    counter = RetrainCounter(every=0)
    assert counter.add(10_000) == 0 and counter.total == 10_000
    with pytest.raises(ValueError):
        RetrainCounter(every=-1)


def test_throttled_log_lets_one_line_through_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("t"), logging.WARNING, interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        assert throttled("bad %d", 1)
        for i in range(500):
            now[0] += 0.01
            throttled("bad %d", i)
        now[0] = 10.5
        assert throttled("bad %d", 2)
        throttled("bad %d", 3)
        throttled.flush()
        throttled.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "bad 1",
        "bad 2 (+500 similar not logged in the last 10s)",
        "1 more like the last one were not logged",
    ]


@pytest.mark.parametrize("prediction", ["yes", 3, 2.5, True])
def test_fast_encoding_is_the_message_schema_encoding(prediction: object) -> None:
    fast = prediction_json("r1", prediction, 0.25, "7", 1700000000.5)
    assert fast == Prediction(request_id="r1", prediction=prediction, score=0.25, model_version="7",
                              predicted_at=1700000000.5).encode()  # type: ignore[arg-type]  # fmt: skip
    features = {"a": 1, "b": None, "c": "x", "d": 2.5, "e": False}
    fast = observation_json("r1", features, "no", prediction, 0.25, "7", 1700000000.5)
    schema = Observation(request_id="r1", features=features, label="no", prediction=prediction, score=0.25,
                         model_version="7", observed_at=1700000000.5)  # type: ignore[arg-type]  # fmt: skip
    assert fast == schema.encode()
    assert orjson.loads(fast)["features"] == features


def test_an_observation_with_a_served_vector_decodes_with_missing_as_null() -> None:
    from common.messages import decode

    fast = observation_json("r1", {"a": 1}, "no", "no", 0.25, "7", 1.0, [1.0, float("nan"), 3.0])
    decoded = decode(Observation, fast)
    assert isinstance(decoded, Observation) and decoded.served == [1.0, None, 3.0]
    assert "served" not in orjson.loads(observation_json("r1", {"a": 1}, "no", "no", 0.25, "7", 1.0))
