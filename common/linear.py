"""A linear model's scores as extra model inputs: what lets trees draw a slanted boundary.

LightGBM splits one feature at a time, so a label rule such as ``x1 + x2 <= 7`` costs it a staircase
of many splits, learnt from many rows. A linear model learns that rule from a few hundred. A
``LinearScore`` holds such a model (fitted by the trainer, ``trainer.linear``) as plain numbers:
it standardises the pipeline's numeric columns, and appends one score per output (one for binary
and regression, one per class for multiclass) to the pipeline's matrix. The trees then split on
the score where it helps and ignore it where it does not. A model that uses one carries it in its
bundle (``linear.json``), and every prediction goes through ``augment``: training and serving see
the same columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = 1


def standardise(values: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Numeric columns centred and scaled; a missing (or infinite) value becomes 0, the mean."""
    z = (values - mean) / scale
    return np.asarray(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float64)


def model_feature_names(pipeline_names: list[str], linear: LinearScore | None) -> list[str]:
    """A model's inputs: the pipeline's features, then the linear scores (if it reads any)."""
    return pipeline_names + list(linear.names if linear else ())


@dataclass(frozen=True)
class LinearScore:
    columns: tuple[int, ...]  # the pipeline matrix's numeric columns it reads
    mean: tuple[float, ...]  # per column: a missing value counts as the mean
    scale: tuple[float, ...]
    coef: tuple[tuple[float, ...], ...]  # one row per score
    intercept: tuple[float, ...]
    names: tuple[str, ...]  # the scores' feature names

    def __post_init__(self) -> None:
        width = len(self.columns)
        if not width or len(self.mean) != width or len(self.scale) != width:
            raise ValueError("a linear score needs one mean and one scale per column, and at least one column")
        if not self.coef or any(len(row) != width for row in self.coef):
            raise ValueError("a linear score needs one coefficient per column in every row")
        if len(self.intercept) != len(self.coef) or len(self.names) != len(self.coef):
            raise ValueError("a linear score needs one intercept and one name per row of coefficients")
        if not all(np.isfinite(v) for v in (*self.mean, *self.intercept, *(c for row in self.coef for c in row))):
            raise ValueError("a linear score's numbers must be finite")
        if not all(s > 0 for s in self.scale):
            raise ValueError("a linear score's scales must be positive")

    @property
    def width(self) -> int:
        """The columns it appends."""
        return len(self.coef)

    def standardised(self, matrix: np.ndarray) -> np.ndarray:
        return standardise(matrix[:, list(self.columns)], np.asarray(self.mean), np.asarray(self.scale))

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """One column per score, one row per row of ``matrix`` (the pipeline's matrix)."""
        return np.asarray(self.standardised(matrix) @ np.asarray(self.coef).T + np.asarray(self.intercept))

    def augment(self, matrix: np.ndarray) -> np.ndarray:
        """The pipeline's matrix with the scores appended: what the model was trained on."""
        return np.hstack([matrix, self.scores(matrix)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "columns": list(self.columns), "mean": list(self.mean), "scale": list(self.scale),
            "coef": [list(row) for row in self.coef], "intercept": list(self.intercept), "names": list(self.names),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearScore:
        if data.get("format") != FORMAT:
            raise ValueError(f"unsupported linear score format {data.get('format')!r}")

        def floats(values: Sequence[Any]) -> tuple[float, ...]:
            return tuple(float(v) for v in values)

        return cls(
            columns=tuple(int(c) for c in data["columns"]), mean=floats(data["mean"]), scale=floats(data["scale"]),
            coef=tuple(floats(row) for row in data["coef"]), intercept=floats(data["intercept"]),
            names=tuple(str(n) for n in data["names"]),
        )  # fmt: skip
