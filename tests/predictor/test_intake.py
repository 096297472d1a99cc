"""Reading a batch: the fast path accepts exactly what the Decoder and the pipeline accept, and
every rejection carries the contract's reason."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfit.common.messages import Decoder, Label, Request
from streamfit.common.pipeline import FeaturePipeline, FeatureSpec
from streamfit.predictor.intake import Reader, fast_label, fast_request, kind_of
from streamfit.predictor.label_join import NO_LABEL

MAX_BYTES = 1024
PIPELINE = FeaturePipeline(
    "y", "binary",
    (FeatureSpec("age", "numeric"), FeatureSpec("city", "categorical", ("Oslo", "Lyon")), FeatureSpec("n", "numeric")),
    ("no", "yes"),
)  # fmt: skip


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)  # fmt: skip
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)  # fmt: skip
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
feature_dicts = st.dictionaries(st.sampled_from(["age", "city", "n", "other"]), json_values, max_size=4)
request_ids = st.one_of(st.text(max_size=3), st.text(min_size=250, max_size=260), json_values)
requests = st.fixed_dictionaries(
    {},
    optional={
        "request_id": request_ids, "features": st.one_of(feature_dicts, json_values), "label": json_values,
        "sent_at": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), json_values),
        "extra": json_values,
    },
)  # fmt: skip

likely_valid = st.fixed_dictionaries(
    {"request_id": st.text(min_size=0, max_size=4), "features": st.dictionaries(st.text(max_size=3), json_scalars)},
    optional={"label": json_scalars, "sent_at": st.one_of(st.integers(-2, 2**40), st.floats(-1, 1e10), st.none())},
)  # fmt: skip


def encoded(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits
        return None


def same(a: Any, b: Any) -> bool:
    return orjson.dumps(a) == orjson.dumps(b)  # tells 1 from 1.0 and from true


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(requests.map(encoded), likely_valid.map(encoded), st.binary(max_size=40), st.just(b"x" * 2000), st.none())
)
def test_fast_request_accepts_exactly_what_the_decoder_accepts(raw: bytes | None) -> None:
    fast = fast_request(raw, MAX_BYTES)
    decoded = Decoder(Request, MAX_BYTES)(raw)
    if isinstance(decoded, Request):
        assert fast is not None, "a valid request missed the fast path"
        assert same(fast, (decoded.request_id, decoded.features, decoded.label))
    else:
        assert fast is None, f"the fast path accepted what the Decoder refuses: {decoded}"


labels = st.fixed_dictionaries(
    {}, optional={"request_id": request_ids, "label": json_values, "extra": json_values}
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.one_of(labels.map(encoded), st.binary(max_size=20), st.none()))
def test_fast_label_accepts_exactly_what_the_decoder_accepts(raw: bytes | None) -> None:
    fast = fast_label(raw, MAX_BYTES)
    decoded = Decoder(Label, MAX_BYTES)(raw)
    if isinstance(decoded, Label):
        assert fast is not None and same(fast, (decoded.request_id, decoded.label))
    else:
        assert fast is None


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["age", "city", "n", "other"]), json_scalars, max_size=4), st.booleans())
def test_the_inline_feature_check_is_the_pipelines(features: dict[str, Any], reject_missing: bool) -> None:
    reader = Reader(PIPELINE, "requests", "labels", reject_missing, MAX_BYTES)
    raw = orjson.dumps({"request_id": "r", "features": features})
    intake = reader.read([Record("requests", 0, 0, b"r", raw)])
    why = PIPELINE.check(features, reject_missing)
    if why is None:
        assert intake.ids == ["r"] and not intake.rejected
    else:
        assert intake.ids == [] and [(r.kind, r.reason) for r in intake.rejected] == [("features", why)]


def test_a_batch_is_sorted_into_requests_labels_and_rejections() -> None:
    reader = Reader(PIPELINE, "requests", "labels", True, MAX_BYTES)
    good = {"age": 30, "city": "Oslo", "n": None}
    batch = [
        Record("requests", 0, 0, b"a", orjson.dumps({"request_id": "a", "features": good})),
        Record("requests", 0, 1, b"b", orjson.dumps({"request_id": "b", "features": good, "label": "yes"})),
        Record("requests", 0, 2, b"c", orjson.dumps({"request_id": "c", "features": good, "label": "maybe"})),
        Record("requests", 0, 3, b"d", b"{oops"),
        Record("requests", 0, 4, b"e", orjson.dumps({"request_id": "e", "features": {"age": "old"}})),
        Record("requests", 0, 5, b"f", b"x" * 2000),
        Record("labels", 0, 0, b"a", orjson.dumps({"request_id": "a", "label": "no"})),
        Record("labels", 0, 1, b"a", orjson.dumps({"request_id": "a", "label": 3})),
        Record("labels", 0, 2, b"a", orjson.dumps({"request_id": "a"})),
    ]
    intake = reader.read(batch)
    assert intake.ids == ["a", "b", "c"] and intake.carried == [NO_LABEL, "yes", NO_LABEL]
    assert intake.labels == [("a", "no", 0)] and intake.partitions == [0, 0, 0]
    assert intake.requests_read == 6 and intake.labels_read == 3
    kinds = [(r.record.topic, r.record.offset, r.kind) for r in intake.rejected]
    assert kinds == [("requests", 2, "label"), ("requests", 3, "decode"), ("requests", 4, "features"),
                     ("requests", 5, "too_large"), ("labels", 1, "label"), ("labels", 2, "schema")]  # fmt: skip
    assert "label 'maybe' is not a class of the model ('no', 'yes')" in intake.rejected[0].reason


def test_regression_labels_must_be_finite_numbers() -> None:
    pipeline = FeaturePipeline("y", "regression", (FeatureSpec("a", "numeric"),))
    reader = Reader(pipeline, "requests", "labels", False, MAX_BYTES)
    assert reader.label_problem(2.5) is None and reader.label_problem(3) is None
    assert "not a finite number" in (reader.label_problem("3") or "")
    assert reader.label_problem(True) is not None and reader.label_problem(None) is not None


def test_decoder_reasons_are_classed() -> None:
    assert kind_of("message of 5000 bytes exceeds the limit of 1024 (max_message_bytes)") == "too_large"
    assert kind_of("invalid JSON: unexpected character") == "decode"
    assert kind_of("empty message (null value)") == "decode"
    assert kind_of("request_id: Field required") == "schema"
