"""``streamfit trainer``: the long-running worker, or one cycle with ``--once``.

``--once`` joins the trainer's consumer group, takes every retrain request pending on the topic,
runs one cycle for them and commits; with nothing pending it still runs one cycle (reason
``manual``), which is what a cron job wants, unless ``--if-requested`` is given. The exit status
is 0 when the cycle ended (promoted, rejected, or too few rows), 2 on an error (offsets stay
uncommitted, so the next run retries), 130 when stopped by a signal.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import TYPE_CHECKING

from streamfit.common.logs import log_settings
from streamfit.common.settings import Group, Settings

if TYPE_CHECKING:
    pass

GROUPS: tuple[Group, ...] = ("trainer", "model", "kafka", "general")

log = logging.getLogger("trainer")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--once", action="store_true",
        help="run one cycle for the pending retrain requests (a manual one if none), commit them and exit",
    )  # fmt: skip
    parser.add_argument(
        "--if-requested", action="store_true",
        help="with --once: exit without a cycle when no retrain request is pending",
    )  # fmt: skip
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show a progress bar during the search (default: when stderr is a terminal)",
    )  # fmt: skip


def run(settings: Settings, args: argparse.Namespace) -> int:
    from streamfit.common.lifecycle import stop_on_signals
    from streamfit.trainer.cycle import CycleAborted
    from streamfit.trainer.metrics import serve
    from streamfit.trainer.service import Trainer

    log_settings(log, settings, "trainer")
    with contextlib.ExitStack() as stack:
        trainer = stack.enter_context(Trainer(settings, progress=args.progress))
        health = serve(settings, ready=trainer.readiness)
        if health is not None:
            stack.callback(health.close)
        stack.enter_context(stop_on_signals(trainer.stop, "ending the cycle unpublished within a boosting round"))
        if args.once:
            try:
                result = trainer.run_once(only_if_requested=args.if_requested)
            except CycleAborted:
                print("stopped during the cycle: nothing published, retrain offsets left uncommitted", file=sys.stderr)
                return 130
            print(result.summary() if result is not None else "no new cycle: nothing was pending, or it was answered")
            return 0
        trainer.run()
        log.info("trainer stopped after %d cycle(s)", trainer.cycles)
    return 0
