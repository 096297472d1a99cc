"""The rows the sample app streams: a data set read once, each row turned into JSON-ready values.

A request carries plain JSON values only: a missing cell (NaN, None, ``pd.NA``, NaT) becomes null,
numpy scalars become Python numbers, and infinities become null (the message schema refuses them).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from streamfit.common.errors import ConfigError
from streamfit.common.pipeline import FeaturePipeline, read_table

# A JSON value of a feature or a label, as ``common.messages.Request`` accepts it.
Value = bool | int | float | str | None
Task = Literal["binary", "multiclass", "regression"]

FILE_SETTING = "--file (or --test-data / STREAMFIT_TEST_DATA, --data / STREAMFIT_DATA)"


def to_value(value: Any) -> Value:
    """One cell as a JSON value: missing → None, numpy → Python, non-finite → None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, (dt.datetime, dt.date, np.datetime64)):
        if pd.isna(value):
            return None
        return pd.Timestamp(value).isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # array-likes: not a scalar cell, fall through to text
        pass
    return str(value)


def row_features(row: Mapping[str, Any], target: str) -> dict[str, Value]:
    """A row's features as a request carries them: every column but the target."""
    return {str(name): to_value(value) for name, value in row.items() if name != target}


@dataclass(frozen=True)
class Source:
    """A data set held column-wise as Python lists, so that a row costs a dict, not a pandas call."""

    path: Path
    target: str
    task: Task
    frame: pd.DataFrame
    _columns: tuple[tuple[str, list[Any]], ...]
    _labels: list[Any]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, target: str, path: Path = Path("<frame>")) -> Source:
        if target not in frame.columns:
            raise ConfigError(
                f"target column {target!r} is not in {str(path)!r} (columns: "
                f"{', '.join(map(str, frame.columns[:20]))}); set --target / STREAMFIT_TARGET"
            )
        if frame.empty:
            raise ConfigError(f"{str(path)!r} has no rows; set {FILE_SETTING}")
        task = FeaturePipeline.fit(frame, target).task  # also refuses a target with one value
        columns = tuple((str(name), frame[name].tolist()) for name in frame.columns if name != target)
        return cls(path, target, task, frame, columns, frame[target].tolist())

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def feature_names(self) -> list[str]:
        return [name for name, _ in self._columns]

    def row(self, position: int) -> tuple[dict[str, Value], Value]:
        """(features, true label) of one row of the file."""
        features = {name: to_value(values[position]) for name, values in self._columns}
        return features, to_value(self._labels[position])


def load_source(path: Path, target: str) -> Source:
    """Read the file to stream; a missing file or target is one clear ``ConfigError``."""
    frame = read_table(path, what="file to stream", setting=FILE_SETTING)
    return Source.from_frame(frame, target, path)
