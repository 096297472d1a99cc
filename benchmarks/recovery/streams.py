"""The labelled streams the recovery evaluation replays: a DataFrame per (generator, seed, drift).

Every stream is a pure function of its ``StreamSpec``: the same spec gives the same rows, so a
run can be repeated and two trainers compared on identical data. Synthetic streams come from
``river.datasets.synth``; features get plain column names, and categorical features are strings
(with a letter prefix, so that a CSV reader does not turn them back into numbers).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from streamfit.common.errors import ConfigError
from streamfit.common.pipeline import FeaturePipeline, read_table
from streamfit.common.settings import ADULT_TEST, ADULT_TRAIN
from streamfit.sample_app.drift import apply_drift, plan_drift
from streamfit.sample_app.source import to_value

TARGET = "y"
STREAMS = ("agrawal", "sea", "sine", "stagger", "mixed", "led", "hyperplane", "friedman", "none", "adult", "csv")
Task = Literal["binary", "multiclass", "regression"]

# The concept before and after the drift, in river's numbering. Agrawal: classification function
# 0 -> 2. SEA: threshold 8 (variant 0) moves to 9.5 (variant 3), about 13% of the rows change class.
# Sine's boundary y < sin(x) becomes y < 0.5 + 0.3 sin(3 pi x); STAGGER's rule "small and red" becomes
# "medium or large" (categorical inputs); Mixed's two boolean-and-sine rules swap their labels; LED
# (ten classes, 10% noise, 17 irrelevant segments) has 7 of its segments swapped with irrelevant ones.
# "none" is Agrawal's function 0 throughout.
BEFORE_AFTER = {"agrawal": (0, 2), "sea": (0, 3), "sine": (0, 2), "stagger": (0, 2), "mixed": (0, 1), "led": (0, 7),
                "none": (0, 0)}  # fmt: skip
FUNCTIONS = {
    "agrawal": 10,
    "sea": 4,
    "sine": 4,
    "stagger": 3,
    "mixed": 2,
}  # functions per generator (LED: features drifted)
AGRAWAL_CATEGORIES = {"elevel": "e", "car": "c", "zipcode": "z"}
LED_NOISE = 0.1
HYPERPLANE_MAG_CHANGE = 0.001
HYPERPLANE_NOISE = 0.05
DRIFT_SEED_OFFSET = 1000  # the drift stream's generator gets its own seed, so its rows are new rows


@dataclass(frozen=True)
class StreamSpec:
    """What to replay. ``drift_at`` is a row of the whole stream (base rows included); ``width`` 1
    is an abrupt drift, more is a gradual one over about that many rows."""

    name: str
    seed: int = 1
    rows: int = 40_000
    drift_at: int = 20_000
    width: int = 1
    friedman_type: Literal["gra", "lea"] = "gra"
    csv: Path | None = None
    target: str = TARGET
    demo_drift: bool = False  # csv: inject the sample app's drift at drift_at
    functions: tuple[int, int] | None = None  # generator's function (variant) before and after; None: BEFORE_AFTER

    def __post_init__(self) -> None:
        if self.name not in STREAMS:
            raise ConfigError(f"unknown stream {self.name!r}; choose one of {', '.join(STREAMS)}")
        if self.name == "csv" and self.csv is None:
            raise ConfigError("stream csv needs --csv PATH (and --target COL)")
        if self.width < 1:
            raise ConfigError(f"--width must be 1 (abrupt) or more (gradual), got {self.width}")
        if self.functions is not None and (self.name not in BEFORE_AFTER or self.name == "none"):
            choosable = ", ".join(n for n in BEFORE_AFTER if n != "none")
            raise ConfigError(f"stream {self.name} has no functions to choose; only {choosable} do")
        limit = FUNCTIONS.get(self.name)
        if self.functions is not None and limit is not None and not all(0 <= f < limit for f in self.functions):
            raise ConfigError(f"{self.name}'s functions are 0 to {limit - 1}, got {self.functions}")

    @property
    def kind(self) -> str:
        if self.name in ("none", "hyperplane"):
            return "no drift" if self.name == "none" else "continuous drift"
        return "abrupt" if self.width == 1 else f"gradual ({self.width:,} rows)"

    @property
    def label(self) -> str:
        """A short name for files and headings: ``agrawal-s1-abrupt``."""
        name = self.csv.stem if self.name == "csv" and self.csv is not None else self.name
        kind = "abrupt" if self.width == 1 else f"gradual{self.width}"
        if self.name in ("none", "hyperplane"):
            kind = "nodrift" if self.name == "none" else "rotating"
        if self.functions is not None:
            name += f"-f{self.functions[0]}to{self.functions[1]}"
        return f"{name}-s{self.seed}-{kind}"


@dataclass(frozen=True)
class LabelledStream:
    spec: StreamSpec
    frame: pd.DataFrame  # features plus the target column, in stream order
    target: str
    task: Task
    drifts: tuple[int, ...]  # rows (of the whole stream) where a drift starts; empty: none or continuous
    description: str
    notes: tuple[str, ...] = field(default=())

    def features(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Rows ``start:stop`` as request features: JSON values, missing as None."""
        part = self.frame.iloc[start:stop].drop(columns=[self.target])
        names = [str(c) for c in part.columns]
        return [{n: to_value(v) for n, v in zip(names, row, strict=True)} for row in part.itertuples(index=False)]

    def labels(self, start: int = 0, stop: int | None = None) -> list[Any]:
        return [to_value(v) for v in self.frame[self.target].iloc[start:stop].tolist()]


def make_stream(spec: StreamSpec) -> LabelledStream:
    """The stream of ``spec``: the same rows for the same spec, every time."""
    if spec.name != "csv" and not 0 < spec.drift_at < spec.rows:
        raise ConfigError(f"--drift-at must lie inside the stream (0 < {spec.drift_at} < {spec.rows} rows)")
    if spec.name in BEFORE_AFTER:
        return _classification(spec)
    if spec.name == "hyperplane":
        return _hyperplane(spec)
    if spec.name == "friedman":
        return _friedman(spec)
    if spec.name == "adult":
        return _adult(spec)
    return _csv(spec)


# --- river generators -----------------------------------------------------------------------------


def _take(stream: Iterable[tuple[Mapping[Any, Any], Any]], rows: int) -> Iterator[tuple[Mapping[Any, Any], Any]]:
    return itertools.islice(iter(stream), rows)


def _frame(pairs: Iterable[tuple[Mapping[Any, Any], Any]], rename: Mapping[Any, str] | None = None) -> pd.DataFrame:
    records = []
    for x, y in pairs:
        row = {(rename or {}).get(k, f"x{k}" if isinstance(k, int) else str(k)): v for k, v in x.items()}
        row[TARGET] = y
        records.append(row)
    return pd.DataFrame.from_records(records)


def _concept_drift(
    stream: Iterable[tuple[Mapping[Any, Any], Any]],
    drift_stream: Iterable[tuple[Mapping[Any, Any], Any]],
    position: int,
    width: int,
    seed: int,
) -> Iterator[tuple[Mapping[Any, Any], Any]]:
    """``river.datasets.synth.ConceptDriftStream``'s mix, computed without its overflow: river evaluates
    ``exp(-4 (t - position) / width)``, which overflows a float for an abrupt drift (width 1) more than
    about 180 rows away. Row ``t`` (1-based) comes from the drift stream with probability
    ``1 / (1 + exp(-4 (t - position) / width))``, drawn from ``random.Random(seed)`` as river does."""
    rng = random.Random(seed)
    before, after = iter(stream), iter(drift_stream)
    t = 0
    while True:
        t += 1
        exponent = min(700.0, max(-700.0, -4.0 * (t - position) / width))
        p = 1.0 / (1.0 + math.exp(exponent))
        try:
            yield next(before) if rng.random() > p else next(after)
        except StopIteration:
            return


def _classification(spec: StreamSpec) -> LabelledStream:
    from river.datasets import synth

    def generator(function: int, seed: int) -> Any:
        if spec.name == "sea":
            return synth.SEA(variant=function, seed=seed)
        if spec.name == "sine":
            return synth.Sine(classification_function=function, seed=seed)
        if spec.name == "stagger":
            return synth.STAGGER(classification_function=function, seed=seed)
        if spec.name == "mixed":
            return synth.Mixed(classification_function=function, seed=seed)
        if spec.name == "led":
            return synth.LEDDrift(seed=seed, noise_percentage=LED_NOISE, irrelevant_features=True,
                                  n_drift_features=function)  # fmt: skip
        return synth.Agrawal(classification_function=function, seed=seed)

    before, after = spec.functions or BEFORE_AFTER[spec.name]
    drifting = _concept_drift(
        generator(before, spec.seed),
        generator(after, spec.seed + DRIFT_SEED_OFFSET),
        spec.drift_at,
        spec.width,
        spec.seed,
    )
    frame = _frame(_take(drifting, spec.rows))
    if spec.name in ("agrawal", "none"):
        for column, prefix in AGRAWAL_CATEGORIES.items():
            frame[column] = [f"{prefix}{int(v)}" for v in frame[column]]
    if spec.name == "stagger":
        for column in ("size", "color", "shape"):
            frame[column] = [f"{column[0]}{int(v)}" for v in frame[column]]
    for column in frame.select_dtypes(bool).columns:
        frame[column] = frame[column].astype("int64")
    frame[TARGET] = frame[TARGET].astype("int64")
    task: Task = "multiclass" if spec.name == "led" else "binary"
    what = {"sea": "SEA variant", "sine": "Sine function", "stagger": "STAGGER function", "mixed": "Mixed function",
            "led": "LED, segments drifted:"}.get(spec.name, "Agrawal classification function")  # fmt: skip
    if spec.name == "none":
        description = f"{what} {before} throughout (no drift; the rows after row {spec.drift_at:,} come from a "
        description += "second generator with the same function)"
        drifts: tuple[int, ...] = ()
    else:
        description = f"{what} {before} → {after} at row {spec.drift_at:,} ({spec.kind})"
        drifts = (spec.drift_at,)
    return LabelledStream(spec, frame, TARGET, task, drifts, description)


def _hyperplane(spec: StreamSpec) -> LabelledStream:
    from river.datasets import synth

    stream = synth.Hyperplane(
        seed=spec.seed, n_features=10, mag_change=HYPERPLANE_MAG_CHANGE, noise_percentage=HYPERPLANE_NOISE
    )
    frame = _frame(_take(stream, spec.rows))
    frame[TARGET] = frame[TARGET].astype("int64")
    description = (
        f"rotating hyperplane, 10 features, 2 drifting by {HYPERPLANE_MAG_CHANGE} per row, "
        f"{HYPERPLANE_NOISE:.0%} label noise: drift everywhere, no abrupt point"
    )
    return LabelledStream(spec, frame, TARGET, "binary", (), description)


def _friedman(spec: StreamSpec) -> LabelledStream:
    from river.datasets import synth

    later = spec.rows * 10  # a second (or third) change point beyond the stream: the drift does not recur
    if spec.friedman_type == "lea":
        step = (spec.rows - spec.drift_at) // 3
        positions: tuple[int, ...] = (spec.drift_at, spec.drift_at + step, spec.drift_at + 2 * step)
        stream = synth.FriedmanDrift(drift_type="lea", position=positions, seed=spec.seed)
        description = "Friedman, local expanding abrupt drift at rows " + ", ".join(f"{p:,}" for p in positions)
    elif spec.width > 1:
        positions = (spec.drift_at,)
        stream = synth.FriedmanDrift(
            drift_type="gsg", position=(spec.drift_at, later), transition_window=spec.width, seed=spec.seed
        )
        description = f"Friedman, global gradual drift from row {spec.drift_at:,} over {spec.width:,} rows"
    else:
        positions = (spec.drift_at,)
        stream = synth.FriedmanDrift(drift_type="gra", position=(spec.drift_at, later), seed=spec.seed)
        description = f"Friedman, global abrupt drift at row {spec.drift_at:,}"
    frame = _frame(_take(stream, spec.rows))
    return LabelledStream(spec, frame, TARGET, "regression", positions, description + " (regression)")


# --- files ----------------------------------------------------------------------------------------


def _adult(spec: StreamSpec) -> LabelledStream:
    whole = pd.concat([read_table(ADULT_TRAIN), read_table(ADULT_TEST)], ignore_index=True)
    if spec.rows > len(whole):
        raise ConfigError(f"the Adult data has {len(whole):,} rows; ask for at most that many (--rows)")
    order = np.random.default_rng(spec.seed).permutation(len(whole))[: spec.rows]
    frame = whole.iloc[order].reset_index(drop=True).rename(columns={"income": TARGET})
    frame, description = _inject_demo_drift(frame, TARGET, "binary", spec)
    return LabelledStream(
        spec, frame, TARGET, "binary", (spec.drift_at,), f"Adult (shuffled, seed {spec.seed}): " + description
    )


def _csv(spec: StreamSpec) -> LabelledStream:
    assert spec.csv is not None
    frame = read_table(spec.csv, what="stream file", setting="--csv")
    if spec.target not in frame.columns:
        raise ConfigError(
            f"--target {spec.target!r} is not a column of {spec.csv} ({', '.join(map(str, frame.columns[:20]))})"
        )
    frame = frame[frame[spec.target].notna()].reset_index(drop=True)
    if spec.rows and spec.rows < len(frame):
        frame = frame.iloc[: spec.rows].reset_index(drop=True)
    if not 0 < spec.drift_at < len(frame):
        raise ConfigError(f"--drift-at must lie inside the file (0 < {spec.drift_at} < {len(frame)} rows)")
    task: Task = FeaturePipeline.fit(frame.head(5000), spec.target).task
    description = f"{spec.csv.name}, rows in file order, drift marked at row {spec.drift_at:,}"
    if spec.demo_drift:
        frame, injected = _inject_demo_drift(frame, spec.target, task, spec)
        description = f"{spec.csv.name}, rows in file order: {injected}"
    return LabelledStream(spec, frame, spec.target, task, (spec.drift_at,), description)


def _inject_demo_drift(frame: pd.DataFrame, target: str, task: Task, spec: StreamSpec) -> tuple[pd.DataFrame, str]:
    """The sample app's ``--drift-at`` drift (covariate shift plus concept drift on one segment)."""
    plan = plan_drift(frame, target, task, spec.drift_at, seed=spec.seed)
    names = [str(c) for c in frame.columns if c != target]
    records = []
    for index, row in enumerate(frame.itertuples(index=False)):
        values = dict(zip([str(c) for c in frame.columns], row, strict=True))
        features = {n: to_value(values[n]) for n in names}
        features, label = apply_drift(plan, index, features, to_value(values[target]))
        records.append({**features, target: label})
    out = pd.DataFrame.from_records(records, columns=[*names, target])
    return out, plan.describe()


def with_rows(spec: StreamSpec, rows: int, drift_at: int) -> StreamSpec:
    return replace(spec, rows=rows, drift_at=drift_at)
