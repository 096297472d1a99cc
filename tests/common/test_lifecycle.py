"""How a service takes signals (``common.lifecycle``): the same for the predictor and the trainer."""

from __future__ import annotations

import os
import signal

import pytest

from common.lifecycle import GracefulStop, stop_on_signals


def test_first_signal_stops_gracefully_second_interrupts() -> None:
    stops: list[bool] = []
    handler = GracefulStop(lambda: stops.append(True), "finishing")
    previous = signal.getsignal(signal.SIGINT)
    try:
        handler(signal.SIGINT, None)
        assert stops == [True]
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
        assert stops == [True]  # the second signal does not ask again: it exits
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_real_sigterm_in_the_block_only_asks_to_stop_and_the_old_handlers_come_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stops: list[bool] = []
    with stop_on_signals(lambda: stops.append(True), "finishing") as handler:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops == [True] and handler.requested
    assert {sig: signal.getsignal(sig) for sig in before} == before
