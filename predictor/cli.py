"""``streamfit predictor``: the long-running prediction service.

SIGTERM or Ctrl+C: the batch in hand is finished, delivered and committed, then the process exits
0 within seconds. A second Ctrl+C (or SIGTERM) exits at once; the next start repeats what was not
committed (at-least-once).
"""

from __future__ import annotations

import argparse
import logging

from streamfit.common.settings import Group, Settings

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


def run(settings: Settings, args: argparse.Namespace) -> int:
    from streamfit.common.lifecycle import stop_on_signals
    from streamfit.common.logs import log_settings
    from streamfit.predictor.service import Predictor

    log_settings(log, settings, "predictor")
    predictor = Predictor(settings, group_id=args.group_id, replica_id=args.replica_id)
    with stop_on_signals(predictor.stop, "finishing the batch in hand"):
        predictor.run()
    return 0
