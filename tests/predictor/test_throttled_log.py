"""The throttled log: one line per interval, the rest counted."""

from __future__ import annotations

import logging

import pytest

from streamfit.predictor.throttled_log import ThrottledLog


def test_throttled_log_lets_one_line_through_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("t"), logging.WARNING, interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        assert throttled("bad %d", 1)
        for i in range(500):
            now[0] += 0.01
            throttled("bad %d", i)
        now[0] = 10.5
        assert throttled("bad %d", 2)
        throttled("bad %d", 3)
        throttled.flush()
        throttled.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "bad 1",
        "bad 2 (+500 similar not logged in the last 10s)",
        "1 more like the last one were not logged",
    ]
