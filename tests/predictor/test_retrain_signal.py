"""The retrain counter: one signal per ``retrain_every`` observations, shorter steps after a drift."""

from __future__ import annotations

import pytest

from streamfit.predictor.retrain_signal import RetrainCounter


def test_one_retrain_signal_per_n_observations() -> None:
    counter = RetrainCounter(every=10)
    assert [counter.add(n) for n in (4, 5, 1, 9, 1, 25)] == [[], [], [10], [], [10], [10, 10]]
    assert counter.total == 45 and counter.since_signal == 5
    state = counter.snapshot()
    assert counter.add(5) == [10]
    counter.restore(state)
    assert counter.since_signal == 5 and counter.total == 45


def test_retrain_every_zero_never_signals() -> None:
    counter = RetrainCounter(every=0)
    counter.drifted()
    assert counter.add(10_000) == [] and counter.total == 10_000
    with pytest.raises(ValueError):
        RetrainCounter(every=-1)


def test_after_a_drift_the_signals_come_at_an_eighth_a_quarter_a_half_then_every() -> None:
    counter = RetrainCounter(every=2000)
    assert counter.add(1500) == []
    counter.drifted()  # the alarm asked for its own retrain: the count starts again
    assert counter.since_signal == 0 and counter.step == 250
    assert counter.add(249) == []
    assert counter.add(1) == [250]
    assert counter.add(500) == [500]
    assert counter.add(999) == []
    assert counter.add(1) == [1000]
    assert counter.step == 2000
    assert counter.add(4000) == [2000, 2000]


def test_a_batch_that_never_reached_the_broker_does_not_use_up_the_ramp() -> None:
    counter = RetrainCounter(every=800)
    counter.drifted()
    state = counter.snapshot()
    assert counter.add(100) == [100]
    counter.restore(state)
    assert counter.step == 100 and counter.since_signal == 0
    assert counter.add(300) == [100, 200]
