"""The reference profile: binning, PSI, serialisation, and bundles with and without one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamfit.common.bundle import ModelBundle
from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.profile import NUMERIC_BINS, ReferenceProfile
from tests.predictor.conftest import synthetic_frame, train


def _pipeline_and_matrix(rows: int = 2000, seed: int = 0) -> tuple[FeaturePipeline, np.ndarray]:
    frame = synthetic_frame(rows, seed)
    pipeline = FeaturePipeline.fit(frame, "y")
    return pipeline, pipeline.transform_frame(frame)


def test_numeric_bins_are_quantiles_and_open_at_both_ends() -> None:
    pipeline, matrix = _pipeline_and_matrix()
    profile = ReferenceProfile.build(pipeline, matrix, {"accuracy": 0.9})
    x1 = profile.features[0]
    assert x1.kind == "numeric" and len(x1.edges) == NUMERIC_BINS - 1
    assert np.allclose(x1.expected[:-1], 0.1, atol=0.01) and x1.expected[-1] == 0.0  # deciles, no missing
    probe = np.array([[-1e9, 0.0, 0.0], [1e9, 0.0, 0.0], [np.nan, 0.0, np.nan]])
    bins = profile.bin(probe)
    assert bins[0, 0] == 0 and bins[1, 0] == NUMERIC_BINS - 1  # beyond the reference: the end bins
    assert bins[2, 0] == NUMERIC_BINS and bins[2, 2] == profile.features[2].categories + 1  # missing: last bin


def test_psi_is_small_on_the_same_population_and_large_on_a_shifted_one() -> None:
    pipeline, matrix = _pipeline_and_matrix()
    profile = ReferenceProfile.build(pipeline, matrix)
    _, same = _pipeline_and_matrix(seed=1)
    assert profile.psi(profile.counts(profile.bin(same))).max() < 0.05
    shifted = same.copy()
    shifted[:, 1] += 1.5  # x2 moves; x1 and the colour do not
    psi = profile.psi(profile.counts(profile.bin(shifted)))
    assert psi[1] > 0.5 and psi[0] < 0.05 and psi[2] < 0.05


def test_unseen_and_rare_categories_have_bins() -> None:
    frame = pd.DataFrame({"c": [f"k{i % 30}" for i in range(600)], "y": ["a", "b"] * 300})
    pipeline = FeaturePipeline.fit(frame, "y")
    profile = ReferenceProfile.build(pipeline, pipeline.transform_frame(frame))
    feature = profile.features[0]
    assert feature.categories == 20 and feature.bins == 22  # 20 kept, "other", missing
    bins = profile.bin(pipeline.transform([{"c": "k0"}, {"c": "k29"}, {"c": "never-seen"}]))
    assert bins[:, 0].tolist() == [0, 20, 21]
    assert abs(sum(feature.expected) - 1.0) < 1e-9


def test_profile_round_trips_inside_a_bundle() -> None:
    bundle = train()
    pipeline = bundle.pipeline
    profile = ReferenceProfile.build(pipeline, pipeline.transform_frame(synthetic_frame()), {"accuracy": 0.8})
    with_profile = ModelBundle(bundle.booster, pipeline, {**bundle.meta, "profile": profile.to_dict()})
    loaded = ModelBundle.from_bytes(with_profile.to_bytes())
    assert loaded.profile == profile
    assert loaded.profile is not None and loaded.profile.holdout == {"accuracy": 0.8}


def test_bundles_without_a_profile_or_with_a_foreign_one_still_load() -> None:
    old = ModelBundle.from_bytes(train().to_bytes())  # meta has no profile: a bundle from before
    assert old.profile is None
    other = train(extra=True)
    foreign = ReferenceProfile.build(other.pipeline, other.pipeline.transform_frame(synthetic_frame(extra=True)))
    mixed = ModelBundle(old.booster, old.pipeline, {"profile": foreign.to_dict()})
    assert ModelBundle.from_bytes(mixed.to_bytes()).profile is None  # does not describe this pipeline
    broken = ModelBundle(old.booster, old.pipeline, {"profile": {"format": 99}})
    assert ModelBundle.from_bytes(broken.to_bytes()).profile is None
