"""The drift the sample app injects with ``--drift-at K``: a pure function of (plan, request index, row).

From request K on, one segment of the rows changes in two ways at once:

- covariate shift: one numeric feature changes scale or offset, as when an upstream system starts
  reporting a quantity in another unit (on Adult: ``hours_per_week`` arrives per month, ×52/12);
- concept drift: the label's relation to the features changes inside the segment (binary: the two
  classes swap; multiclass: each class becomes the next one; regression: the target is mirrored
  within its range).

Rows outside the segment, and every row before K, pass unchanged. The segment stays identifiable
from the features (its defining column, and the shifted feature now lies beyond its usual range),
and the new relation is a one-to-one remap of the old one, so the task is as learnable as before;
only a model frozen on the old data is wrong on the segment. On Adult the segment is
``marital_status == "Married-civ-spouse"`` (45% of the rows); on any other data set it is the most
frequent value of the categorical column whose top value is closest to 40% of the rows (else the
upper half of a numeric column), and the shifted feature is the numeric column most correlated
with the target, moved up by its range.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from streamfit.common.errors import ConfigError
from streamfit.common.pipeline import category_key
from streamfit.sample_app.source import Task, Value, to_value

SegmentKind = Literal["equals", "above", "all"]

# On the shipped Adult data the drift tells a story a reader recognises.
ADULT_SEGMENT = ("marital_status", "Married-civ-spouse")
ADULT_FEATURE = ("hours_per_week", 52 / 12, "is reported per month instead of per week")
TARGET_SEGMENT_SHARE = 0.4


@dataclass(frozen=True)
class Segment:
    """The rows that drift: ``column == value``, ``column > threshold``, or every row."""

    kind: SegmentKind
    column: str | None = None
    value: str | None = None  # the category key, for "equals"
    threshold: float | None = None  # for "above"

    def contains(self, features: Mapping[str, Any]) -> bool:
        if self.kind == "all" or self.column is None:
            return True
        cell = features.get(self.column)
        if self.kind == "equals":
            return cell is not None and category_key(cell) == self.value
        number = _number(cell)
        return number is not None and self.threshold is not None and number > self.threshold

    def describe(self) -> str:
        if self.kind == "equals":
            return f"rows with {self.column} = {self.value!r}"
        if self.kind == "above":
            return f"rows with {self.column} > {self.threshold:g}"
        return "every row"


@dataclass(frozen=True)
class DriftPlan:
    start: int  # the first request index that drifts (K)
    target: str
    task: Task
    segment: Segment
    segment_share: float  # share of the file's rows in the segment
    feature: str | None = None  # the numeric feature that shifts (None: no numeric column)
    scale: float = 1.0
    offset: float = 0.0
    feature_story: str = ""
    label_map: Mapping[str, Value] = field(default_factory=dict)  # classification: key → new label
    mirror: float | None = None  # regression: y → mirror - y
    label_share: float = 1.0  # share of segment rows whose label changes (seeded per index)
    seed: int = 0

    def describe(self) -> str:
        parts = [f"from request {self.start:,} on, {self.segment.describe()} ({self.segment_share:.0%} of the file)"]
        if self.feature is not None:
            parts.append(f"{self.feature} {self.feature_story}")
        if self.label_map:
            if len(self.label_map) == 2:
                a, b = self.label_map
                change = f"swapped ({a!r} ↔ {b!r})"
            else:
                change = "moved to the next class (" + " → ".join(map(repr, self.label_map)) + " → …)"
        else:
            change = f"mirrored within its range ({self.target} → {self.mirror:g} − {self.target})"
        share = "" if self.label_share >= 1 else f" for {self.label_share:.0%} of them"
        parts.append(f"their {self.target} label is {change}{share}")
        return ": ".join(parts[:1]) + ": " + "; ".join(parts[1:])


def plan_drift(
    frame: pd.DataFrame,
    target: str,
    task: Task,
    start: int,
    *,
    seed: int = 0,
    label_share: float = 1.0,
    segment: str | None = None,
    feature: str | None = None,
) -> DriftPlan:
    """Choose the segment, the shifted feature and the label change from the data.

    ``segment`` ("COLUMN=VALUE") and ``feature`` (a numeric column) override the choice.
    """
    if start < 0:
        raise ConfigError(f"--drift-at must be 0 or more, got {start}")
    if not 0 <= label_share <= 1:
        raise ConfigError(f"--drift-share must be between 0 and 1, got {label_share}")
    features = frame.drop(columns=[target])
    chosen = _choose_segment(features, segment)
    name_in_row = chosen.column or ""
    mask = np.array([chosen.contains({name_in_row: v}) for v in _column(features, chosen.column)])
    share = float(mask.mean()) if len(mask) else 0.0
    name, scale, offset, story = _choose_feature(features, frame[target], task, chosen.column, feature)
    label_map: dict[str, Value] = {}
    mirror = None
    y = frame[target].dropna()
    if task == "regression":
        lo, hi = float(y.min()), float(y.max())
        mirror = lo + hi
    else:
        by_key = {key: to_value(v) for v in y.unique() if (key := category_key(v)) is not None}
        keys = sorted(by_key)
        label_map = {k: by_key[keys[(i + 1) % len(keys)]] for i, k in enumerate(keys)}
    return DriftPlan(
        start=start,
        target=target,
        task=task,
        segment=chosen,
        segment_share=share,
        feature=name,
        scale=scale,
        offset=offset,
        feature_story=story,
        label_map=label_map,
        mirror=mirror,
        label_share=label_share,
        seed=seed,
    )


def apply_drift(
    plan: DriftPlan, index: int, features: Mapping[str, Value], label: Value
) -> tuple[dict[str, Value], Value]:
    """The row as request ``index`` carries it. Never mutates its input."""
    out = dict(features)
    if index < plan.start or not plan.segment.contains(features):
        return out, label
    if plan.feature is not None:
        number = _number(out.get(plan.feature))
        if number is not None:
            shifted = number * plan.scale + plan.offset
            keep_int = isinstance(out[plan.feature], int) and float(shifted).is_integer()
            out[plan.feature] = int(shifted) if keep_int else float(f"{shifted:.10g}")
    if label is None:
        return out, label
    if plan.label_share < 1 and random.Random(f"{plan.seed}:{index}").random() >= plan.label_share:
        return out, label
    if plan.mirror is not None:
        number = _number(label)
        if number is None:
            return out, label
        mirrored = plan.mirror - number
        return out, int(mirrored) if isinstance(label, int) and mirrored.is_integer() else mirrored
    key = category_key(label)
    return out, plan.label_map.get(key, label) if key is not None else label


# --- choosing from the data ---------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _is_numeric(column: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column))


def _column(frame: pd.DataFrame, name: str | None) -> list[Any]:
    return [None] * len(frame) if name is None else [to_value(v) for v in frame[name].tolist()]


def _choose_segment(features: pd.DataFrame, override: str | None) -> Segment:
    if override is not None:
        column, sep, value = override.partition("=")
        if not sep or column not in features.columns:
            raise ConfigError(
                f"--drift-segment {override!r} must be COLUMN=VALUE with a feature column "
                f"(columns: {', '.join(map(str, features.columns[:20]))})"
            )
        return Segment("equals", column, value)
    column, value = ADULT_SEGMENT
    if column in features.columns and (features[column] == value).any():
        return Segment("equals", column, value)
    best: tuple[float, str, str] | None = None
    for name in features.columns:
        if _is_numeric(features[name]):
            continue
        keys = features[name].map(category_key, na_action="ignore").dropna()
        counts = keys.value_counts()
        if len(counts) < 2:
            continue
        top = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[0]
        distance = abs(top[1] / len(features) - TARGET_SEGMENT_SHARE)
        if best is None or distance < best[0]:
            best = (distance, str(name), str(top[0]))
    if best is not None:
        return Segment("equals", best[1], best[2])
    for name in features.columns:
        column_values = pd.to_numeric(features[name], errors="coerce").dropna()
        if not _is_numeric(features[name]) or column_values.nunique() < 2:
            continue
        threshold = float(column_values.median())
        if 0.1 <= float((column_values > threshold).mean()) <= 0.9:
            return Segment("above", str(name), threshold=threshold)
    return Segment("all")


def _choose_feature(
    features: pd.DataFrame,
    y: pd.Series,
    task: Task,
    segment_column: str | None,
    override: str | None,
) -> tuple[str | None, float, float, str]:
    if override is not None:
        if override not in features.columns or not _is_numeric(features[override]):
            raise ConfigError(f"--drift-feature {override!r} must be a numeric feature column")
        return (override, *_offset_by_range(features[override]))
    name, scale, story = ADULT_FEATURE
    if name in features.columns and _is_numeric(features[name]) and name != segment_column:
        return name, scale, 0.0, f"{story} (×{scale:.2f})"
    candidates = [str(c) for c in features.columns if c != segment_column and _is_numeric(features[c])]
    if not candidates:
        return None, 1.0, 0.0, ""
    if task == "regression":
        encoded = pd.to_numeric(y, errors="coerce")
    else:
        keys = y.map(category_key, na_action="ignore")
        encoded = keys.map({k: i for i, k in enumerate(sorted(keys.dropna().unique()))})

    def strength(column: str) -> tuple[float, int]:
        values = features[column].astype("float64")
        corr = values.corr(encoded.astype("float64")) if values.nunique() > 1 else math.nan
        return (0.0 if math.isnan(corr) else abs(corr), int(values.nunique()))

    chosen = max(candidates, key=strength)
    return (chosen, *_offset_by_range(features[chosen]))


def _offset_by_range(column: pd.Series) -> tuple[float, float, str]:
    values = pd.to_numeric(column, errors="coerce").dropna()
    span = float(values.max() - values.min()) if len(values) else 0.0
    offset = span if span > 0 and math.isfinite(span) else 1.0
    return 1.0, offset, f"is shifted up by {offset:g}, the width of its range in the file"
