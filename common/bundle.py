"""The model bundle: what travels from the trainer to every predictor.

A zip whose members are none of them code: ``model.txt`` (LightGBM's own text format),
``pipeline.json`` (the fitted feature pipeline and its schema), ``meta.json`` (parameters,
metrics, the training-data profile) and, for a model trained on a linear model's scores as well,
``linear.json`` (``common.linear``). Loading parses text and JSON only, so a bundle from the
network cannot execute anything; its sha256 travels in the reload message and is checked first.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson

from streamfit.common.errors import BundleError
from streamfit.common.linear import LinearScore, model_feature_names
from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.profile import ReferenceProfile

BUNDLE_FORMAT = 1
BUNDLE_FILE = "streamfit-bundle.zip"
REQUIRED = ("manifest.json", "model.txt", "pipeline.json", "meta.json")
OPTIONAL = ("linear.json",)
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # a zip bomb is refused before it is inflated


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelBundle:
    booster: lgb.Booster
    pipeline: FeaturePipeline
    meta: Mapping[str, Any] = field(default_factory=dict)
    linear: LinearScore | None = None  # scores appended to the pipeline's matrix before the trees

    @property
    def feature_names(self) -> list[str]:
        """The model's inputs: the pipeline's features, then the linear scores."""
        return model_feature_names(self.pipeline.feature_names, self.linear)

    def model_input(self, matrix: np.ndarray) -> np.ndarray:
        """The pipeline's matrix as the trees read it."""
        return matrix if self.linear is None else self.linear.augment(matrix)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("manifest.json", orjson.dumps({"format": BUNDLE_FORMAT}))
            archive.writestr("model.txt", self.booster.model_to_string())
            archive.writestr("pipeline.json", orjson.dumps(self.pipeline.to_dict()))
            archive.writestr("meta.json", orjson.dumps(dict(self.meta), option=orjson.OPT_SERIALIZE_NUMPY))
            if self.linear is not None:
                archive.writestr("linear.json", orjson.dumps(self.linear.to_dict()))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, sha256: str | None = None) -> ModelBundle:
        if sha256 is not None and sha256_hex(data) != sha256:
            raise BundleError(f"sha256 mismatch: expected {sha256}, got {sha256_hex(data)}")
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = {info.filename: info for info in archive.infolist()}
                for name in REQUIRED:
                    if name not in members:
                        raise BundleError(f"bundle lacks {name}")
                for name in members.keys() & {*REQUIRED, *OPTIONAL}:
                    if members[name].file_size > MAX_MEMBER_BYTES:
                        raise BundleError(f"bundle member {name} is too large ({members[name].file_size} bytes)")
                manifest = orjson.loads(archive.read("manifest.json"))
                if manifest.get("format") != BUNDLE_FORMAT:
                    raise BundleError(f"unsupported bundle format {manifest.get('format')!r}")
                model_text = archive.read("model.txt").decode("utf-8")
                pipeline = FeaturePipeline.from_dict(orjson.loads(archive.read("pipeline.json")))
                meta = orjson.loads(archive.read("meta.json"))
                linear = None
                if "linear.json" in members:
                    linear = LinearScore.from_dict(orjson.loads(archive.read("linear.json")))
        except BundleError:
            raise
        except Exception as exc:
            raise BundleError(f"corrupt bundle: {type(exc).__name__}: {exc}") from exc
        try:
            booster = lgb.Booster(model_str=model_text)
        except Exception as exc:
            raise BundleError(f"LightGBM cannot read the model: {exc}") from exc
        given = len(pipeline.features) + (linear.width if linear else 0)
        if booster.num_feature() != given:
            raise BundleError(f"model expects {booster.num_feature()} features, pipeline gives {given}")
        if linear is not None and max(linear.columns) >= len(pipeline.features):
            raise BundleError(f"linear score reads column {max(linear.columns)} of {len(pipeline.features)}")
        return cls(booster, pipeline, meta, linear)

    def predict_matrix(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        matrix = self.model_input(matrix)
        if num_threads:
            return np.asarray(self.booster.predict(matrix, num_threads=num_threads))
        return np.asarray(self.booster.predict(matrix))

    def predict(self, rows: Sequence[Mapping[str, Any]], num_threads: int = 0) -> tuple[list[Any], list[float]]:
        return self.pipeline.decode(self.predict_matrix(self.pipeline.transform(rows), num_threads))

    def warm_up(self, rows: Sequence[Mapping[str, Any]] | None = None) -> None:
        """One prediction before serving, so that a broken model fails here, not on a batch."""
        sample = list(rows or [{}])
        preds, scores = self.predict(sample)
        if len(preds) != len(sample) or not all(np.isfinite(scores)):
            raise BundleError("warm-up prediction returned non-finite scores")

    @property
    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in dict(self.meta.get("metrics", {})).items()}

    @property
    def profile(self) -> ReferenceProfile | None:
        """The reference profile (``meta.json``'s ``profile``), or None: bundles made before
        profiles existed, or one that does not fit the pipeline, are served without drift checks."""
        data = self.meta.get("profile")
        if not isinstance(data, Mapping):
            return None
        try:
            profile = ReferenceProfile.from_dict(data)
        except (KeyError, TypeError, ValueError):
            return None
        return profile if profile.fits(self.pipeline) else None
