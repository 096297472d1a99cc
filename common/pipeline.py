"""The feature pipeline: one code path from raw values to the model's matrix, for training and
serving alike.

``FeaturePipeline.fit`` reads a data set's columns (numeric vs categorical from the data, the
target named by the user, the task inferred from the target), and ``transform`` turns raw rows,
whether they come from a training file or a request, into the same float matrix:

- a missing value (null, NaN, an empty cell) stays missing (NaN), which LightGBM handles;
- a category never seen in training is treated as missing, not as an error;
- a field the schema does not know is ignored;
- a field the schema needs but the row lacks is missing, or rejected by ``check`` when the
  predictor is told to (``missing_features=reject``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from streamfit.common.errors import ConfigError

Task = Literal["binary", "multiclass", "regression"]
Kind = Literal["numeric", "categorical"]
ClassValue = str | int

MAX_CATEGORIES = 1000  # rarer categories than the 1,000 most frequent are treated as unseen
MAX_CLASSES = 100
MULTICLASS_MAX_INT_LEVELS = 20  # an integer target with more distinct values is a regression


def category_key(value: Any) -> str | None:
    """The one spelling of a categorical value used when fitting and when serving."""
    if value is None:
        return None
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    if isinstance(value, (np.floating, np.integer)):
        return category_key(value.item())
    return str(value)


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: Kind
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeaturePipeline:
    target: str
    task: Task
    features: tuple[FeatureSpec, ...]
    classes: tuple[ClassValue, ...] = ()
    _codes: tuple[dict[str, int], ...] = field(default=(), init=False, repr=False, compare=False)
    _class_index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = tuple({c: i for i, c in enumerate(f.categories)} for f in self.features)
        object.__setattr__(self, "_codes", codes)
        index = {category_key(c): i for i, c in enumerate(self.classes)}
        object.__setattr__(self, "_class_index", index)

    # --- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, frame: pd.DataFrame, target: str) -> FeaturePipeline:
        if target not in frame.columns:
            raise ConfigError(
                f"target column {target!r} is not in the data (columns: {', '.join(map(str, frame.columns[:20]))}); "
                "set --target / STREAMFIT_TARGET"
            )
        y = frame[target].dropna()
        if y.empty:
            raise ConfigError(f"target column {target!r} has no values")
        task, classes = _infer_task(y, target)
        specs = []
        for name in frame.columns:
            if name == target:
                continue
            column = frame[name]
            if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
                specs.append(FeatureSpec(str(name), "numeric"))
            else:
                keys = column.map(category_key, na_action="ignore").dropna()
                counts = keys.value_counts()
                ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CATEGORIES]
                specs.append(FeatureSpec(str(name), "categorical", tuple(str(k) for k, _ in ranked)))
        if not specs:
            raise ConfigError(f"the data has no feature columns besides the target {target!r}")
        return cls(target=target, task=task, features=tuple(specs), classes=classes)

    # --- serving and training: one transform -----------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.features) if f.kind == "categorical"]

    def check(self, features: Mapping[str, Any], reject_missing: bool) -> str | None:
        """Why a request's features cannot be served, or None. Unseen categories are fine."""
        for spec in self.features:
            if spec.name not in features:
                if reject_missing:
                    return (
                        f"missing feature {spec.name!r} (send null for a missing value, or set missing_features=impute)"
                    )
                continue
            value = features[spec.name]
            if (
                spec.kind == "numeric"
                and value is not None
                and (isinstance(value, (bool, str)) or not isinstance(value, (int, float)))
            ):
                return f"feature {spec.name!r} must be a number or null, got {type(value).__name__}"
        return None

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Raw rows (request features) to the model's float matrix."""
        return self._matrix(len(rows), lambda name: [row.get(name) for row in rows])

    def transform_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """A data set's rows to the same matrix, through the same per-column conversion."""
        missing = [None] * len(frame)
        return self._matrix(len(frame), lambda name: frame[name].tolist() if name in frame.columns else missing)

    def _matrix(self, n: int, column_of: Callable[[str], list[Any]]) -> np.ndarray:
        matrix = np.empty((n, len(self.features)), dtype=np.float64)
        nan = math.nan
        for j, spec in enumerate(self.features):
            column = column_of(spec.name)
            if spec.kind == "numeric":
                matrix[:, j] = _numeric(column)
            else:
                codes = self._codes[j]
                matrix[:, j] = [
                    codes.get(v, nan) if type(v) is str else codes.get(category_key(v), nan)  # type: ignore[arg-type]
                    for v in column
                ]
        return matrix

    # --- labels ------------------------------------------------------------------------------
    def encode_label(self, value: Any) -> float | None:
        """The label as the model's target value, or None when it is not a valid label."""
        if self.task == "regression":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return None
            return float(value)
        index = self._class_index.get(category_key(value))  # type: ignore[arg-type]
        return None if index is None else float(index)

    def encode_labels(self, values: Sequence[Any]) -> np.ndarray:
        return np.array([self.encode_label(v) for v in values], dtype=np.float64)

    def decode(self, raw: np.ndarray) -> tuple[list[Any], list[float]]:
        """Model output to (prediction, score) per row, as DESIGN.md defines them."""
        if self.task == "regression":
            values = [float(v) for v in raw]
            return values, values
        if self.task == "binary":
            negative, positive = self.classes
            scores = raw.tolist()
            return [positive if p >= 0.5 else negative for p in scores], scores
        best = raw.argmax(axis=1)
        classes = self.classes
        return [classes[i] for i in best.tolist()], raw.max(axis=1).tolist()

    # --- compatibility and serialisation -------------------------------------------------
    def incompatibility(self, other: FeaturePipeline) -> str | None:
        """Why ``other`` cannot replace this pipeline behind the same clients, or None."""
        if other.task != self.task or other.target != self.target:
            return f"task/target {other.task}/{other.target} differs from serving {self.task}/{self.target}"
        if other.classes != self.classes:
            return f"classes {list(other.classes)} differ from serving {list(self.classes)}"
        mine = {(f.name, f.kind) for f in self.features}
        theirs = {(f.name, f.kind) for f in other.features}
        if mine != theirs:
            diff = sorted(mine.symmetric_difference(theirs))[:5]
            return f"feature schema differs from serving: {diff}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "task": self.task,
            "classes": list(self.classes),
            "features": [{"name": f.name, "kind": f.kind, "categories": list(f.categories)} for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeaturePipeline:
        features = tuple(
            FeatureSpec(str(f["name"]), f["kind"], tuple(str(c) for c in f.get("categories", ())))
            for f in data["features"]
        )
        for f in features:
            if f.kind not in ("numeric", "categorical"):
                raise ValueError(f"unknown feature kind {f.kind!r}")
        if data["task"] not in ("binary", "multiclass", "regression"):
            raise ValueError(f"unknown task {data['task']!r}")
        return cls(str(data["target"]), data["task"], features, tuple(data.get("classes", ())))


def _numeric(column: list[Any]) -> np.ndarray:
    try:
        return np.array(column, dtype=np.float64)  # None becomes NaN
    except (TypeError, ValueError):
        return np.array(
            [v if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan for v in column],
            dtype=np.float64,
        )


def _infer_task(y: pd.Series, target: str) -> tuple[Task, tuple[ClassValue, ...]]:
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    distinct = y.nunique()
    if distinct < 2:
        raise ConfigError(f"target column {target!r} has a single value ({y.iloc[0]!r}): nothing to learn")
    if numeric:
        integral = bool(np.all(np.mod(y.to_numpy(dtype=np.float64), 1) == 0))
        if not integral or distinct > MULTICLASS_MAX_INT_LEVELS:
            return "regression", ()
        classes: list[ClassValue] = sorted(int(v) for v in y.unique())
    else:
        keys = {category_key(v) for v in y.unique()}
        if len(keys) > MAX_CLASSES:
            raise ConfigError(
                f"target column {target!r} has {len(keys)} distinct text values; a classification target "
                f"may have at most {MAX_CLASSES} (is it the right column?)"
            )
        classes = sorted(k for k in keys if k is not None)
    return ("binary" if len(classes) == 2 else "multiclass"), tuple(classes)


def read_table(path: Path, what: str = "data set", setting: str = "--data / STREAMFIT_DATA") -> pd.DataFrame:
    """Read a CSV (optionally compressed) or Parquet file, with an error that names the setting."""
    if not path.exists():
        raise ConfigError(f"{what} {str(path)!r} does not exist; set {setting}")
    try:
        if path.suffix == ".parquet" or path.name.endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path, skipinitialspace=True, na_values=["?"])
    except Exception as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc}") from exc
