"""How a service takes signals (``common.lifecycle``): the same for the predictor and the trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from streamfit.common.lifecycle import GracefulStop, stop_on_signals, stop_process


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


def test_stop_process_terminates_and_kills_one_that_ignores_sigterm_after_the_grace() -> None:
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    deaf = subprocess.Popen([sys.executable, "-c", ignore], stdout=subprocess.PIPE)
    assert deaf.stdout is not None and deaf.stdout.readline()  # its handler is in place
    started = time.monotonic()
    stop_process(polite, grace=10)
    assert polite.returncode == -signal.SIGTERM and time.monotonic() - started < 5
    started = time.monotonic()
    stop_process(deaf, grace=0.5, name="deaf")
    assert deaf.returncode == -signal.SIGKILL and time.monotonic() - started >= 0.5
    stop_process(deaf, grace=0.5)  # already gone: nothing to do
    stop_process(None, grace=0.5)
