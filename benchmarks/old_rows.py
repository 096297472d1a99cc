"""``python -m benchmarks.old_rows``: after a change of the world, what should the rows from before
it weigh? The model a cycle trains (``trainer.data.assemble`` with the change known, the bootstrap
parameters, rounds by 3-fold early-stopped ``lgb.cv``, as in a fast refit) is scored on the next
rows of the new world, for several ``pre_change_weight`` values side by side on the same rows.

Offline and deterministic: no broker, no services; it measures what is learnt, not how soon (for
that, ``benchmarks.recovery``). Streams from ``benchmarks.recovery.streams``, several seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd

from benchmarks.recovery.streams import StreamSpec, make_stream
from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.settings import Settings
from streamfit.trainer.data import BaseData, assemble, select_observations
from streamfit.trainer.fit import DEFAULT_PARAMS, make_dataset, task_params

BASE_ROWS = 2000
DRIFT_AT = 10_000
TEST_ROWS = 2000


def score(stream_name: str, seed: int, after: int, weights: list[float]) -> dict[float, float]:
    """Accuracy (or -MAE for regression) on the ``TEST_ROWS`` after the first ``after`` rows of
    the new world, per pre-change weight."""
    rows = DRIFT_AT + after + TEST_ROWS
    stream = make_stream(StreamSpec(name=stream_name, seed=seed, rows=rows, drift_at=DRIFT_AT))
    target = stream.target
    base_frame = stream.frame.iloc[:BASE_ROWS].reset_index(drop=True)
    pipeline = FeaturePipeline.fit(base_frame, target)
    base = BaseData(pipeline, base_frame, None, "stream")
    seen = slice(BASE_ROWS, DRIFT_AT + after)
    features, labels = stream.features(seen.start, seen.stop), stream.labels(seen.start, seen.stop)
    ids = [str(i) for i in range(len(labels))]
    observations, invalid = select_observations(
        pipeline, features, labels, list(range(len(labels))), ids, reject_missing=False
    )
    x_test = pipeline.transform(stream.features(DRIFT_AT + after, rows))
    y_test = pipeline.encode_labels(stream.labels(DRIFT_AT + after, rows))
    out: dict[float, float] = {}
    for weight in weights:
        settings = Settings(pre_change_weight=weight, num_threads=1)
        data = assemble(base, observations, invalid, settings, change=DRIFT_AT - BASE_ROWS)
        params: dict[str, Any] = {**task_params(pipeline, settings, data.rows), **DEFAULT_PARAMS}
        dataset = make_dataset(pipeline, data.x, data.y, data.weight)
        history = lgb.cv(
            params, dataset, num_boost_round=1000, nfold=3, stratified=pipeline.task != "regression", seed=1,
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )  # fmt: skip
        rounds = len(cast(list[float], history[f"valid {params['metric']}-mean"]))
        booster = lgb.train(params, dataset, num_boost_round=rounds)
        raw = np.asarray(booster.predict(x_test))
        if pipeline.task == "regression":
            out[weight] = -float(np.mean(np.abs(raw - y_test)))
        elif pipeline.task == "binary":
            out[weight] = 100 * float(np.mean((raw >= 0.5) == y_test))
        else:
            out[weight] = 100 * float(np.mean(raw.argmax(axis=1) == y_test))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.old_rows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--streams", default="agrawal,sea,hyperplane,adult", help="comma-separated")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated")
    parser.add_argument("--after", default="300,1000,4000", help="rows of the new world trained on")
    parser.add_argument("--weights", default="0,0.05,0.25", help="pre_change_weight values")
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.monotonic()
    print(f"base rows {BASE_ROWS:,}, change at row {DRIFT_AT:,}, scored on the next {TEST_ROWS:,} rows; "
          f"mean over seeds {args.seeds} (accuracy %, regression: -MAE)\n")  # fmt: skip
    print("| stream | new rows | " + " | ".join(f"weight {w:g}" for w in weights) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in weights) + " |")
    for name in args.streams.split(","):
        for after in (int(a) for a in args.after.split(",")):
            runs = [score(name, seed, after, weights) for seed in seeds]
            means = [statistics.fmean(r[w] for r in runs) for w in weights]
            print(f"| {name} | {after:,} | " + " | ".join(f"{m:.2f}" for m in means) + " |", flush=True)
    print(f"\n{time.monotonic() - started:.0f} s; pandas {pd.__version__}, lightgbm {lgb.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
