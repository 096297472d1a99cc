"""Placeholder until its issue lands: the command exists and has --help."""

from __future__ import annotations

import argparse
import sys

from common.settings import Group, Settings

GROUPS: tuple[Group, ...] = ("kafka", "model", "general")


def run(settings: Settings, args: argparse.Namespace) -> int:
    print(f"streamfit {args.command}: not yet available", file=sys.stderr)
    return 2
