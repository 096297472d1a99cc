"""Coalescing retrain records into one batch, and recognising a batch already answered."""

from __future__ import annotations

from dataclasses import dataclass

from streamfit.common.messages import Retrain
from streamfit.trainer.coalesce import RetrainBatch, coalesce, offsets_cover


@dataclass
class Record:
    offset: int
    value: bytes | None
    key: bytes | None = b"model"
    topic: str = "p.retrain"
    partition: int = 0


def retrain(reason: str) -> bytes:
    return Retrain(reason=reason, observations=10, requested_at=1.0).encode()  # type: ignore[arg-type]


def test_ten_requests_become_one_batch_named_after_the_most_urgent() -> None:
    batch = coalesce([Record(i, retrain("drift" if i == 7 else "count")) for i in range(10)], "model")
    assert len(batch.requests) == 10
    assert batch.reason == "drift"
    assert batch.reasons == {"count": 9, "drift": 1}
    assert dict(batch.first_offsets) == {0: 0} and dict(batch.next_offsets) == {0: 10}
    assert batch.records == 10 and batch.topic == "p.retrain"


def test_a_batch_knows_whether_a_predictor_saw_its_error_rise() -> None:
    def drift(causes: list[str] | None) -> Retrain:
        details = None if causes is None else {"causes": causes}
        return Retrain(reason="drift", observations=10, requested_at=1.0, details=details)

    assert RetrainBatch((drift(["psi", "metric"]),)).error_rose
    assert RetrainBatch((drift(["step"]),)).error_rose
    assert not RetrainBatch((drift(["psi"]),)).error_rose  # only the inputs moved
    assert not RetrainBatch((drift(None),)).error_rose
    count = Retrain(reason="count", observations=10, requested_at=1.0, details={"causes": ["metric"]})
    assert not RetrainBatch((count,)).error_rose


def test_bad_records_are_set_aside_and_still_committed() -> None:
    batch = coalesce([Record(3, b"{not json"), Record(4, retrain("count")), Record(5, None)], "model")
    assert [b.offset for b in batch.bad] == [3, 5]
    assert "invalid JSON" in batch.bad[0].error and "null" in batch.bad[1].error
    assert len(batch.requests) == 1 and dict(batch.next_offsets) == {0: 6}


def test_requests_for_another_model_are_skipped() -> None:
    batch = coalesce([Record(0, retrain("count"), key=b"other"), Record(1, retrain("manual"))], "model")
    assert batch.other_models == 1 and [r.reason for r in batch.requests] == ["manual"]
    only_other = coalesce([Record(0, retrain("count"), key=b"other")], "model")
    assert not only_other.requests and not only_other.needs_cycle


def test_an_empty_batch_is_a_manual_cycle() -> None:
    batch = RetrainBatch()
    assert batch.reason == "manual" and batch.needs_cycle and batch.records == 0


def test_offsets_cover_only_a_redelivery_of_what_was_answered() -> None:
    batch = coalesce([Record(i, retrain("count")) for i in range(5, 9)], "model")  # offsets 5..8
    assert offsets_cover({0: 5}, {0: 9}, batch)  # the same requests, redelivered
    assert offsets_cover({0: 3}, {0: 12}, batch)
    assert not offsets_cover({0: 5}, {0: 8}, batch)  # a request arrived after that cycle
    assert not offsets_cover({0: 6}, {0: 9}, batch)  # that cycle did not see offset 5
    assert not offsets_cover({1: 0}, {1: 9}, batch)
    assert not offsets_cover({0: 0}, {0: 99}, RetrainBatch())  # a manual cycle is never "already done"
