"""``python -m benchmarks.recovery``: replay labelled streams with drift through the real loop and
report, per window, the served metric against the frozen first model and River.

One stream (``--stream agrawal --seed 1``), or a suite (``--suite``: every ``--streams`` × ``--seeds``,
one after another on one broker, written together as ``docs/recovery.md``). ``--quick`` is a
two-minute development run. See docs/recovery.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks.recovery.evaluate import StreamResult, evaluate, river_predictions
from benchmarks.recovery.replay import ROOT, RunOptions, broker, replay
from benchmarks.recovery.report import RunInfo, write
from benchmarks.recovery.streams import STREAMS, StreamSpec, make_stream
from streamfit.common.errors import ConfigError

log = logging.getLogger("benchmarks.recovery")

QUICK = {"rows": 12_000, "drift_at": 6_000, "base_rows": 2_000, "rate": 200.0}
SUITE = ("agrawal", "sea", "none")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.recovery", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    s = p.add_argument_group("stream")
    s.add_argument("--stream", choices=STREAMS, default="agrawal", help="generator (default agrawal)")
    s.add_argument("--seed", type=int, default=1, help="seed of the stream and of River (default 1)")
    s.add_argument("--rows", type=int, default=None, help="rows in all, base rows included (default 40000)")
    s.add_argument("--drift-at", type=int, default=None, help="row where the drift starts (default 20000)")
    s.add_argument("--width", type=int, default=1, help="1: abrupt drift; N: gradual over about N rows")
    s.add_argument(
        "--friedman-type",
        choices=("gra", "lea"),
        default="gra",
        help="friedman: one global abrupt drift (gra), or three local expanding ones (lea)",
    )
    s.add_argument(
        "--functions",
        type=functions,
        default=None,
        metavar="A-B",
        help="the generator's function (SEA: variant) before and after the drift, e.g. 1-4 "
        "(default: agrawal 0-2, sea 0-3, sine 0-2, stagger 0-2, mixed 0-1, led 0-7); in --streams, agrawal:1-4",
    )
    s.add_argument("--csv", type=Path, help="stream csv: a CSV/Parquet file replayed in file order")
    s.add_argument("--target", default=None, help="stream csv: the target column")
    s.add_argument("--demo-drift", action="store_true", help="stream csv: inject the sample app's drift at --drift-at")
    r = p.add_argument_group("run")
    r.add_argument("--base-rows", type=int, default=None, help="first rows for streamfit bootstrap (default 5000)")
    r.add_argument("--rate", type=float, default=None, help="requests per second (default 100)")
    r.add_argument(
        "--label-delay",
        type=float,
        default=0.0,
        help="seconds between a prediction's arrival and its label being sent (default 0)",
    )
    r.add_argument("--retrain-every", type=int, default=2000, help="STREAMFIT_RETRAIN_EVERY (default 2000)")
    r.add_argument("--trials", type=int, default=8, help="STREAMFIT_TRIALS (default 8)")
    r.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other setting, e.g. --set HALF_LIFE=1000 (or STREAMFIT_HALF_LIFE=1000); repeatable",
    )
    r.add_argument("--window", type=int, default=2500, help="answers per window of the report (default 2500)")
    r.add_argument("--answer-timeout", type=float, default=120.0, help="seconds without an answer before giving up")
    r.add_argument(
        "--broker",
        choices=("kafka", "tansu"),
        default="kafka",
        help="Apache Kafka from the Maven jars (default), or the embedded Tansu",
    )
    r.add_argument("--bootstrap-servers", help="use this running broker instead of starting one")
    o = p.add_argument_group("what to run and where to write")
    o.add_argument(
        "--quick",
        action="store_true",
        help="a development run: 12,000 rows, drift at 6,000, base 2,000, 200 requests/s (about 2 minutes)",
    )
    o.add_argument("--suite", action="store_true", help="run every --streams x --seeds and write one report")
    o.add_argument(
        "--streams",
        default=",".join(SUITE),
        help=f"the suite's streams, NAME or NAME:A-B for other functions (default {','.join(SUITE)})",
    )
    o.add_argument("--seeds", default="1", help="the suite's seeds, comma-separated (default 1)")
    o.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder of the report, plots and JSON (default docs with --suite, else .streamfit/recovery)",
    )
    o.add_argument(
        "--logs",
        type=Path,
        default=ROOT / ".streamfit" / "recovery-logs",
        help="folder of the services' logs, one subfolder per stream",
    )
    o.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO")
    return p.parse_args(argv)


def functions(text: str) -> tuple[int, int]:
    """``"1-4"``: function 1 before the drift, 4 after."""
    before, sep, after = text.partition("-")
    if not (sep and before.strip().isdigit() and after.strip().isdigit()):
        raise argparse.ArgumentTypeError(f"functions {text!r} must be BEFORE-AFTER, e.g. 1-4")
    return int(before), int(after)


def settings_extra(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r} must be KEY=VALUE, e.g. --set HALF_LIFE=1000")
        out[key.strip().upper().removeprefix("STREAMFIT_").lower()] = value
    return out


def specs(args: argparse.Namespace) -> list[StreamSpec]:
    defaults: dict[str, int] = {"rows": 40_000, "drift_at": 20_000}
    if args.quick:
        defaults = {"rows": int(QUICK["rows"]), "drift_at": int(QUICK["drift_at"])}
    rows = args.rows if args.rows is not None else defaults["rows"]
    drift_at = args.drift_at if args.drift_at is not None else defaults["drift_at"]
    one = StreamSpec(
        name=args.stream,
        seed=args.seed,
        rows=rows,
        drift_at=drift_at,
        width=args.width,
        friedman_type=args.friedman_type,
        csv=args.csv,
        target=args.target or "y",
        demo_drift=args.demo_drift,
        functions=args.functions,
    )
    if not args.suite:
        return [one]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = []
    for item in (n.strip() for n in args.streams.split(",") if n.strip()):
        name, sep, pair = item.partition(":")
        try:
            chosen = functions(pair) if sep else None
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"--streams {item!r}: {exc}") from None
        out += [replace(one, name=name, seed=seed, functions=chosen) for seed in seeds]
    return out


def options(args: argparse.Namespace) -> RunOptions:
    base = args.base_rows if args.base_rows is not None else (QUICK["base_rows"] if args.quick else 5000)
    rate = args.rate if args.rate is not None else (QUICK["rate"] if args.quick else 100.0)
    return RunOptions(
        base_rows=int(base),
        rate=float(rate),
        label_delay=args.label_delay,
        retrain_every=args.retrain_every,
        trials=args.trials,
        extra=settings_extra(args.extra),
        answer_timeout=args.answer_timeout,
    )


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.system()} {platform.machine()}, {cores} cores usable ({model or 'unknown CPU'})"


def commit() -> str:
    """HEAD, and whether the services' code differs from it in the working tree (others share it)."""

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "common", "predictor", "trainer", "streamfit")
    return f"{head} (with uncommitted changes in the services)" if dirty else head


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from streamfit.kafka_server import kafka_version

    out = {"python": platform.python_version()}
    for name in ("streamfit", "lightgbm", "river", "kafka-python", "mlflow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    out["Apache Kafka"] = kafka_version()
    return out


def run_one(
    spec: StreamSpec, n: int, total: int, run_options: RunOptions, address: str, args: argparse.Namespace
) -> StreamResult:
    stream = make_stream(spec)
    log.info("stream %d of %d: %s: %s (%d rows)", n, total, spec.label, stream.description, len(stream.frame))
    live = replay(stream, run_options, address, args.logs / spec.label)
    river = river_predictions(stream, run_options)
    result = evaluate(stream, run_options, live, river, args.window)
    for d in result.drifts:
        recovered = d.recovered_after if d.recovered_after is not None else "not recovered"
        log.info("%s: drift at request %d: served %.1f, frozen %.1f, River %.1f after it; requests to recovery: %s",
                 spec.label, d.at, d.served_mean, d.frozen_mean, d.river_mean, recovered)  # fmt: skip
    log.info("%s: whole replay: served %.1f, frozen %.1f, River %.1f; worst 5,000-request window vs frozen %+.1f",
             spec.label, result.means["served"], result.means["frozen"], result.means["river"],
             result.worst_vs_frozen)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)  # its event-loop timing warnings say nothing about the loop
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        todo, run_options = specs(args), options(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    out = args.out or (ROOT / "docs" if args.suite else ROOT / ".streamfit" / "recovery")
    command = "python -m benchmarks.recovery " + shlex.join(sys.argv[1:] if argv is None else argv)
    results: list[StreamResult] = []
    failures: list[tuple[str, str]] = []
    broker_name = args.bootstrap_servers or ("Tansu (embedded)" if args.broker == "tansu" else "Apache Kafka (jars)")
    try:
        with broker(args.broker, args.bootstrap_servers) as address:
            for n, spec in enumerate(todo, 1):
                try:
                    results.append(run_one(spec, n, len(todo), run_options, address, args))
                except (KeyboardInterrupt, ConfigError):
                    raise
                except Exception as exc:  # one failed stream must not lose the others
                    log.exception("stream %s failed", spec.label)
                    failures.append((spec.label, f"{type(exc).__name__}: {str(exc)[:500]}"))
    except KeyboardInterrupt:
        log.error("interrupted: the services were stopped; %d stream(s) done", len(results))
        if not results:
            return 130
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if not results:
        log.error("no stream finished: %s", failures)
        return 1
    info = RunInfo(
        command=command,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        commit=commit(),
        broker=broker_name,
        settings={
            "base_rows": run_options.base_rows,
            "rate": run_options.rate,
            "label_delay": run_options.label_delay,
            "window": args.window,
            **run_options.settings_env(),
        },
        versions=versions(),
    )
    doc = write(results, info, out, failures=failures)
    log.info("report: %s", doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
