"""``python -m benchmarks [--quick|--tiny]``: run the five measurements, print the table, write
``docs/benchmarks.md``. See docs/benchmarks.md for what each figure means."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import measures, trainer_cycle
from benchmarks.environment import Bench, Requests, bench, broker
from benchmarks.load import wait_compiled, wait_ready
from benchmarks.plan import PLANS, Plan
from benchmarks.report import DOC, Row, table, write
from benchmarks.services import Service, System
from streamfit.common.compiled import compile_trees
from streamfit.kafka_server import free_port

log = logging.getLogger("benchmarks")

ROUNDS = 2  # throughput rounds per system, alternated
SLICES = 4  # latency slices per system, alternated
PARTS = ("serving", "memory", "trainer")
SYSTEMS: dict[str, System] = {"echo": "echo", "seed": "seed", "predictor": "predictor", "eos": "predictor",
                              "fast": "predictor", "lib": "predictor", "echo-lib": "echo",
                              "rss": "predictor"}  # fmt: skip
EXACTLY_ONCE = "eos"  # the predictor with STREAMFIT_PROCESSING_GUARANTEE=exactly-once (issue 7)
FAST = "fast"  # the predictor with STREAMFIT_COMPILED_TREES=true (issue 15)
LIB = "lib"  # the fast path: compiled trees and STREAMFIT_KAFKA_CLIENT=confluent (issue 15)
ECHO_LIB = "echo-lib"  # the echo on librdkafka: the fast path's ceiling


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller counts: a few minutes")
    size.add_argument("--tiny", action="store_true", help="a smoke run of seconds (the test's); figures mean little")
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting Apache Kafka from the jars")
    parser.add_argument("--doc", type=Path, default=None, help=f"where to write the report (default {DOC}; "
                        "--tiny writes none unless given)")  # fmt: skip
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts (repeatable; "
                        "the report is written only for a full set)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    return parser.parse_args(argv)


def overrides(name: str) -> dict[str, Any]:
    if name == EXACTLY_ONCE:
        return {"processing_guarantee": "exactly-once"}
    if name == FAST:  # its metrics port says when the compiled trees serve
        return {"compiled_trees": True, "metrics_port": free_port()}
    if name == LIB:
        return {"compiled_trees": True, "metrics_port": free_port(), "kafka_client": "confluent"}
    if name == ECHO_LIB:
        return {"kafka_client": "confluent"}
    return {}


def serving(b: Bench, plan: Plan, requests: Requests, services: dict[str, Service]) -> list[Row]:
    """Throughput, latency and hot swap: echo, seed-style loop and predictor on their own topics."""
    variants = b.variants(plan.swap_models)
    bundle = b.champion_bundle()
    predict_us = measures.predict_cost(bundle, requests)
    compiled_us = measures.predict_cost(bundle, requests, compile_trees(bundle.booster))
    echo, seed, pred, eos = services["echo"], services["seed"], services["predictor"], services[EXACTLY_ONCE]
    fast, lib, echo_lib = services[FAST], services[LIB], services[ECHO_LIB]
    tp_seed = measures.throughput(seed, requests, plan.seed_requests, "tp").rate
    seed.stop()
    # The machine is shared: predictor and echo take turns, and each keeps its best round.
    turns = {"predictor": pred, "echo": echo, EXACTLY_ONCE: eos, FAST: fast, LIB: lib, ECHO_LIB: echo_lib}
    runs: dict[str, list[measures.Throughput]] = {name: [] for name in turns}
    for turn in range(ROUNDS):
        for name, service in turns.items():
            runs[name].append(measures.throughput(service, requests, plan.throughput_requests, f"tp{turn}"))
    best = {name: max(done, key=lambda t: t.rate) for name, done in runs.items()}
    tp_pred, tp_echo, tp_eos = best["predictor"].rate, best["echo"].rate, best[EXACTLY_ONCE].rate
    tp_fast, tp_lib, tp_echo_lib = best[FAST].rate, best[LIB].rate, best[ECHO_LIB].rate
    rate, rate_lib = tp_pred / 2, tp_lib / 2  # each at half its own load, with its echo at the same rate
    lat_pred, lat_echo, lat_eos = measures.Latency(rate), measures.Latency(rate), measures.Latency(rate)
    lat_fast, lat_lib, lat_echo_lib = measures.Latency(rate), measures.Latency(rate_lib), measures.Latency(rate_lib)
    paced = ((pred, lat_pred), (echo, lat_echo), (eos, lat_eos), (fast, lat_fast), (lib, lat_lib),
             (echo_lib, lat_echo_lib))  # fmt: skip
    for turn in range(SLICES):
        for service, into in paced:
            measures.latency(service, requests, into, plan.latency_seconds / SLICES, f"lat{turn}")
    for service in (echo, eos, fast, lib, echo_lib):
        service.stop()
    swaps = measures.hot_swap(pred, requests, variants, b.publish, rate, plan.swap_every)
    pred.stop()
    ms = 1000.0
    swap_ratio = swaps.p99_swap / swaps.p99_steady
    worst_reload = max(swaps.reload_to_first, default=math.nan)
    return [
        Row("throughput", "predictor", tp_pred, "req/s"),
        Row("throughput", "echo ceiling", tp_echo, "req/s"),
        Row("throughput", "seed-style loop", tp_seed, "req/s"),
        Row("throughput", "predictor CPU per 1,000 requests", best["predictor"].cpu_ms, "ms"),
        Row("throughput", "echo CPU per 1,000 requests", best["echo"].cpu_ms, "ms"),
        Row(
            "throughput",
            f"LightGBM predict alone, per 1,000 rows ({bundle.booster.num_trees()} trees, 1 thread)",
            predict_us,
            "ms",
        ),
        Row("throughput", "predictor / echo", tp_pred / tp_echo, "x", ">= 0.8", tp_pred / tp_echo >= 0.8),
        Row("throughput", "predictor / seed-style", tp_pred / tp_seed, "x", ">= 10", tp_pred / tp_seed >= 10),
        Row("latency", f"offered load (half the predictor's {tp_pred:,.0f}/s)", rate, "req/s"),
        Row("latency", "predictor p50", lat_pred.p50 * ms, "ms"),
        Row("latency", "predictor p99", lat_pred.p99 * ms, "ms"),
        Row("latency", "predictor max", lat_pred.max * ms, "ms"),
        Row("latency", "echo p50", lat_echo.p50 * ms, "ms"),
        Row("latency", "echo p99", lat_echo.p99 * ms, "ms"),
        Row("latency", "echo max", lat_echo.max * ms, "ms"),
        Row(
            "latency",
            "predictor p99 / echo p99",
            lat_pred.p99 / lat_echo.p99,
            "x",
            "<= 1.5",
            lat_pred.p99 / lat_echo.p99 <= 1.5,
        ),
        Row("exactly-once", "predictor, exactly-once: throughput", tp_eos, "req/s"),
        Row("exactly-once", "predictor, exactly-once: CPU per 1,000 requests", best[EXACTLY_ONCE].cpu_ms, "ms"),
        Row("exactly-once", "throughput exactly-once / at-least-once", tp_eos / tp_pred, "x"),
        Row("exactly-once", f"predictor, exactly-once: p50 at {rate:,.0f} req/s", lat_eos.p50 * ms, "ms"),
        Row("exactly-once", f"predictor, exactly-once: p99 at {rate:,.0f} req/s", lat_eos.p99 * ms, "ms"),
        Row("exactly-once", "p99 exactly-once / at-least-once", lat_eos.p99 / lat_pred.p99, "x"),
        Row("fast path", "predictor, compiled trees (kafka-python): throughput", tp_fast, "req/s"),
        Row("fast path", "predictor, compiled trees (kafka-python): CPU per 1,000 requests", best[FAST].cpu_ms, "ms"),
        Row("fast path", "compiled trees' predict alone, per 1,000 rows (1 thread)", compiled_us, "ms"),
        Row("fast path", "predict alone, LightGBM / compiled trees", predict_us / compiled_us, "x"),
        Row("fast path", "throughput compiled trees (kafka-python) / predictor", tp_fast / tp_pred, "x"),
        Row(
            "fast path", f"predictor, compiled trees (kafka-python): p99 at {rate:,.0f} req/s", lat_fast.p99 * ms, "ms"
        ),
        Row("fast path", "fast path (librdkafka + compiled trees): throughput", tp_lib, "req/s"),
        Row("fast path", "echo on librdkafka: throughput", tp_echo_lib, "req/s"),
        Row("fast path", "fast path: CPU per 1,000 requests", best[LIB].cpu_ms, "ms"),
        Row("fast path", "echo on librdkafka: CPU per 1,000 requests", best[ECHO_LIB].cpu_ms, "ms"),
        Row("fast path", "throughput fast path / predictor", tp_lib / tp_pred, "x", ">= 3", tp_lib / tp_pred >= 3),
        Row(
            "fast path",
            "throughput fast path / echo on librdkafka",
            tp_lib / tp_echo_lib,
            "x",
            ">= 0.8",
            tp_lib / tp_echo_lib >= 0.8,
        ),
        Row("fast path", f"fast path p99 at {rate_lib:,.0f} req/s (half its throughput)", lat_lib.p99 * ms, "ms"),
        Row("fast path", f"echo on librdkafka p99 at {rate_lib:,.0f} req/s", lat_echo_lib.p99 * ms, "ms"),
        Row(
            "fast path",
            "p99 fast path / echo on librdkafka",
            lat_lib.p99 / lat_echo_lib.p99,
            "x",
            "<= 1.5",
            lat_lib.p99 / lat_echo_lib.p99 <= 1.5,
        ),
        Row("hot swap", f"versions answering, of {swaps.published} published", swaps.swapped, ""),
        Row("hot swap", f"requests lost, of {swaps.sent:,}", swaps.lost, "", "0", swaps.lost == 0),
        Row("hot swap", "p99 steady", swaps.p99_steady * ms, "ms"),
        Row("hot swap", "p99 in swap windows", swaps.p99_swap * ms, "ms"),
        Row("hot swap", "p99 swap / steady", swap_ratio, "x", "<= 2", swap_ratio <= 2),
        Row(
            "hot swap",
            "reload message to first answer by the new version (worst)",
            worst_reload,
            "s",
            "< 2",
            worst_reload < 2 and swaps.swapped == swaps.published,
        ),
    ]


def memory(plan: Plan, requests: Requests, pred: Service) -> list[Row]:
    a, z = plan.rss_requests
    first, middle, last = measures.memory(pred, requests, (a, z // 2, z))
    pred.stop()
    return [
        Row("memory", f"predictor RSS after {a:,} requests", first, "MiB"),
        Row("memory", f"predictor RSS after {z // 2:,} requests", middle, "MiB"),
        Row("memory", f"predictor RSS after {z:,} requests", last, "MiB"),
        Row("memory", f"RSS {z:,} / {a:,}", last / first, "x", "<= 1.2", last / first <= 1.2),
    ]


def training(b: Bench, plan: Plan) -> list[Row]:
    seed = trainer_cycle.seed_style(b.settings("trainer-seed", trials=plan.trials))
    settings = b.settings("trainer", trials=plan.trials)
    cycle = trainer_cycle.cycle(settings)
    first, second = trainer_cycle.grown(b.settings("trainer-grown", trials=plan.trials), b.home / "grown.csv")
    ratio = cycle.seconds / seed.seconds
    target = seed.best_cv_loss
    judged = trainer_cycle.on_seed_yardstick(settings, cycle)
    seed_time, cycle_time = seed.seconds_to(target), judged.seconds_to(target)
    quality: list[Row] = [
        Row("trainer", f"search seconds to the seed-style's best CV loss {target:.5f}, seed-style",
            seed_time or float("nan"), "s"),
        Row("trainer", "... cycle (its choice so far, on the seed-style's CV)"
            + ("" if cycle_time is not None else " (never reached)"), cycle_time or float("nan"), "s"),
        Row("trainer", "trials pruned in the cycle's search", float(cycle.pruned), ""),
    ]  # fmt: skip
    if seed_time:  # never reached: the whole search, a lower bound of the ratio
        ratio_q = (cycle_time if cycle_time is not None else cycle.search_seconds) / seed_time
        figure = "time to quality, cycle / seed-style" + ("" if cycle_time is not None else " (not reached: at least)")
        quality.append(Row("trainer", figure, ratio_q, "x", "<= 0.33", cycle_time is not None and ratio_q <= 0.33))
    reached = second.trials_to(cycle.best_cv_loss)
    quality.append(Row(
        "trainer", f"warm-started cycle on grown data ({trainer_cycle.GROWN_FROM:.0%} of the rows, then all): "
        f"trials to the cold cycle's best CV loss on all, of {second.trials}",
        float(reached) if reached is not None else float("nan"), "", f"<= {second.trials / 3:.1f}",
        reached is not None and reached <= second.trials / 3,
    ))  # fmt: skip
    log.info("grown-data pair: first cycle %.1f s, best CV loss %.5f; second %.1f s, best %.5f", first.seconds,
             first.best_cv_loss, second.seconds, second.best_cv_loss)  # fmt: skip
    return [
        *quality,
        Row("trainer", f"cycle, {cycle.trials} trials (search {cycle.search_seconds:.1f} s)", cycle.seconds, "s"),
        Row("trainer", f"seed-style, {seed.trials} trials (search {seed.search_seconds:.1f} s)", seed.seconds, "s"),
        Row("trainer", "cycle / seed-style time", ratio, "x", "<= 0.5", ratio <= 0.5),
        Row("trainer", "holdout loss, cycle", cycle.holdout_loss, ""),
        Row(
            "trainer",
            "holdout loss, seed-style",
            seed.holdout_loss,
            "",
            "cycle <= seed-style",
            cycle.holdout_loss <= seed.holdout_loss + 1e-12,
        ),
        *_paired(cycle, seed),
    ]


def _paired(cycle: trainer_cycle.Training, seed: trainer_cycle.Training) -> list[Row]:
    """The two holdout losses compared row by row: whether a difference is more than the holdout's noise."""
    if cycle.losses is None or seed.losses is None or len(cycle.losses) != len(seed.losses):
        return []
    diff, error = trainer_cycle.paired_difference(cycle.losses, seed.losses)
    return [Row("trainer", f"holdout loss, cycle - seed-style, row by row (standard error {error:.2g})", diff, "")]


def notes(plan: Plan) -> list[str]:
    a, z = plan.rss_requests
    out = [
        f"Plan `{plan.name}`: throughput {plan.throughput_requests:,} requests per system "
        f"({plan.seed_requests:,} for the seed-style loop), latency {plan.latency_seconds:.0f} s of paced load per "
        f"system, {plan.swap_models} models published {plan.swap_every:.0f} s apart, {plan.trials} trials of at most "
        f"{plan.max_rounds} rounds per trainer, RSS after {a:,} and {z:,} requests.",
        "Throughput is end to end: the first request sent to the last answer written (the answer record's "
        "timestamp), with every request sent at once by one producer; predictor, echo, the exactly-once "
        "predictor and the predictor with compiled trees (`STREAMFIT_COMPILED_TREES`, measured once its "
        f"compiled trees serve) take {ROUNDS} turns each and keep their best. CPU per 1,000 requests is the system "
        "process's user + system time over its best round. Latency is from `send` to the answer being read, on the "
        f"benchmark's clock, pooled over {SLICES} alternating slices per system. The exactly-once predictor runs "
        "one Kafka transaction per batch (`send_offsets_to_transaction`, then commit) and its answers are read "
        "`read_committed`, so its latency includes the commit; its throughput clock stops at the last answer's "
        "record timestamp, stamped before its transaction commits (one commit, milliseconds, out of seconds). "
        "Every system runs as its own process; the broker is a local single-node Apache Kafka; topics have 3 "
        "partitions; requests carry no label, so every answered request waits in the predictor's label join "
        "(bounded by `pending_max`, 200,000 by default).",
    ]
    if plan.scaled:
        out.append(f"The memory figures are scaled down ({a:,} and {z:,} requests instead of 50,000 and 500,000).")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = PLANS["tiny" if args.tiny else "quick" if args.quick else "full"]
    parts = set(args.only or PARTS)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    started = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="streamfit-bench-logs-"))
    log.info("plan %s; service logs in %s", plan.name, logs)
    rows: list[Row] = []
    with broker(args.bootstrap_servers) as servers, bench(servers, plan.base_rows, plan.max_rounds) as b:
        with contextlib.ExitStack() as stack:
            # Every system starts now and waits for its model: their start-ups overlap the training.
            wanted = {name: system for name, system in SYSTEMS.items()
                      if ("memory" if name == "rss" else "serving") in parts}  # fmt: skip
            services = {name: stack.enter_context(Service(system, b.settings(name, **overrides(name)), logs))
                        for name, system in wanted.items()}  # fmt: skip
            requests = Requests()
            champion = b.train_champion()
            log.info("champion trained (version %s)", champion.version)
            for name in ("seed", "predictor", EXACTLY_ONCE, FAST, LIB, "rss"):
                if name in services:
                    b.publish(services[name].settings, champion)
            for service in services.values():  # nothing is measured while another system still starts
                wait_ready(service.settings, requests)
            for name in (FAST, LIB):
                if name in services:
                    wait_compiled(services[name].settings)
            if "serving" in parts:
                rows += serving(b, plan, requests, services)
            if "memory" in parts:
                rows += memory(plan, requests, services["rss"])
        if "trainer" in parts:
            rows += training(b, plan)
    seconds = time.monotonic() - started
    command = "python -m benchmarks" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    print(table(rows))
    doc = args.doc if args.doc is not None else (None if args.tiny or args.only else DOC)
    if doc is not None:
        write(rows, command, notes(plan), started_at, seconds, doc)
        log.info("wrote %s", doc)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=1))
    return 0
