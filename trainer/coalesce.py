"""Coalescing retrain signals: every request that is waiting becomes one cycle, not one each.

A predictor asks for a retrain every N labelled observations, and every replica does so; while a
cycle trains, more requests pile up. They all ask for the same thing (a model that has seen the
newest observations), and the next cycle reads every observation up to the end of the topic, so
one cycle serves them all. This module is the pure part: records in, one batch out, with the
offsets to commit once that cycle is done and the records to dead-letter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from streamfit.common.messages import Decoder, Rejected, Retrain

REASON_PRIORITY = ("drift", "manual", "count")  # the batch is named after its most urgent request


class RecordLike(Protocol):
    """The fields of a consumed Kafka record that coalescing needs."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class BadRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str


@dataclass(frozen=True)
class RetrainBatch:
    """The retrain requests one cycle answers, and where the retrain topic stands after it."""

    requests: tuple[Retrain, ...] = ()
    first_offsets: Mapping[int, int] = field(default_factory=dict)  # partition -> first offset read
    next_offsets: Mapping[int, int] = field(default_factory=dict)  # partition -> offset to commit
    topic: str = ""
    bad: tuple[BadRecord, ...] = ()
    other_models: int = 0  # requests for another model sharing the topic: skipped, committed

    @property
    def records(self) -> int:
        return sum(self.next_offsets[p] - self.first_offsets[p] for p in self.next_offsets)

    @property
    def reason(self) -> str:
        if not self.requests:
            return "manual"
        reasons = {r.reason for r in self.requests}
        return next(r for r in REASON_PRIORITY if r in reasons)

    @property
    def error_rose(self) -> bool:
        """A predictor asked because its served error rose (a drift request for cause "metric" or
        "step"), not only because its inputs moved: a change of the world should show in the
        observations."""
        return any(
            r.reason == "drift" and {"metric", "step"} & set((r.details or {}).get("causes") or ())
            for r in self.requests
        )

    @property
    def reasons(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.requests).items()))

    @property
    def needs_cycle(self) -> bool:
        """False when every record read was bad or for another model: commit, do not train."""
        return bool(self.requests) or not self.next_offsets


def coalesce(records: Iterable[RecordLike], model_name: str, max_bytes: int = 1_000_000) -> RetrainBatch:
    """All the records read in one drain, as one batch. Records must be in offset order per
    partition (as a consumer returns them)."""
    decoder = Decoder(Retrain, max_bytes)
    requests: list[Retrain] = []
    bad: list[BadRecord] = []
    first: dict[int, int] = {}
    nxt: dict[int, int] = {}
    topic = ""
    others = 0
    wanted = model_name.encode()
    for record in records:
        topic = record.topic
        first.setdefault(record.partition, record.offset)
        nxt[record.partition] = max(nxt.get(record.partition, 0), record.offset + 1)
        if record.key is not None and record.key != wanted:
            others += 1
            continue
        decoded = decoder(record.value)
        if isinstance(decoded, Rejected):
            bad.append(
                BadRecord(record.topic, record.partition, record.offset, record.key, record.value, decoded.reason)
            )
            continue
        requests.append(decoded)
    return RetrainBatch(tuple(requests), first, nxt, topic, tuple(bad), others)


def offsets_cover(done_first: Mapping[int, int], done_next: Mapping[int, int], batch: RetrainBatch) -> bool:
    """Whether a finished cycle that answered ``[done_first, done_next)`` already answered every
    record of ``batch`` (it is a redelivery after a crash between the reload and the commit)."""
    if not batch.next_offsets:
        return False
    for partition, end in batch.next_offsets.items():
        if partition not in done_next or partition not in done_first:
            return False
        if done_first[partition] > batch.first_offsets[partition] or done_next[partition] < end:
            return False
    return True
