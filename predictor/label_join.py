"""The label join: what the predictor served, kept until the request's label arrives.

Requests and labels share their key (request_id) and partition count, and the predictor's group
uses the range assignor, which gives partition i of both topics to the same replica: the replica
that served a request also reads its label. The store is in memory and bounded twice: at most
``max_size`` served requests (the oldest go first) for at most ``max_age`` seconds each.

A label can arrive before its request: after a restart or a rebalance both topics are replayed
from their committed offsets, and nothing orders two topics. Such a label is held for ``hold_age``
seconds (at most ``hold_max`` of them); if its request is served meanwhile, the two are joined
then. A held label whose request does not come, like a label for a request that expired or was
never served here, is counted as ``unknown``, which is not an error.

By design, a restart or a rebalance loses the served requests kept in memory: their labels count
as unknown. The predictions were delivered; only those observations are missing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

HOLD_AGE: Final = 30.0  # seconds an early label waits for its request
HOLD_MAX: Final = 10_000  # early labels held at once


class _NoLabel:
    def __repr__(self) -> str:
        return "NO_LABEL"


NO_LABEL: Final = _NoLabel()  # "no label" (None is a value a client may send, and is refused)


@dataclass(frozen=True, slots=True)
class Served:
    """What was answered for one request: enough to write its observation later."""

    raw: bytes  # the request as received; its features are read back on a join (smaller than a dict)
    prediction: Any
    score: float
    model_version: str
    served_at: float  # monotonic seconds


class LabelJoin:
    def __init__(self, max_size: int, max_age: float, hold_max: int = HOLD_MAX, hold_age: float = HOLD_AGE) -> None:
        if max_size < 1 or max_age <= 0:
            raise ValueError("max_size must be >= 1 and max_age > 0")
        self.max_size = max_size
        self.max_age = max_age
        self.hold_max = hold_max
        self.hold_age = hold_age
        self._pending: OrderedDict[str, Served] = OrderedDict()
        self._held: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._undo: list[tuple[bool, str, Any]] | None = None
        # Counters, read by the metrics at scrape time.
        self.joined = 0  # observations made
        self.held_total = 0  # labels that arrived before their request
        self.unknown = 0  # labels never joined: unknown or expired request, or held too long
        self.expired = 0  # served requests dropped at max_age
        self.evicted = 0  # served requests dropped at max_size

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def held(self) -> int:
        return len(self._held)

    def served(self, request_id: str, served: Served) -> Any:
        """Remember a served request; returns its early label if one was held, else ``NO_LABEL``."""
        if self._held:
            early = self._held.pop(request_id, None)
            if early is not None:
                if self._undo is not None:
                    self._undo.append((False, request_id, early))
                self.joined += 1
                return early[0]
        pending = self._pending
        if request_id in pending:
            pending.move_to_end(request_id)
        pending[request_id] = served
        if len(pending) > self.max_size:
            pending.popitem(last=False)
            self.evicted += 1
        return NO_LABEL

    def label(self, request_id: str, value: Any, now: float) -> Served | None:
        """The served request this label completes, or None (the label is then held a while)."""
        entry = self._pending.pop(request_id, None)
        if entry is not None:
            if self._undo is not None:
                self._undo.append((True, request_id, entry))
            self.joined += 1
            return entry
        held = self._held
        if request_id in held:
            held.move_to_end(request_id)
        held[request_id] = (value, now)
        self.held_total += 1
        if len(held) > self.hold_max:
            held.popitem(last=False)
            self.unknown += 1
        return None

    def expire(self, now: float) -> None:
        """Drop served requests older than ``max_age`` and held labels older than ``hold_age``."""
        pending, oldest = self._pending, now - self.max_age
        while pending:
            first = next(iter(pending.values()))
            if first.served_at > oldest:
                break
            pending.popitem(last=False)
            self.expired += 1
        held, oldest = self._held, now - self.hold_age
        while held:
            _, since = next(iter(held.values()))
            if since > oldest:
                break
            held.popitem(last=False)
            self.unknown += 1

    # --- one batch at a time: its joins are undone if its output never reaches the broker ----------
    def begin(self) -> None:
        self._undo = []

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        """Put back what this batch's joins took, so that a retried batch joins them again."""
        for was_pending, request_id, item in reversed(self._undo or []):
            store: OrderedDict[str, Any] = self._pending if was_pending else self._held
            store[request_id] = item
            store.move_to_end(request_id, last=False)  # it was older than anything added since
            self.joined -= 1
        self._undo = None
