"""The predictor's fast output encoding: byte for byte the message schemas' encoding."""

from __future__ import annotations

import orjson
import pytest

from streamfit.common.messages import Observation, Prediction
from streamfit.predictor.encoding import observation_json, prediction_json


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
    from streamfit.common.messages import decode

    fast = observation_json("r1", {"a": 1}, "no", "no", 0.25, "7", 1.0, [1.0, float("nan"), 3.0])
    decoded = decode(Observation, fast)
    assert isinstance(decoded, Observation) and decoded.served == [1.0, None, 3.0]
    assert "served" not in orjson.loads(observation_json("r1", {"a": 1}, "no", "no", 0.25, "7", 1.0))
