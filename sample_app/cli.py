"""``streamfit sample-app``: stream a data set as requests, read predictions, send labels later.

Exit status: 0 when every request was answered, 1 when some were not (within ``--timeout``),
130 after Ctrl+C (the summary so far is still printed), 2 for a bad setting.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rich.console import Console

from streamfit.common.logs import log_settings
from streamfit.common.settings import Group, Settings
from streamfit.sample_app.progress import render_summary
from streamfit.sample_app.stream import SampleAppOptions, run_sample_app

GROUPS: tuple[Group, ...] = ("kafka", "model", "general")

log = logging.getLogger("sample_app")
DEFAULTS = SampleAppOptions()


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    stream = parser.add_argument_group("stream")
    stream.add_argument(
        "--file",
        type=Path,
        default=None,
        metavar="PATH",
        help="CSV or Parquet file to stream (unset: --test-data, else --data; with no "
        "data settings, the shipped Adult test split); --target names its target",
    )
    stream.add_argument(
        "--rate", type=float, default=DEFAULTS.rate, help="requests per second (0: as fast as possible)"
    )
    stream.add_argument(
        "--count", type=int, default=DEFAULTS.count, help="requests to send (0: forever, cycling through the file)"
    )
    stream.add_argument(
        "--label-delay",
        type=float,
        default=DEFAULTS.label_delay,
        metavar="SECONDS",
        help="send a request's true label this long after its prediction arrives",
    )
    stream.add_argument(
        "--label-fraction",
        type=float,
        default=DEFAULTS.label_fraction,
        metavar="SHARE",
        help="share of requests that ever get a label (drawn per request from --seed)",
    )
    stream.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of the label draw and of a partial drift")
    stream.add_argument(
        "--timeout",
        type=float,
        default=DEFAULTS.timeout,
        metavar="SECONDS",
        help="how long to wait for outstanding predictions after the last request",
    )
    stream.add_argument(
        "--max-in-flight",
        type=int,
        default=DEFAULTS.max_in_flight,
        help="unanswered requests allowed before sending pauses",
    )
    drift = parser.add_argument_group(
        "drift",
        "From request K on, one segment drifts: a numeric feature changes scale (on Adult: married "
        "people's hours_per_week arrive per month) and the segment's label relation flips. The "
        "segment stays identifiable, so a retrained model can learn it; the frozen one cannot.",
    )
    drift.add_argument(
        "--drift-at", type=int, default=None, metavar="K", help="first request index that drifts (unset: no drift)"
    )
    drift.add_argument(
        "--drift-share",
        type=float,
        default=DEFAULTS.drift_share,
        metavar="SHARE",
        help="share of the segment's rows whose label changes",
    )
    drift.add_argument(
        "--drift-segment",
        default=None,
        metavar="COLUMN=VALUE",
        help="the drifting segment (unset: Adult's married people, else chosen from the data)",
    )
    drift.add_argument(
        "--drift-feature",
        default=None,
        metavar="COLUMN",
        help="the numeric feature that shifts (unset: chosen from the data)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--window",
        type=int,
        default=DEFAULTS.window,
        metavar="N",
        help="answers behind the rolling accuracy (or error) and each side of a model swap",
    )
    out.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE.png",
        help="save rolling accuracy/error and latency over time, with model swaps and the drift marked",
    )
    out.add_argument(
        "--progress",
        choices=("auto", "rich", "log", "off"),
        default=DEFAULTS.progress,
        help="live view: a panel on a terminal (auto), log lines, or nothing",
    )


def options_from_args(args: argparse.Namespace) -> SampleAppOptions:
    return SampleAppOptions(
        file=args.file,
        rate=args.rate,
        count=args.count,
        label_delay=args.label_delay,
        label_fraction=args.label_fraction,
        drift_at=args.drift_at,
        drift_share=args.drift_share,
        drift_segment=args.drift_segment,
        drift_feature=args.drift_feature,
        seed=args.seed,
        timeout=args.timeout,
        window=args.window,
        max_in_flight=args.max_in_flight,
        plot=args.plot,
        progress=args.progress,
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    options = options_from_args(args)
    log_settings(log, settings, "sample app")
    summary = run_sample_app(settings, options)
    Console().print(render_summary(summary))
    if summary.interrupted:
        return 130
    if summary.unanswered:
        log.error(
            "%d request(s) were never answered within --timeout %.0f s: is a predictor running on %s?",
            summary.unanswered,
            options.timeout,
            settings.topic("requests"),
        )
        return 1
    return 0
