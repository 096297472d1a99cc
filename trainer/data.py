"""What a cycle trains and tests on: the base data set, the observations, the time-ordered
holdout and the recency weights.

Decisions, and why:

- **The feature pipeline is fitted on the base data set only.** Its schema (columns, kinds,
  classes) then stays the same from cycle to cycle, so every candidate passes the predictor's
  compatibility check against the model it serves, and the champion and the candidate read the
  holdout the same way. The price: a category first seen in observations is treated as missing
  (as the pipeline treats any unseen category); add it to the base data set to learn it.
- **The holdout is time-ordered and is what the next model will face.** The newest
  ``holdout_share`` of the observations (by ``observed_at``, then partition and offset). While
  they are fewer than ``holdout_min`` rows the base data set's test split joins them; from then on
  they decide alone, since the base data describes the world as it was. Neither the candidate nor
  the champion trained on them. Without observations and without a test split, a seeded random
  ``holdout_share`` of the base rows is held out instead, so that there is always something to
  compare on.
- **After a change of the world, the new world decides.** When ``common.change`` finds the served
  error stepping up at some observation, the holdout is the newest share of the rows after it and
  the model trains on the rest of them, plus, in one of two variants, every row from before it
  (base data included) together weighing ``pre_change_weight`` (default a quarter) of the new rows.
  The cycle fits the new rows alone first and crowns that fast refit if it beats the champion; then
  the old rows' fit challenges it (``trainer.cycle``), kept only if the holdout prefers it by the
  rule a promotion uses (with no comparable champion they are left out): where the whole
  label rule changed (River's SEA and Agrawal) the old rows cost up to 28 points, where only a
  segment did and the old rows are many (the demo: 32,561 Adult rows) they hold what the new rows
  have not shown yet (``benchmarks/old_rows.py``, docs/benchmarks.md).
- **Observations are weighted by recency.** A base row weighs 1; the newest training
  observation weighs ``observation_weight`` (default 3) and the weight halves every ``half_life``
  observations (default 2,000). With the defaults the newest few thousand observations, a few
  retrain cycles' worth at ``retrain_every=1000``, count for more than the same number of base
  rows, so that after a concept drift the new behaviour is learnt within a few cycles instead of
  being outvoted by 30,000 stale base rows; older observations fade out smoothly instead of
  falling off a cliff, which keeps successive models stable. ``window`` (unset by default) adds a
  hard limit on how many of the newest observations are used at all.
- **Duplicates** (the predictor writes at least once) are dropped by ``request_id``, keeping the
  first.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamfit.common.errors import ConfigError
from streamfit.common.pipeline import FeaturePipeline, read_table
from streamfit.common.settings import Settings

log = logging.getLogger(__name__)

MIN_CHANGE_ROWS = 100  # observations after a change before the cycle trains on the new world


# --- pure rules ------------------------------------------------------------------------------
def holdout_start(n: int, share: float) -> int:
    """Index (in time order) where the holdout starts: the newest ``share`` of ``n`` rows."""
    if not 0 < share < 1:
        raise ValueError(f"holdout share must be in (0, 1), got {share}")
    return n - math.floor(n * share)


def window_start(n: int, window: int | None) -> int:
    """Index (in time order) of the oldest training observation a window keeps."""
    return 0 if window is None else max(0, n - window)


def recency_weights(n: int, half_life: float | None, newest_weight: float) -> np.ndarray:
    """Weights of ``n`` observations in time order (oldest first): ``newest_weight`` for the
    newest, halving every ``half_life`` observations (all equal when ``half_life`` is unset)."""
    if n == 0:
        return np.empty(0, dtype=np.float64)
    age = np.arange(n - 1, -1, -1, dtype=np.float64)  # 0 for the newest
    if half_life is None:
        return np.full(n, float(newest_weight))
    return newest_weight * np.power(0.5, age / half_life)


def data_hash(pipeline: FeaturePipeline, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> str:
    """A fingerprint of exactly what the model was trained on (schema, matrix, labels, weights)."""
    digest = hashlib.sha256()
    digest.update(repr(pipeline.to_dict()).encode())
    for array in (x, y, w):
        contiguous = np.ascontiguousarray(array, dtype=np.float64)
        digest.update(str(contiguous.shape).encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()


def invalid_observation(
    pipeline: FeaturePipeline, features: Mapping[str, Any], label: Any, reject_missing: bool
) -> str | None:
    """Why an observation cannot be trained on, or None."""
    if not any(spec.name in features for spec in pipeline.features):
        return f"no feature of the schema ({', '.join(pipeline.feature_names[:5])}, ...): features do not match"
    reason = pipeline.check(features, reject_missing)
    if reason is not None:
        return f"features do not match the schema: {reason}"
    if pipeline.encode_label(label) is None:
        if pipeline.task == "regression":
            return f"label {label!r} is not a finite number"
        return f"label {label!r} is not a class of the model ({', '.join(map(str, pipeline.classes[:10]))})"
    return None


# --- the base data set -------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseData:
    """The base data set (and its test split) with the pipeline fitted on it."""

    pipeline: FeaturePipeline
    frame: pd.DataFrame  # labelled rows only
    test: pd.DataFrame | None  # labelled rows of the test split
    source: str
    stamp: tuple[Any, ...] = field(compare=False, default=())


def _stamp(paths: Sequence[Path | None]) -> tuple[Any, ...]:
    out: list[Any] = []
    for path in paths:
        if path is None or not path.exists():
            out.append(None)
        else:
            stat = os.stat(path)
            out.append((str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    return tuple(out)


def _labelled(frame: pd.DataFrame, pipeline: FeaturePipeline) -> pd.DataFrame:
    target = pipeline.target
    frame = frame[frame[target].notna()]
    encoded = pipeline.encode_labels(frame[target].tolist())
    kept: pd.DataFrame = frame[~np.isnan(encoded)]
    return kept.reset_index(drop=True)


def load_base(settings: Settings, previous: BaseData | None = None) -> BaseData:
    """Read the base data set and its test split; reuses ``previous`` if the files are unchanged."""
    test_path = settings.test_data_path
    stamp = (*_stamp([settings.data_path, test_path]), settings.target)
    if previous is not None and previous.stamp == stamp:
        return previous
    frame = read_table(settings.data_path)
    pipeline = FeaturePipeline.fit(frame, settings.target)
    test = None
    if test_path is not None:
        raw_test = read_table(test_path, "test data set", "--test-data / STREAMFIT_TEST_DATA")
        if settings.target not in raw_test.columns:
            raise ConfigError(f"test data set {str(test_path)!r} has no target column {settings.target!r}")
        test = _labelled(raw_test, pipeline)
    base = BaseData(pipeline, _labelled(frame, pipeline), test, str(settings.data_path), stamp)
    log.info(
        "base data %s: %d labelled rows, %d features, task %s%s", settings.data_path, len(base.frame),
        len(pipeline.features), pipeline.task, f", test split {len(test)} rows" if test is not None else "",
    )  # fmt: skip
    return base


# --- one cycle's data ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Observations:
    """Valid, de-duplicated observations in time order (oldest first)."""

    features: list[dict[str, Any]]
    labels: list[Any]
    observed_at: np.ndarray
    served_error: np.ndarray = field(default_factory=lambda: np.empty(0))  # per row; NaN: unknown

    def __post_init__(self) -> None:
        if len(self.served_error) != len(self.labels):
            object.__setattr__(self, "served_error", np.full(len(self.labels), np.nan))

    def __len__(self) -> int:
        return len(self.labels)

    def slice(self, start: int, stop: int | None = None) -> Observations:
        return Observations(self.features[start:stop], self.labels[start:stop], self.observed_at[start:stop],
                            self.served_error[start:stop])  # fmt: skip


@dataclass(frozen=True)
class Holdout:
    """The rows candidate and champion are compared on, kept raw so that each model reads them
    through its own pipeline."""

    test: pd.DataFrame | None
    observations: Observations
    base: pd.DataFrame | None = None  # the fallback: held-out base rows

    def frames(self) -> list[pd.DataFrame]:
        return [f for f in (self.test, self.base) if f is not None and len(f)]

    def __len__(self) -> int:
        return sum(len(f) for f in self.frames()) + len(self.observations)

    def matrix(self, pipeline: FeaturePipeline) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for frame in self.frames():
            xs.append(pipeline.transform_frame(frame))
            ys.append(pipeline.encode_labels(frame[pipeline.target].tolist()))
        if len(self.observations):
            xs.append(pipeline.transform(self.observations.features))
            ys.append(pipeline.encode_labels(self.observations.labels))
        x = np.vstack(xs) if xs else np.empty((0, len(pipeline.features)))
        y = np.concatenate(ys) if ys else np.empty(0)
        keep = ~np.isnan(y)  # a label another pipeline cannot encode is left out for that model
        return x[keep], y[keep]


@dataclass(frozen=True)
class CycleData:
    pipeline: FeaturePipeline
    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    holdout: Holdout
    rows_base: int
    rows_observations: int  # observations trained on (after the holdout and the window)
    rows_observations_holdout: int
    rows_observations_valid: int
    rows_observations_invalid: int
    rows_test: int
    hash: str
    change: int | None = None  # index of the first observation after a detected change (None: no change)
    rows_after_change: int = 0
    old_weight: float = 0.0  # after a change: the share of the new rows' weight all older rows got

    @property
    def rows_new_world(self) -> int:
        """Training rows from after the change (all of them without a change)."""
        return self.rows_after_change - self.rows_observations_holdout if self.change is not None else self.rows

    @property
    def rows(self) -> int:
        return len(self.y)

    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows, "rows_base": self.rows_base, "rows_observations": self.rows_observations,
            "rows_observations_holdout": self.rows_observations_holdout,
            "rows_observations_valid": self.rows_observations_valid,
            "rows_observations_invalid": self.rows_observations_invalid,
            "rows_test": self.rows_test, "rows_holdout": len(self.holdout),
            "rows_after_change": self.rows_after_change,
        }  # fmt: skip

    @property
    def holdout_kind(self) -> str:
        """Which rows decide promotion, for status and MLflow."""
        if self.change is not None:
            return "newest observations after the change"
        kinds = []
        if self.holdout.test is not None and len(self.holdout.test):
            kinds.append("base test split")
        if self.holdout.base is not None and len(self.holdout.base):
            kinds.append("held-out base rows")
        if len(self.holdout.observations):
            kinds.append("newest observations")
        return " + ".join(kinds) or "none"


def select_observations(
    pipeline: FeaturePipeline,
    features: Sequence[dict[str, Any]],
    labels: Sequence[Any],
    observed_at: Sequence[float],
    request_ids: Sequence[str],
    reject_missing: bool,
    served_error: Sequence[float] | None = None,
) -> tuple[Observations, int]:
    """The valid observations in time order, and how many were left out as invalid. The input
    is in the order it was read (partition, then offset); time order is by ``observed_at`` with
    that order breaking ties."""
    order = np.argsort(np.asarray(observed_at, dtype=np.float64), kind="stable")
    seen: set[str] = set()
    keep: list[int] = []
    invalid = 0
    for i in order.tolist():
        if request_ids[i] in seen:
            continue
        seen.add(request_ids[i])
        if invalid_observation(pipeline, features[i], labels[i], reject_missing) is not None:
            invalid += 1
            continue
        keep.append(i)
    times = np.asarray(observed_at, dtype=np.float64)[keep] if keep else np.empty(0)
    errors = np.full(len(keep), np.nan)
    if served_error is not None and keep:
        errors = np.asarray(served_error, dtype=np.float64)[keep]
    return Observations([features[i] for i in keep], [labels[i] for i in keep], times, errors), invalid


def holdout_rows(n: int, share: float) -> int:
    """How many of ``n`` observations (newest) a holdout takes: the ``share``, at least one."""
    return 0 if n == 0 else max(1, n - holdout_start(n, share))


def assemble(
    base: BaseData, observations: Observations, invalid: int, settings: Settings, change: int | None = None
) -> CycleData:
    """Training matrix, weights and holdout for one cycle.

    ``change`` is the index of the first observation after a detected change of the world
    (``common.change``). With at least ``MIN_CHANGE_ROWS`` observations after it, the holdout is
    the newest of those alone, the model trains on the rest of them, and everything from before
    the change (base rows and older observations) together weighs ``pre_change_weight`` of what the
    new rows weigh (0: left out). Without a change the holdout is the newest observations alone once they are
    ``holdout_min`` rows, and the base data set's test split plus them before that.
    """
    pipeline = base.pipeline
    n = len(observations)
    if change is not None and n - change >= MIN_CHANGE_ROWS:
        return _assemble_after_change(base, observations, invalid, settings, change)
    cut = holdout_start(n, settings.holdout_share)
    train_obs = observations.slice(0, cut)
    held_obs = observations.slice(cut)
    train_obs = train_obs.slice(window_start(len(train_obs), settings.window))
    test = base.test if len(held_obs) < settings.holdout_min else None

    base_frame = base.frame
    fallback = None
    if len(held_obs) == 0 and (test is None or len(test) == 0):
        rng = np.random.default_rng(settings.seed)
        held = rng.random(len(base_frame)) < settings.holdout_share
        fallback, base_frame = base_frame[held], base_frame[~held]
        log.info("no observations and no test split: holding out %d random base rows", int(held.sum()))

    xs = [pipeline.transform_frame(base_frame)]
    ys = [pipeline.encode_labels(base_frame[pipeline.target].tolist())]
    ws = [np.ones(len(base_frame))]
    if len(train_obs):
        xs.append(pipeline.transform(train_obs.features))
        ys.append(pipeline.encode_labels(train_obs.labels))
        ws.append(recency_weights(len(train_obs), settings.half_life, settings.observation_weight))
    x, y, w = np.vstack(xs), np.concatenate(ys), np.concatenate(ws)
    holdout = Holdout(test, held_obs, fallback)
    return CycleData(
        pipeline, x, y, w, holdout, rows_base=len(base_frame), rows_observations=len(train_obs),
        rows_observations_holdout=len(held_obs), rows_observations_valid=n, rows_observations_invalid=invalid,
        rows_test=0 if test is None else len(test), hash=data_hash(pipeline, x, y, w),
    )  # fmt: skip


def _assemble_after_change(
    base: BaseData, observations: Observations, invalid: int, settings: Settings, change: int
) -> CycleData:
    pipeline = base.pipeline
    n = len(observations)
    before, after = observations.slice(0, change), observations.slice(change)
    cut = len(after) - holdout_rows(len(after), settings.holdout_share)
    train_new, held = after.slice(0, cut), after.slice(cut)
    train_new = train_new.slice(window_start(len(train_new), settings.window))
    new_weight = recency_weights(len(train_new), settings.half_life, settings.observation_weight)
    # The old world, oldest to newest: base rows, then the observations before the change, with
    # the weights they would have had, scaled so that together they weigh pre_change_weight of the new.
    old_observations = recency_weights(len(before), settings.half_life, settings.observation_weight)
    old_weight = np.concatenate([np.ones(len(base.frame)), old_observations])
    keep_old = settings.pre_change_weight > 0 and len(old_weight) > 0 and old_weight.sum() > 0
    xs, ys, ws = [], [], []
    rows_base = 0
    if keep_old:
        scale = settings.pre_change_weight * float(new_weight.sum()) / float(old_weight.sum())
        xs.append(pipeline.transform_frame(base.frame))
        ys.append(pipeline.encode_labels(base.frame[pipeline.target].tolist()))
        rows_base = len(base.frame)
        if len(before):
            xs.append(pipeline.transform(before.features))
            ys.append(pipeline.encode_labels(before.labels))
        ws.append(old_weight * scale)
    if len(train_new):
        xs.append(pipeline.transform(train_new.features))
        ys.append(pipeline.encode_labels(train_new.labels))
        ws.append(new_weight)
    x = np.vstack(xs) if xs else np.empty((0, len(pipeline.features)))
    y = np.concatenate(ys) if ys else np.empty(0)
    w = np.concatenate(ws) if ws else np.empty(0)
    return CycleData(
        pipeline, x, y, w, Holdout(None, held), rows_base=rows_base,
        rows_observations=len(train_new) + (len(before) if keep_old else 0), rows_observations_holdout=len(held),
        rows_observations_valid=n, rows_observations_invalid=invalid, rows_test=0,
        hash=data_hash(pipeline, x, y, w), change=change, rows_after_change=len(after),
        old_weight=settings.pre_change_weight if keep_old else 0.0,
    )  # fmt: skip
