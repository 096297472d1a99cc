"""``python -m benchmarks.parallel_trials``: trials at once in threads against one after the other.

The trainer's search can score several proposals at once (``--parallel-trials``), in threads that
share the one binned Dataset; LightGBM releases the GIL while it trains. This measures, on samples
of the Adult training split, in alternating rounds on this machine:

- two 5-fold cross-validations (two fixed points) one after the other on one thread, one after the
  other on every core, and at once on one thread each (``Search.evaluate_all``, the search's path);
- a whole 8-trial TPE search one trial at a time and two at a time: seconds and best CV loss (two
  at a time, a proposal does not know the result of the one beside it).

The auto setting (``trainer.fit.parallel_trials``) follows from it: one trial per core below
20,000 rows, where a trial runs on one thread, and one at a time above.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from streamfit.common.pipeline import FeaturePipeline, read_table
from streamfit.common.settings import ADULT_TRAIN, load_settings
from streamfit.trainer.fit import task_params, usable_cores
from streamfit.trainer.objective import CrossValidation, build_dataset
from streamfit.trainer.search import Search, warm_start

POINTS = ({"learning_rate": 0.05}, {"learning_rate": 0.1, "num_leaves": 15})


def objective(rows: int, threads: int, prune: bool = False) -> CrossValidation:
    frame = read_table(ADULT_TRAIN)
    if rows < len(frame):
        frame = frame.sample(n=rows, random_state=0)
    settings = load_settings(num_threads=threads, seed=42)
    pipeline = FeaturePipeline.fit(frame, settings.target)
    x, y = pipeline.transform_frame(frame), pipeline.encode_labels(frame[settings.target].tolist())
    params = task_params(pipeline, settings, len(y))
    cv = CrossValidation(build_dataset(pipeline, x, y, None, params), params, folds=5, max_rounds=300,
                         early_stopping=20, seed=42, stratified=True)  # fmt: skip
    cv.prune = prune
    return cv


def two_points(rows: int, threads: int, parallel: int) -> float:
    cv = objective(rows, threads)
    search = Search(cv, optimizer="tpe", trials=2, time_budget=600, seed=42, parallel=parallel)
    started = time.perf_counter()
    if parallel > 1:
        search.evaluate_all([warm_start(p) for p in POINTS])
    else:
        for point in POINTS:
            search.evaluate(warm_start(point))
    return time.perf_counter() - started


def whole_search(rows: int, parallel: int) -> tuple[float, float]:
    cv = objective(rows, 1 if parallel > 1 else 0, prune=True)
    search = Search(cv, optimizer="tpe", trials=8, time_budget=600, seed=42, parallel=parallel)
    started = time.perf_counter()
    result = search.run()
    return time.perf_counter() - started, result.best.loss


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parallel_trials", description=__doc__)
    p.add_argument("--rows", default="1000,4000,12000,32561", help="sample sizes, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3; the best of each is kept)")
    args = p.parse_args(argv)
    cores = usable_cores()
    print(f"{cores} cores; two 5-fold CVs of at most 300 rounds; an 8-trial TPE search; best of {args.rounds} rounds\n")
    print(
        "| rows | two CVs, one after the other, 1 thread | ... on all cores | at once, 1 thread each "
        "| at once vs best one after the other | search, one at a time: s (best loss) | two at a time |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for rows in (int(r) for r in args.rows.split(",")):
        times: dict[str, list[float]] = {"one": [], "all": [], "at once": []}
        searches: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        for _ in range(args.rounds):
            times["one"].append(two_points(rows, 1, 1))
            times["all"].append(two_points(rows, 0 if cores > 1 else 1, 1))
            times["at once"].append(two_points(rows, 1, 2))
            for parallel in searches:
                searches[parallel].append(whole_search(rows, parallel))
        best: dict[str, Any] = {k: min(v) for k, v in times.items()}
        s1, s2 = (min(searches[k], key=lambda r: r[0]) for k in (1, 2))
        loss1, loss2 = (statistics.median(r[1] for r in searches[k]) for k in (1, 2))
        ratio = min(best["one"], best["all"]) / best["at once"]
        print(
            f"| {rows:,} | {best['one']:.2f} s | {best['all']:.2f} s | {best['at once']:.2f} s | {ratio:.2f}x faster "
            f"| {s1[0]:.2f} s ({loss1:.5f}) | {s2[0]:.2f} s ({loss2:.5f}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
