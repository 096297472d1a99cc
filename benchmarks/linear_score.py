"""``python -m benchmarks.linear_score``: what a linear model's scores as extra inputs
(``trainer.linear``) buy the trees, from a few hundred to a few thousand rows of a new world.

For each stream, seed and number of rows after the change: LightGBM with the default parameters,
rounds by 3-fold early-stopped ``lgb.cv`` (as a cycle's fast refit), trained on the rows after the
change, scored on the next ``TEST_ROWS``; without the scores, with them, and with what a cycle
picks (``trainer.linear.linear_score_wins``: the score when its cross-validated loss is lower by more
than its standard error). Offline and deterministic: no broker, no
services. Streams from ``benchmarks.recovery.streams``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, cast

import lightgbm as lgb
import numpy as np

from benchmarks.recovery.streams import StreamSpec, make_stream
from streamfit.common.linear import LinearScore
from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.settings import Settings
from streamfit.trainer.fit import DEFAULT_PARAMS, make_dataset, task_params
from streamfit.trainer.linear import fit_linear_score, linear_score_wins
from streamfit.trainer.objective import TrialScore

BASE_ROWS = 2000
DRIFT_AT = 10_000
TEST_ROWS = 2000
FOLDS = 3


def fit_and_score(
    pipeline: FeaturePipeline, x: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
    linear: LinearScore | None,
) -> tuple[TrialScore, float]:  # fmt: skip
    """(cross-validated loss with its folds' spread, score on the test rows: accuracy %, or -MAE)."""
    params: dict[str, Any] = {**task_params(pipeline, Settings(num_threads=1), len(y)), **DEFAULT_PARAMS}
    dataset = make_dataset(pipeline, x, y, None, linear)
    history = lgb.cv(
        params, dataset, num_boost_round=1000, nfold=FOLDS, stratified=pipeline.task != "regression", seed=1,
        callbacks=[lgb.early_stopping(30, verbose=False)],
    )  # fmt: skip
    losses = cast(list[float], history[f"valid {params['metric']}-mean"])
    spread = cast(list[float], history[f"valid {params['metric']}-stdv"])
    cv = TrialScore(losses[-1], len(losses), std=spread[-1])
    booster = lgb.train(params, dataset, num_boost_round=len(losses))
    raw = np.asarray(booster.predict(test_x if linear is None else linear.augment(test_x)))
    if pipeline.task == "regression":
        return cv, -float(np.mean(np.abs(raw - test_y)))
    hits = (raw >= 0.5) == test_y if pipeline.task == "binary" else raw.argmax(axis=1) == test_y
    return cv, 100 * float(np.mean(hits))


def measure(name: str, seed: int, after: int) -> tuple[float, float, float]:
    """(without the scores, with them, the cycle's pick) on the rows after the first ``after``."""
    rows = DRIFT_AT + after + TEST_ROWS
    stream = make_stream(StreamSpec(name=name, seed=seed, rows=rows, drift_at=DRIFT_AT))
    pipeline = FeaturePipeline.fit(stream.frame.iloc[:BASE_ROWS].reset_index(drop=True), stream.target)
    x = pipeline.transform(stream.features(DRIFT_AT, DRIFT_AT + after))
    y = pipeline.encode_labels(stream.labels(DRIFT_AT, DRIFT_AT + after))
    test_x = pipeline.transform(stream.features(DRIFT_AT + after, rows))
    test_y = pipeline.encode_labels(stream.labels(DRIFT_AT + after, rows))
    plain_loss, plain = fit_and_score(pipeline, x, y, test_x, test_y, None)
    fitted = fit_linear_score(pipeline, x, y, None, seed=1)
    if fitted is None:
        return plain, plain, plain
    linear, augmented = fitted
    linear_loss, with_linear = fit_and_score(pipeline, augmented, y, test_x, test_y, linear)
    return plain, with_linear, with_linear if linear_score_wins(linear_loss, plain_loss, FOLDS)[0] else plain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.linear_score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--streams", default="sea,agrawal,hyperplane,mixed,sine,led,friedman,adult")
    parser.add_argument("--seeds", default="1,2,3,4", help="comma-separated")
    parser.add_argument("--after", default="300,1000,3000", help="rows of the new world trained on")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.monotonic()
    print(f"change at row {DRIFT_AT:,}; trained on the rows after it, scored on the next {TEST_ROWS:,}; "
          f"mean over seeds {args.seeds} (accuracy %, regression: -MAE); per seed: with minus without\n")  # fmt: skip
    print("| stream | new rows | without | with | cycle's pick | with − without, per seed |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name in args.streams.split(","):
        for after in (int(a) for a in args.after.split(",")):
            runs = [measure(name, seed, after) for seed in seeds]
            means = [statistics.fmean(r[i] for r in runs) for i in range(3)]
            diffs = " ".join(f"{r[1] - r[0]:+.2f}" for r in runs)
            print(f"| {name} | {after:,} | " + " | ".join(f"{m:.2f}" for m in means) + f" | {diffs} |", flush=True)
    print(f"\n{time.monotonic() - started:.0f} s; lightgbm {lgb.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
