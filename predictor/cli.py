"""``streamfit predictor``: the long-running prediction service.

SIGTERM or Ctrl+C: the batch in hand is finished, delivered and committed, then the process exits
0 within seconds. A second Ctrl+C (or SIGTERM) exits at once; the next start repeats what was not
committed (at-least-once).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

from common.settings import Group, Settings

GROUPS: tuple[Group, ...] = ("kafka", "model", "predictor", "general")

log = logging.getLogger("predictor")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--group-id",
        help="consumer group of the replicas that share the requests (default: <topic prefix><model name>.predictor)",
    )
    parser.add_argument(
        "--replica-id",
        help="stable name of this replica; with exactly-once it names the transactional id, so give each "
        "replica its own (default: the host name)",
    )


class GracefulStop:
    """A signal handler: the first signal asks the service to stop, the second exits at once."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.stop = stop
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.requested = True
        log.info("%s: finishing the batch in hand (again to exit at once)", signal.Signals(signum).name)
        self.stop()


def run(settings: Settings, args: argparse.Namespace) -> int:
    from common.logs import log_settings
    from predictor.service import Predictor

    log_settings(log, settings, "predictor")
    predictor = Predictor(settings, group_id=args.group_id, replica_id=args.replica_id)
    handler = GracefulStop(predictor.stop)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        predictor.run()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return 0
