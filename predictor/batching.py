"""A micro-batch: records polled until ``batch_size`` of them arrived or ``batch_timeout_ms`` passed
since the first one, with the offsets to commit (or to rewind to) per partition.

The clock starts at the first record, not at the poll: an idle predictor waits as long as it
likes, but a request never waits more than ``batch_timeout_ms`` for others to fill its batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import OffsetAndMetadata, TopicPartition

# poll(timeout_ms, max_records), as KafkaConsumer.poll
Poll = Callable[[int, int], Mapping[TopicPartition, Sequence[Any]]]


@dataclass(slots=True)
class PolledBatch:
    records: list[Any] = field(default_factory=list)
    first: dict[TopicPartition, int] = field(default_factory=dict)  # where to rewind to
    next: dict[TopicPartition, int] = field(default_factory=dict)  # what to commit
    started: float = 0.0  # monotonic time the first record arrived

    def __len__(self) -> int:
        return len(self.records)

    def offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """What to commit once the batch is answered: the next offset of every partition it read."""
        return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self.next.items()}

    def add(self, polled: Mapping[TopicPartition, Sequence[Any]]) -> None:
        for tp, records in polled.items():
            if not records:
                continue
            self.records.extend(records)
            self.first.setdefault(tp, records[0].offset)
            self.next[tp] = records[-1].offset + 1


def collect(
    poll: Poll,
    max_records: int,
    wait_ms: int,
    fill_ms: int,
    clock: Callable[[], float] = time.monotonic,
) -> PolledBatch:
    """Wait up to ``wait_ms`` for a first record, then fill the batch for up to ``fill_ms`` more."""
    batch = PolledBatch()
    polled = poll(wait_ms, max_records)
    if not polled:
        return batch
    batch.started = clock()
    batch.add(polled)
    deadline = batch.started + fill_ms / 1000
    while len(batch.records) < max_records:
        left_ms = int((deadline - clock()) * 1000)
        if left_ms <= 0:
            # The buffer may already hold more: take it without waiting.
            polled = poll(0, max_records - len(batch.records))
            batch.add(polled)
            break
        polled = poll(left_ms, max_records - len(batch.records))
        batch.add(polled)
    return batch
