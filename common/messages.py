"""The messages on every topic (DESIGN.md's table), with strict decoding and fast encoding.

Decoding never raises for bad input: ``decode`` returns either the message or a ``Rejected`` with
a one-line reason, which the caller dead-letters. Encoding goes through orjson.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

# A feature or label value: a finite number, a string, a boolean, or null (missing).
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None
RequestId = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Timestamp = Annotated[float, Field(ge=0)]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


class Request(Message):
    """A feature request. ``label`` set makes it an observation at once."""

    model_config = ConfigDict(extra="ignore")  # unknown top-level fields are tolerated, not used
    request_id: RequestId
    features: dict[StrictStr, Scalar]
    label: Scalar = None
    sent_at: Timestamp | None = None


class Prediction(Message):
    request_id: RequestId
    prediction: Scalar
    score: float
    model_version: StrictStr
    predicted_at: Timestamp


class Label(Message):
    request_id: RequestId
    label: Annotated[Scalar, Field()]


class Observation(Message):
    request_id: RequestId
    features: dict[StrictStr, Scalar]
    label: Scalar
    prediction: Scalar
    score: float
    model_version: StrictStr
    observed_at: Timestamp
    # For a sample of observations: the vector the model read (null: missing), for the trainer's
    # train/serve skew check.
    served: list[StrictFloat | None] | None = None


class FeatureDrift(Message):
    feature: StrictStr
    psi: Annotated[float, Field(ge=0)]


class Retrain(Message):
    reason: Literal["count", "drift", "manual"]
    observations: Annotated[StrictInt, Field(ge=0)]
    requested_at: Timestamp
    details: dict[str, Any] | None = None  # e.g. the drift scores for reason "drift"
    top_features: list[FeatureDrift] | None = None  # reason "drift": the features that moved most, by PSI


class ModelReload(Message):
    """The champion. The last message on ``models`` is the current one."""

    model_name: StrictStr
    version: StrictStr
    uri: StrictStr
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
    metrics: dict[StrictStr, float]
    published_at: Timestamp


class DeadLetter(Message):
    source_topic: StrictStr
    partition: int
    offset: int
    error: StrictStr
    payload: StrictStr
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"


M = TypeVar("M", bound=Message)

MESSAGES: dict[str, type[Message]] = {
    "requests": Request,
    "predictions": Prediction,
    "labels": Label,
    "observations": Observation,
    "retrain": Retrain,
    "models": ModelReload,
    "dead-letters": DeadLetter,
}

DEFAULT_MAX_BYTES = 1_000_000
PAYLOAD_KEEP = 2048  # bytes of a rejected payload kept in its dead letter


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


@dataclass(frozen=True, slots=True)
class Decoder(Generic[M]):
    """Strict JSON decoding of one message type with a size limit."""

    schema: type[M]
    max_bytes: int = DEFAULT_MAX_BYTES

    def __call__(self, raw: bytes | None) -> M | Rejected:
        if raw is None:
            return Rejected("empty message (null value)")
        if len(raw) > self.max_bytes:
            return Rejected(f"message of {len(raw)} bytes exceeds the limit of {self.max_bytes} (max_message_bytes)")
        try:
            # orjson rejects NaN/Infinity and invalid UTF-8; pydantic then checks the shape strictly.
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Rejected(f"invalid JSON: {exc}")
        if not isinstance(data, dict):
            return Rejected(f"expected a JSON object, got {type(data).__name__}")
        try:
            return self.schema.model_validate(data, strict=True)
        except ValidationError as exc:
            return Rejected(describe_validation_error(exc))
        except RecursionError:
            return Rejected("nested too deeply")


def decode(schema: type[M], raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> M | Rejected:
    return Decoder(schema, max_bytes)(raw)


_UNION_TAGS = {"bool", "int", "float", "str", "none", "dict", "list"}
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
               dict: "object", type(None): "null"}  # fmt: skip


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """One line per wrong field; a value that fits no member of a union is named once, by type."""
    by_loc: dict[str, list[Any]] = {}
    for err in exc.errors():
        path = [str(p) for p in err["loc"]]
        while len(path) > 1 and path[-1] in _UNION_TAGS:
            path.pop()
        by_loc.setdefault(".".join(path) or "message", []).append(err)
    parts = []
    for loc, errs in list(by_loc.items())[:limit]:
        if len(errs) > 1:
            got = _JSON_TYPES.get(type(errs[0]["input"]), type(errs[0]["input"]).__name__)
            parts.append(f"{loc}: wrong type {got} (expected a number, string, boolean or null)")
        else:
            parts.append(f"{loc}: {errs[0]['msg']}")
    more = len(by_loc) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def dead_letter(topic: str, partition: int, offset: int, error: str, raw: bytes | None) -> DeadLetter:
    """A dead letter that keeps the (truncated) payload as text when it is UTF-8, else base64."""
    data = (raw or b"")[:PAYLOAD_KEEP]
    try:
        payload, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(data).decode("ascii"), "base64"
    return DeadLetter(
        source_topic=topic, partition=partition, offset=offset, error=error[:1000],
        payload=payload, payload_encoding=encoding,  # type: ignore[arg-type]
    )  # fmt: skip


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every message, as kept in docs/schemas/."""
    return {name: schema.model_json_schema() for name, schema in MESSAGES.items()}
