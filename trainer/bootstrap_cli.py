"""``streamfit bootstrap``."""

from __future__ import annotations

import argparse

from streamfit.common.settings import Group, Settings

GROUPS: tuple[Group, ...] = ("model", "trainer", "kafka", "general")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--no-publish", action="store_true", help="register the model but publish no reload message")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from streamfit.trainer.bootstrap import bootstrap

    message = bootstrap(settings, publish=not args.no_publish)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in message.metrics.items() if k != "rows")
    print(f"model {message.model_name} version {message.version} is the champion ({metrics})")
    print(f"bundle {message.uri} sha256 {message.sha256}")
    return 0
