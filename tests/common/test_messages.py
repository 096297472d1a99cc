import json
import math
from pathlib import Path

import orjson
import pytest

from streamfit.common.messages import (
    MESSAGES,
    DeadLetter,
    Decoder,
    Label,
    ModelReload,
    Observation,
    Prediction,
    Rejected,
    Request,
    Retrain,
    dead_letter,
    decode,
)

SHA = "a" * 64

VALID = {
    "requests": {"request_id": "r1", "features": {"age": 39, "job": "clerk", "gain": 1.5, "x": None}},
    "predictions": {"request_id": "r1", "prediction": ">50K", "score": 0.7, "model_version": "3", "predicted_at": 1.0},
    "labels": {"request_id": "r1", "label": "<=50K"},
    "observations": {"request_id": "r1", "features": {"a": 1}, "label": 1, "prediction": 0, "score": 0.2,
                     "model_version": "1", "observed_at": 2.0},
    "retrain": {"reason": "count", "observations": 500, "requested_at": 3.0},
    "models": {"model_name": "m", "version": "2", "uri": "runs:/abc/bundle/streamfit-bundle.zip", "sha256": SHA,
               "metrics": {"loss": 0.3}, "published_at": 4.0},
    "dead-letters": {"source_topic": "t", "partition": 0, "offset": 5, "error": "bad", "payload": "{"},
}  # fmt: skip


@pytest.mark.parametrize("name", list(MESSAGES))
def test_every_message_round_trips(name: str) -> None:
    schema = MESSAGES[name]
    message = decode(schema, orjson.dumps(VALID[name]))
    assert isinstance(message, schema)
    again = decode(schema, message.encode())
    assert again == message


@pytest.mark.parametrize(
    ("name", "raw", "reason"),
    [
        ("requests", b"{not json", "invalid JSON"),
        ("requests", b"\xff\xfe\x00", "invalid JSON"),
        ("requests", b"[1, 2]", "expected a JSON object, got list"),
        ("requests", b'{"features": {}}', "request_id: Field required"),
        ("requests", b'{"request_id": "", "features": {}}', "request_id: String should have at least 1"),
        ("requests", b'{"request_id": 7, "features": {}}', "request_id: Input should be a valid string"),
        ("requests", b'{"request_id": "r", "features": [1]}', "features: Input should be a valid dictionary"),
        ("requests", b'{"request_id": "r", "features": {"a": [1]}}', "features.a: wrong type array"),
        ("requests", b'{"request_id": "r", "features": {"a": {"b": 1}}}', "features.a: wrong type object"),
        ("requests", b'{"request_id": "r", "features": {"a": NaN}}', "invalid JSON"),
        ("requests", b'{"request_id": "r", "features": {"a": Infinity}}', "invalid JSON"),
        ("requests", b'{"request_id": "r", "features": {"a": 1e400}}', "invalid JSON"),
        ("requests", b'{"request_id": "r", "features": {}, "sent_at": -1}', "sent_at: Input should be greater"),
        ("requests", b"[" * 5000, "invalid JSON"),
        ("predictions", b'{"request_id": "r"}', "Field required"),
        ("labels", b'{"request_id": "r", "label": [1]}', "label: wrong type array"),
        ("labels", b'{"request_id": "r"}', "label: Field required"),
        ("observations", b'{"request_id": "r", "features": {}}', "Field required"),
        ("retrain", b'{"reason": "boredom", "observations": 1, "requested_at": 1}', "reason: Input should be"),
        ("retrain", b'{"reason": "count", "observations": -1, "requested_at": 1}', "observations: Input should be"),
        ("models", b'{"model_name": "m", "version": "1", "uri": "u", "sha256": "x", "metrics": {}, "published_at": 1}',
         "sha256: String should match pattern"),
        ("dead-letters", b'{"source_topic": "t"}', "Field required"),
    ],
)  # fmt: skip
def test_decode_errors_give_a_clear_reason(name: str, raw: bytes, reason: str) -> None:
    result = decode(MESSAGES[name], raw)
    assert isinstance(result, Rejected), result
    assert reason in result.reason


def test_oversized_and_null_payloads_are_rejected_unread() -> None:
    decoder = Decoder(Request, max_bytes=1024)
    big = orjson.dumps({"request_id": "r", "features": {"a": "x" * 2000}})
    result = decoder(big)
    assert isinstance(result, Rejected) and "exceeds the limit of 1024" in result.reason
    assert isinstance(decoder(None), Rejected)


def test_non_finite_numbers_cannot_be_encoded_into_a_message() -> None:
    with pytest.raises(ValueError, match="finite"):
        Prediction(request_id="r", prediction=1, score=math.nan, model_version="1", predicted_at=1)


def test_request_keeps_types_and_ignores_unknown_top_level_fields() -> None:
    raw = b'{"request_id": "r", "features": {"a": 1, "b": 1.5, "c": "x", "d": true, "e": null}, "trace": 1}'
    request = decode(Request, raw)
    assert isinstance(request, Request)
    assert request.features == {"a": 1, "b": 1.5, "c": "x", "d": True, "e": None}
    assert type(request.features["a"]) is int


def test_dead_letter_keeps_text_or_base64_and_truncates() -> None:
    text = dead_letter("t", 1, 2, "bad", b"x" * 10_000)
    assert text.payload_encoding == "utf-8" and len(text.payload) == 2048
    binary = dead_letter("t", 1, 2, "bad", b"\xff\x00\xfe")
    assert binary.payload_encoding == "base64" and binary.payload == "/wD+"
    assert isinstance(decode(DeadLetter, binary.encode()), DeadLetter)


def test_messages_match_design_field_names() -> None:
    assert set(Request.model_fields) == {"request_id", "features", "label", "sent_at"}
    assert set(Prediction.model_fields) == {"request_id", "prediction", "score", "model_version", "predicted_at"}
    assert set(Label.model_fields) == {"request_id", "label"}
    # DESIGN.md's fields, all required, plus the optional ``served`` sample for the skew check.
    required = {name for name, info in Observation.model_fields.items() if info.is_required()}
    assert required == {"request_id", "features", "label", "prediction", "score", "model_version", "observed_at"}
    assert set(Observation.model_fields) - required == {"served"}
    assert {"reason", "observations", "requested_at"} <= set(Retrain.model_fields)
    assert set(ModelReload.model_fields) == {"model_name", "version", "uri", "sha256", "metrics", "published_at"}
    assert {"source_topic", "partition", "offset", "error", "payload"} <= set(DeadLetter.model_fields)


def test_json_schemas_in_docs_are_current() -> None:
    from scripts.write_schemas import SCHEMA_DIR, render

    for filename, text in render().items():
        path = SCHEMA_DIR / filename
        assert path.exists(), f"{path} missing: run `python -m scripts.write_schemas`"
        assert path.read_text() == text, f"{path} is stale: run `python -m scripts.write_schemas`"
        assert json.loads(text)["type"] == "object"
    assert sorted(p.name for p in Path(SCHEMA_DIR).glob("*.json")) == sorted(render())
