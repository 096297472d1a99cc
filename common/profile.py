"""The reference profile a bundle carries: how the data the model was trained on looked, so that
a predictor can tell when what it serves no longer looks like it, and how well the model did on
its holdout, so that it can tell when the model no longer does as well.

The profile is taken on the pipeline's matrix (floats: numbers, category codes, NaN for missing),
which is exactly what the predictor builds for every batch, so binning a batch is a few numpy
calls on that matrix and never a Python loop over rows:

- a numeric feature gets the quantile edges of the reference (at most ``NUMERIC_BINS`` bins, fewer
  when values repeat), open at both ends so that a value beyond the reference lands in an end bin;
- a categorical feature gets one bin per category code up to ``MAX_CATEGORY_BINS``, the rarer
  codes share the last one;
- every feature has one more bin for missing values (and unseen categories, which the pipeline
  makes missing).

The population stability index of a window against the reference is then
``sum((a - e) * ln(a / e))`` over the bins of a feature, with proportions floored at ``PSI_FLOOR``
so that an empty bin counts as rare rather than infinitely surprising.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from streamfit.common.pipeline import FeaturePipeline

PROFILE_FORMAT = 1
NUMERIC_BINS = 10
MAX_CATEGORY_BINS = 20
PSI_FLOOR = 1e-4
REFERENCE_ROWS = 5000  # newest training rows the profile is taken on (see trainer.drift.reference_rows)


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    kind: str  # numeric or categorical
    edges: tuple[float, ...]  # numeric: inner bin edges (bins = len(edges) + 1, then missing)
    categories: int  # categorical: codes with a bin of their own (then "other", then missing)
    expected: tuple[float, ...]  # reference share of each bin, missing last

    @property
    def bins(self) -> int:
        return len(self.expected)


class _Binner:
    """The profile's bins as arrays, so that a batch is binned in a few calls: numeric columns by
    comparing with a padded matrix of edges, categorical ones by clipping their codes."""

    def __init__(self, features: tuple[FeatureProfile, ...]) -> None:
        self.width = max((_bins(f) for f in features), default=1)
        self.offsets = np.arange(len(features), dtype=np.int64) * self.width
        self.numeric = np.array([j for j, f in enumerate(features) if f.kind == "numeric"], dtype=np.int64)
        self.categorical = np.array([j for j, f in enumerate(features) if f.kind != "numeric"], dtype=np.int64)
        numeric = [features[j] for j in self.numeric]
        longest = max((len(f.edges) for f in numeric), default=0)
        self.edges = np.full((len(numeric), max(1, longest)), np.inf)
        for i, f in enumerate(numeric):
            self.edges[i, : len(f.edges)] = f.edges
        self.numeric_missing = np.array([len(f.edges) + 1 for f in numeric], dtype=np.int16)
        self.kept = np.array([features[j].categories for j in self.categorical], dtype=np.float64)
        self.n_features = len(features)

    def bin(self, matrix: np.ndarray) -> np.ndarray:
        out = np.empty((len(matrix), self.n_features), dtype=np.int16)
        if len(self.numeric):
            values = matrix[:, self.numeric]
            index = (values[:, :, None] >= self.edges[None, :, :]).sum(axis=2)  # edges <= value, as searchsorted right
            out[:, self.numeric] = np.where(np.isnan(values), self.numeric_missing, index)
        if len(self.categorical):
            codes = matrix[:, self.categorical]
            # codes beyond the last kept bin share "other" (= kept); missing goes to the bin after it
            out[:, self.categorical] = np.where(np.isnan(codes), self.kept + 1, np.minimum(codes, self.kept))
        return out


@dataclass(frozen=True)
class ReferenceProfile:
    features: tuple[FeatureProfile, ...]
    rows: int  # reference rows the shares come from
    holdout: Mapping[str, float]  # the model's holdout metrics (loss, accuracy or mae, rows)

    @classmethod
    def build(
        cls, pipeline: FeaturePipeline, matrix: np.ndarray, holdout: Mapping[str, float] | None = None
    ) -> ReferenceProfile:
        if matrix.ndim != 2 or matrix.shape[1] != len(pipeline.features):
            raise ValueError(f"matrix of shape {matrix.shape} does not fit {len(pipeline.features)} features")
        specs = []
        for j, spec in enumerate(pipeline.features):
            column = matrix[:, j]
            if spec.kind == "numeric":
                present = column[~np.isnan(column)]
                quantiles = np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]
                edges = np.unique(np.quantile(present, quantiles)) if len(present) else np.empty(0)
                specs.append(FeatureProfile(spec.name, "numeric", tuple(float(e) for e in edges), 0, ()))
            else:
                specs.append(
                    FeatureProfile(spec.name, "categorical", (), min(len(spec.categories), MAX_CATEGORY_BINS), ())
                )
        skeleton = cls(tuple(specs), len(matrix), dict(holdout or {}))
        counts = skeleton.counts(skeleton.bin(matrix))
        shares = counts / max(1, len(matrix))
        features = tuple(
            FeatureProfile(f.name, f.kind, f.edges, f.categories, tuple(float(s) for s in shares[j, : _bins(f)]))
            for j, f in enumerate(skeleton.features)
        )
        return cls(features, len(matrix), dict(holdout or {}))

    # --- binning, vectorised over a batch -------------------------------------------------------
    @property
    def width(self) -> int:
        """Bins of the widest feature: the second dimension of ``counts``."""
        return self._binner.width

    def bin(self, matrix: np.ndarray) -> np.ndarray:
        """The bin of every cell (rows x features, int16): a few numpy calls whatever the width."""
        return self._binner.bin(matrix)

    def counts(self, bins: np.ndarray) -> np.ndarray:
        """Rows per (feature, bin) of a binned matrix: one bincount for the whole batch."""
        binner = self._binner
        n_features, width = len(self.features), binner.width
        if bins.size == 0:
            return np.zeros((n_features, width), dtype=np.int64)
        flat = bins.astype(np.int64) + binner.offsets
        return np.bincount(flat.ravel(), minlength=n_features * width).reshape(n_features, width)

    @cached_property
    def _binner(self) -> _Binner:
        return _Binner(self.features)

    def psi(self, counts: np.ndarray) -> np.ndarray:
        """The population stability index of every feature for a window's ``counts``."""
        out = np.zeros(len(self.features))
        for j, feature in enumerate(self.features):
            expected = np.maximum(np.asarray(feature.expected), PSI_FLOOR)
            row = counts[j, : feature.bins].astype(np.float64)
            actual = np.maximum(row / max(1.0, row.sum()), PSI_FLOOR)
            out[j] = float(np.sum((actual - expected) * np.log(actual / expected)))
        return out

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    # --- serialisation (inside the bundle's meta.json) -----------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "rows": self.rows,
            "holdout": dict(self.holdout),
            "features": [
                {"name": f.name, "kind": f.kind, "edges": list(f.edges), "categories": f.categories,
                 "expected": list(f.expected)}
                for f in self.features
            ],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"unsupported profile format {data.get('format')!r}")
        features = []
        for f in data["features"]:
            feature = FeatureProfile(
                str(f["name"]), str(f["kind"]), tuple(float(e) for e in f["edges"]), int(f["categories"]),
                tuple(float(s) for s in f["expected"]),
            )  # fmt: skip
            if feature.kind not in ("numeric", "categorical") or feature.bins != _bins(feature):
                raise ValueError(f"profile of feature {feature.name!r} is inconsistent")
            features.append(feature)
        holdout = {str(k): float(v) for k, v in dict(data.get("holdout", {})).items()}
        return cls(tuple(features), int(data["rows"]), holdout)

    def fits(self, pipeline: FeaturePipeline) -> bool:
        """Whether this profile describes the columns of ``pipeline``'s matrix, in order."""
        return [(f.name, f.kind) for f in self.features] == [(s.name, s.kind) for s in pipeline.features]


def _bins(feature: FeatureProfile) -> int:
    """Bins a feature has, missing included."""
    return len(feature.edges) + 2 if feature.kind == "numeric" else feature.categories + 2
