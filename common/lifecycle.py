"""How a service stops, the same for the predictor and the trainer.

The first SIGTERM or Ctrl+C only sets the service's stop flag (``stop()``): the predictor finishes,
delivers and commits the batch in hand, the trainer ends its cycle unpublished within a boosting
round, and both return from ``run()``; the process then exits 0. A second signal ends the process
at once (Ctrl+C as ``KeyboardInterrupt``, SIGTERM by its default action); the next start repeats
whatever was not committed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """A signal handler: the first signal calls ``stop`` (which only sets a flag), the second exits."""

    def __init__(self, stop: Callable[[], None], doing: str) -> None:
        self.stop = stop
        self.doing = doing  # what the service does before it stops, for the log line
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.requested = True
        log.info("%s: %s (again to exit at once)", signal.Signals(signum).name, self.doing)
        self.stop()


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None], doing: str) -> Iterator[GracefulStop]:
    """SIGTERM and SIGINT handled by a ``GracefulStop`` while the block runs; the handlers that were
    there before are put back after it."""
    handler = GracefulStop(stop, doing)
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield handler
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_process(process: subprocess.Popen[bytes] | None, grace: float, name: str = "") -> None:
    """Stop a child process the way a service expects to be stopped: SIGTERM, up to ``grace``
    seconds to finish what it has in hand, then SIGKILL. Nothing to do if it has already exited."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        if name:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", name, grace)
        process.kill()
        process.wait()
