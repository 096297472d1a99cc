"""Reading a polled batch: each record decoded and validated, sorted into requests to answer,
labels to join, and rejections to dead-letter.

The contract is ``common.messages.Decoder`` and ``FeaturePipeline.check``. Running them on every
request costs more than the rest of the predictor's Python work together (pydantic validates each
feature value against a union of four strict types), so a request first goes through an exact
fast check of the same rules on the orjson result; anything the fast check does not accept goes to
the Decoder and the pipeline, which give the reason. The fast check only ever accepts what the
Decoder and the pipeline accept (tests/predictor/test_intake.py checks it on generated input).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from streamfit.common.messages import Decoder, Label, Rejected, Request
from streamfit.common.pipeline import FeaturePipeline
from streamfit.predictor.label_join import NO_LABEL

RejectKind = Literal["too_large", "decode", "schema", "features", "label"]

_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_NUMBERS: Final = frozenset({int, float, type(None)})
_MAX_ID: Final = 256  # common.messages.RequestId
_LABEL_KEYS: Final = frozenset({"request_id", "label"})
_DECODE_FAILURES: Final = ("invalid JSON", "expected a JSON object", "empty message", "nested too deeply")


@dataclass(frozen=True, slots=True)
class Rejection:
    record: Any  # the ConsumerRecord
    kind: RejectKind
    reason: str


@dataclass(slots=True)
class Intake:
    """One batch, read. The request lists are parallel."""

    ids: list[str] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)  # where each request came from
    carried: list[Any] = field(default_factory=list)  # a valid label the request carries, or NO_LABEL
    labels: list[tuple[str, Any, int]] = field(default_factory=list)  # (request_id, valid label, partition)
    rejected: list[Rejection] = field(default_factory=list)
    requests_read: int = 0
    labels_read: int = 0


def kind_of(reason: str) -> RejectKind:
    """The class of a Decoder rejection, for the dead-letter metric's label."""
    if reason.startswith("message of "):
        return "too_large"
    if reason.startswith(_DECODE_FAILURES):
        return "decode"
    return "schema"


def _json_object(raw: Any, max_bytes: int) -> dict[str, Any] | None:
    """``raw`` as a JSON object if it is bytes within the size limit that parse to one, else None."""
    if type(raw) is not bytes or len(raw) > max_bytes:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if type(data) is dict else None


def fast_request(raw: Any, max_bytes: int) -> tuple[str, dict[str, Any], Any] | None:
    """(request_id, features, label) if the Decoder would accept ``raw`` as a Request, else None.

    None means "ask the Decoder", not "invalid": it never rejects anything itself.
    """
    data = _json_object(raw, max_bytes)
    if data is None:
        return None
    request_id = data.get("request_id")
    features = data.get("features")
    if type(request_id) is not str or not 0 < len(request_id) <= _MAX_ID or type(features) is not dict:
        return None
    scalars = _SCALARS
    for value in features.values():
        if type(value) not in scalars:
            return None
    label = data.get("label")
    if type(label) not in scalars:
        return None
    sent_at = data.get("sent_at")
    if sent_at is not None and (type(sent_at) not in (int, float) or sent_at < 0):
        return None
    return request_id, features, label


def fast_label(raw: Any, max_bytes: int) -> tuple[str, Any] | None:
    """(request_id, label) if the Decoder would accept ``raw`` as a Label, else None."""
    data = _json_object(raw, max_bytes)
    if data is None or data.keys() != _LABEL_KEYS:
        return None
    request_id, label = data["request_id"], data["label"]
    if type(request_id) is not str or not 0 < len(request_id) <= _MAX_ID or type(label) not in _SCALARS:
        return None
    return request_id, label


class Reader:
    """Reads batches for one model's pipeline (a new model gets a new reader)."""

    def __init__(
        self,
        pipeline: FeaturePipeline,
        requests_topic: str,
        labels_topic: str,
        reject_missing: bool,
        max_bytes: int,
    ) -> None:
        self.pipeline = pipeline
        self.requests_topic = requests_topic
        self.labels_topic = labels_topic
        self.reject_missing = reject_missing
        self.max_bytes = max_bytes
        self._decode_request = Decoder(Request, max_bytes)
        self._decode_label = Decoder(Label, max_bytes)
        self._required = frozenset(pipeline.feature_names) if reject_missing else frozenset()
        self._numeric = tuple(f.name for f in pipeline.features if f.kind == "numeric")

    def read(self, records: Sequence[Any]) -> Intake:
        out = Intake()
        requests_topic, max_bytes = self.requests_topic, self.max_bytes
        required, numeric, numbers = self._required, self._numeric, _NUMBERS
        ids, features_of, carried, partitions = out.ids, out.features, out.carried, out.partitions
        for record in records:
            if record.topic != requests_topic:
                self._read_label(record, out)
                continue
            out.requests_read += 1
            raw = record.value
            fast = fast_request(raw, max_bytes)
            if fast is None:
                decoded = self._decode_request(raw)
                if isinstance(decoded, Rejected):
                    out.rejected.append(Rejection(record, kind_of(decoded.reason), decoded.reason))
                    continue
                fast = decoded.request_id, decoded.features, decoded.label
            request_id, features, label = fast
            # The pipeline's check, fast: every required name present, every numeric one a number.
            ok = not required or features.keys() >= required
            if ok:
                get = features.get
                for name in numeric:
                    if type(get(name)) not in numbers:
                        ok = False
                        break
            if not ok:
                why = self.pipeline.check(features, self.reject_missing)
                if why is not None:
                    out.rejected.append(Rejection(record, "features", why))
                    continue
            if label is None:
                label = NO_LABEL
            else:
                why = self.label_problem(label)
                if why is not None:  # the prediction is still served; only the label is refused
                    out.rejected.append(Rejection(record, "label", why))
                    label = NO_LABEL
            ids.append(request_id)
            features_of.append(features)
            carried.append(label)
            partitions.append(record.partition)
        return out

    def _read_label(self, record: Any, out: Intake) -> None:
        out.labels_read += 1
        fast = fast_label(record.value, self.max_bytes)
        if fast is None:
            decoded = self._decode_label(record.value)
            if isinstance(decoded, Rejected):
                out.rejected.append(Rejection(record, kind_of(decoded.reason), decoded.reason))
                return
            fast = decoded.request_id, decoded.label
        why = self.label_problem(fast[1])
        if why is not None:
            out.rejected.append(Rejection(record, "label", why))
        else:
            out.labels.append((fast[0], fast[1], record.partition))

    def label_problem(self, value: Any) -> str | None:
        """Why ``value`` is not a label of this model, or None."""
        if self.pipeline.encode_label(value) is not None:
            return None
        if self.pipeline.task == "regression":
            return f"label {value!r} is not a finite number (the model is a regression)"
        classes = ", ".join(map(repr, self.pipeline.classes[:10]))
        more = "" if len(self.pipeline.classes) <= 10 else f" and {len(self.pipeline.classes) - 10} more"
        return f"label {value!r} is not a class of the model ({classes}{more})"
