"""Collecting a micro-batch: bounded by count and by time since its first record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from kafka import TopicPartition

from streamfit.predictor.batching import collect

TP0, TP1 = TopicPartition("requests", 0), TopicPartition("requests", 1)


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int


class FakeConsumer:
    """Hands out scripted polls and advances a fake clock by each poll's wait when it has nothing."""

    def __init__(self, polls: list[dict[TopicPartition, list[Record]]]) -> None:
        self.polls = polls
        self.now = 100.0
        self.calls: list[tuple[int, int]] = []

    def clock(self) -> float:
        return self.now

    def poll(self, timeout_ms: int, max_records: int) -> Mapping[TopicPartition, Sequence[Any]]:
        self.calls.append((timeout_ms, max_records))
        if not self.polls:
            self.now += timeout_ms / 1000
            return {}
        self.now += 0.001
        polled = self.polls.pop(0)
        return {tp: records[:max_records] for tp, records in polled.items()}


def records(tp: TopicPartition, start: int, n: int) -> list[Record]:
    return [Record(tp.topic, tp.partition, o) for o in range(start, start + n)]


def test_an_idle_poll_gives_an_empty_batch_without_waiting_for_more() -> None:
    consumer = FakeConsumer([])
    batch = collect(consumer.poll, 100, wait_ms=100, fill_ms=20, clock=consumer.clock)
    assert len(batch) == 0 and consumer.calls == [(100, 100)]


def test_the_batch_stops_at_max_records() -> None:
    consumer = FakeConsumer([{TP0: records(TP0, 0, 60)}, {TP1: records(TP1, 10, 60)}, {TP0: records(TP0, 60, 5)}])
    batch = collect(consumer.poll, 100, wait_ms=100, fill_ms=1000, clock=consumer.clock)
    assert len(batch) == 100
    assert consumer.calls[1][1] == 40  # asked only for what fits
    assert batch.first == {TP0: 0, TP1: 10} and batch.next == {TP0: 60, TP1: 50}


def test_the_batch_stops_when_fill_time_is_up() -> None:
    consumer = FakeConsumer([{TP0: records(TP0, 0, 3)}, {TP0: records(TP0, 3, 2)}])
    batch = collect(consumer.poll, 100, wait_ms=100, fill_ms=20, clock=consumer.clock)
    assert len(batch) == 5
    assert consumer.now - batch.started <= 0.021 + 0.001  # at most the fill time (and one quick poll)
    assert batch.next == {TP0: 5} and batch.started == 100.001


def test_zero_fill_time_takes_only_what_is_buffered() -> None:
    consumer = FakeConsumer([{TP0: records(TP0, 0, 3)}, {TP1: records(TP1, 0, 2)}])
    batch = collect(consumer.poll, 100, wait_ms=100, fill_ms=0, clock=consumer.clock)
    assert len(batch) == 5 and [ms for ms, _ in consumer.calls] == [100, 0]
