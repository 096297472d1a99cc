"""Logging set-up shared by every command: levels, one line per event, secrets never printed."""

from __future__ import annotations

import logging
import os
import sys

from streamfit.common.settings import Settings

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str = "INFO", stream: object = None) -> None:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in service logs
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "urllib3", "alembic", "mlflow", "git", "matplotlib", "hyperopt", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # kafka-python logs every reconnect attempt at WARNING/ERROR while a broker is away; streamfit
    # reports an unreachable broker itself, with the setting to change.
    if level != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.ERROR)
        for quiet in ("kafka.conn", "kafka.net", "kafka.client_async", "kafka.coordinator"):
            logging.getLogger(quiet).setLevel(logging.CRITICAL)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)


def log_settings(logger: logging.Logger, settings: Settings, service: str) -> None:
    logger.info("%s starting with settings %s", service, settings.masked())
