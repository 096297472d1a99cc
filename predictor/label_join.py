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

import struct
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Final

import orjson

HOLD_AGE: Final = 30.0  # seconds an early label waits for its request
HOLD_MAX: Final = 10_000  # early labels held at once


class _NoLabel:
    def __repr__(self) -> str:
        return "NO_LABEL"


NO_LABEL: Final = _NoLabel()  # "no label" (None is a value a client may send, and is refused)


@dataclass(frozen=True, slots=True)
class Served:
    """What was answered for one request: enough to write its observation later."""

    features: dict[str, Any]  # as the request carried them
    prediction: Any
    score: float
    model_version: str
    served_at: float  # monotonic seconds


# --- the packed form of a served request -----------------------------------------------------------
# A store of 200,000 served requests as objects (the raw request, a dataclass, two floats) took
# about 630 bytes each; packed into one bytes object it takes about 300 (docs/benchmarks.md). The
# header holds the numbers and small-table ids, the tail the feature values as a JSON list, whose
# names (the request's key order) are a "key set" stored once. What does not fit a table (more
# than 65,534 distinct key sets, predictions or versions) travels whole in the JSON tail instead.
_HEADER: Final = struct.Struct("<ddHHHB")  # score, served_at, key set, prediction, version, flags
_NOT_IN_TABLE: Final = 0xFFFF
_pack_header, _dumps = _HEADER.pack, orjson.dumps
_WHOLE: Final = 1  # flag: the tail is [features, prediction, version], features a dict


class _Table:
    """Values seen often (feature name sets, class labels, model versions) and their small ids.
    ``typed``: 1, 1.0 and True are distinct values (predictions); else values are of one type."""

    def __init__(self, typed: bool = False) -> None:
        self.typed = typed
        self.ids: dict[Any, int] = {}
        self.values: list[Any] = []

    def id_of(self, value: Any) -> int:
        key = (type(value), value) if self.typed else value
        found = self.ids.get(key)
        if found is not None:
            return found
        if len(self.values) >= _NOT_IN_TABLE:
            return _NOT_IN_TABLE
        self.ids[key] = len(self.values)
        self.values.append(value)
        return len(self.values) - 1


class _Packer:
    def __init__(self) -> None:
        self.key_sets, self.predictions, self.versions = _Table(), _Table(typed=True), _Table()

    def pack(self, features: dict[str, Any], prediction: Any, score: float, model_version: str,
             served_at: float) -> bytes:  # fmt: skip
        try:
            key_set = self.key_sets.id_of(tuple(features))
        except TypeError:  # pragma: no cover - feature names are JSON object keys, always hashable
            key_set = _NOT_IN_TABLE
        prediction_id = self.predictions.id_of(prediction) if _hashable(prediction) else _NOT_IN_TABLE
        version = self.versions.id_of(model_version)
        if prediction_id == _NOT_IN_TABLE or version == _NOT_IN_TABLE or key_set == _NOT_IN_TABLE:
            tail = _dumps([features, prediction, model_version])
            return _pack_header(score, served_at, _NOT_IN_TABLE, 0, 0, _WHOLE) + tail
        return _pack_header(score, served_at, key_set, prediction_id, version, 0) + _dumps(list(features.values()))

    def unpack(self, packed: bytes) -> Served:
        score, served_at, key_set, prediction, version, flags = _HEADER.unpack_from(packed)
        tail = orjson.loads(memoryview(packed)[_HEADER.size :])
        if flags & _WHOLE:
            features, predicted, model_version = tail
            return Served(features, predicted, score, model_version, served_at)
        names = self.key_sets.values[key_set]
        return Served(dict(zip(names, tail, strict=True)), self.predictions.values[prediction], score,
                      self.versions.values[version], served_at)  # fmt: skip


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _served_at(packed: bytes) -> float:
    return float(_HEADER.unpack_from(packed)[1])


class LabelJoin:
    def __init__(self, max_size: int, max_age: float, hold_max: int = HOLD_MAX, hold_age: float = HOLD_AGE) -> None:
        if max_size < 1 or max_age <= 0:
            raise ValueError("max_size must be >= 1 and max_age > 0")
        self.max_size = max_size
        self.max_age = max_age
        self.hold_max = hold_max
        self.hold_age = hold_age
        self._packer = _Packer()
        # Served requests, packed, and their order (oldest first). A request joined or served again
        # leaves a dead entry in the order, recognised because the store no longer holds that very
        # object; dead entries are dropped when they reach the front, or all at once when they
        # outnumber the live ones.
        self._pending: dict[str, bytes] = {}
        self._order_ids: deque[str] = deque()
        self._order_packed: deque[bytes] = deque()
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

    def served(self, request_id: str, features: dict[str, Any], prediction: Any, score: float, model_version: str,
               served_at: float) -> Any:  # fmt: skip
        """Remember a served request (what ``label`` gives back as a ``Served``); returns its early
        label if one was held, else ``NO_LABEL``."""
        if self._held:
            early = self._held.pop(request_id, None)
            if early is not None:
                if self._undo is not None:
                    self._undo.append((False, request_id, early))
                self.joined += 1
                return early[0]
        pending = self._pending
        pending.pop(request_id, None)  # served again: it is now the newest
        packed = self._packer.pack(features, prediction, score, model_version, served_at)
        pending[request_id] = packed
        self._order_ids.append(request_id)
        self._order_packed.append(packed)
        if len(pending) > self.max_size:
            self._drop_oldest()
            self.evicted += 1
        if len(self._order_ids) > 2 * len(pending) + 1024:
            self._compact()
        return NO_LABEL

    def label(self, request_id: str, value: Any, now: float) -> Served | None:
        """The served request this label completes, or None (the label is then held a while)."""
        packed = self._pending.pop(request_id, None)
        if packed is not None:
            if self._undo is not None:
                self._undo.append((True, request_id, packed))
            self.joined += 1
            return self._packer.unpack(packed)
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
        oldest = now - self.max_age
        while self._pending:
            packed = self._oldest()
            if _served_at(packed) > oldest:
                break
            self._drop_oldest()
            self.expired += 1
        held, oldest = self._held, now - self.hold_age
        while held:
            _, since = next(iter(held.values()))
            if since > oldest:
                break
            held.popitem(last=False)
            self.unknown += 1

    # --- the order of served requests ----------------------------------------------------------------
    def _oldest(self) -> bytes:
        """The oldest live entry (the store is not empty), once the dead ones before it are dropped."""
        ids, packs, pending = self._order_ids, self._order_packed, self._pending
        while pending.get(ids[0]) is not packs[0]:
            ids.popleft()
            packs.popleft()
        return packs[0]

    def _drop_oldest(self) -> None:
        self._oldest()
        del self._pending[self._order_ids.popleft()]
        self._order_packed.popleft()

    def _compact(self) -> None:
        pending = self._pending
        live = [(i, p) for i, p in zip(self._order_ids, self._order_packed, strict=True) if pending.get(i) is p]
        seen: set[str] = set()
        ids: deque[str] = deque()
        packs: deque[bytes] = deque()
        for request_id, packed in live:  # a rolled-back entry can appear twice: keep its first place
            if request_id not in seen:
                seen.add(request_id)
                ids.append(request_id)
                packs.append(packed)
        self._order_ids, self._order_packed = ids, packs

    # --- one batch at a time: its joins are undone if its output never reaches the broker ----------
    def begin(self) -> None:
        self._undo = []

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        """Put back what this batch's joins took, so that a retried batch joins them again."""
        for was_pending, request_id, item in reversed(self._undo or []):
            if was_pending:
                self._pending[request_id] = item
                self._order_ids.appendleft(request_id)  # it was older than anything added since
                self._order_packed.appendleft(item)
            else:
                self._held[request_id] = item
                self._held.move_to_end(request_id, last=False)
            self.joined -= 1
        self._undo = None
