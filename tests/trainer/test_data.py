"""The pure data rules: time-ordered holdout, window, recency weights, validation, assembly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.settings import load_settings
from streamfit.trainer.data import (
    BaseData,
    assemble,
    data_hash,
    holdout_start,
    invalid_observation,
    load_base,
    recency_weights,
    select_observations,
    window_start,
)


def test_holdout_is_the_newest_share() -> None:
    assert holdout_start(100, 0.2) == 80
    assert holdout_start(9, 0.2) == 8
    assert holdout_start(4, 0.2) == 4  # too few to hold any out
    assert holdout_start(0, 0.2) == 0
    with pytest.raises(ValueError):
        holdout_start(10, 1.0)


def test_window_keeps_the_newest() -> None:
    assert window_start(100, None) == 0
    assert window_start(100, 30) == 70
    assert window_start(10, 30) == 0


def test_recency_weights_halve_every_half_life() -> None:
    w = recency_weights(5, half_life=2.0, newest_weight=3.0)
    assert w[-1] == pytest.approx(3.0)
    assert w[-3] == pytest.approx(1.5)
    assert w[0] == pytest.approx(0.75)
    assert np.all(np.diff(w) > 0)  # oldest first, increasing
    assert np.all(recency_weights(4, None, 2.0) == 2.0)
    assert recency_weights(0, 10.0, 3.0).size == 0


def frame(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "x": rng.normal(size=rows), "colour": rng.choice(["red", "blue"], rows),
        "label": rng.choice(["no", "yes"], rows),
    })  # fmt: skip


def test_invalid_observations_name_the_problem() -> None:
    pipeline = FeaturePipeline.fit(frame(), "label")
    assert invalid_observation(pipeline, {"x": 1.0, "colour": "red"}, "yes", True) is None
    assert invalid_observation(pipeline, {"x": 1.0, "colour": "green"}, "yes", True) is None  # unseen: missing
    assert "not a class" in str(invalid_observation(pipeline, {"x": 1.0, "colour": "red"}, "maybe", True))
    assert "must be a number" in str(invalid_observation(pipeline, {"x": "abc", "colour": "red"}, "no", True))
    assert "missing feature" in str(invalid_observation(pipeline, {"x": 1.0}, "no", True))
    assert invalid_observation(pipeline, {"x": 1.0}, "no", False) is None  # impute mode
    assert "no feature of the schema" in str(invalid_observation(pipeline, {"y": 1}, "no", False))
    regression = FeaturePipeline.fit(pd.DataFrame({"x": [1.0, 2.0, 3.5], "v": [0.5, 1.5, 2.25]}), "v")
    assert "finite number" in str(invalid_observation(regression, {"x": 1.0}, "high", True))


def test_observations_are_time_ordered_deduplicated_and_filtered() -> None:
    pipeline = FeaturePipeline.fit(frame(), "label")
    features = [{"x": float(i), "colour": "red"} for i in range(5)]
    labels = ["yes", "no", "maybe", "yes", "no"]
    observed_at = [5.0, 1.0, 3.0, 2.0, 1.0]  # read order is not time order
    ids = ["a", "b", "c", "a", "e"]  # "a" twice: the earlier-observed copy is kept
    obs, invalid = select_observations(pipeline, features, labels, observed_at, ids, True)
    assert invalid == 1
    assert [f["x"] for f in obs.features] == [1.0, 4.0, 3.0]  # b@1, e@1 (read later), a@2 (copy at 5 dropped)
    assert list(obs.observed_at) == [1.0, 1.0, 2.0]


def base_data(rows: int, test: pd.DataFrame | None) -> BaseData:
    data = frame(rows)
    return BaseData(FeaturePipeline.fit(data, "label"), data, test, "memory")


def observations(pipeline: FeaturePipeline, n: int) -> tuple:  # type: ignore[type-arg]
    features = [{"x": float(i), "colour": "blue"} for i in range(n)]
    labels = ["yes" if i % 2 else "no" for i in range(n)]
    return select_observations(
        pipeline, features, labels, [float(i) for i in range(n)], [str(i) for i in range(n)], True
    )


def test_assemble_holds_out_the_newest_and_weights_the_rest(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, holdout_share=0.2, half_life=10.0, observation_weight=3.0, window=None)
    base = base_data(60, test=frame(20))
    obs, invalid = observations(base.pipeline, 50)
    data = assemble(base, obs, invalid, settings)
    assert (data.rows_base, data.rows_observations, data.rows_observations_holdout) == (60, 40, 10)
    assert data.rows == 100 and len(data.holdout) == 20 + 10
    assert [f["x"] for f in data.holdout.observations.features] == [float(i) for i in range(40, 50)]
    assert np.all(data.weight[:60] == 1.0)
    assert data.weight[-1] == pytest.approx(3.0) and data.weight[-11] == pytest.approx(1.5)
    x, y = data.holdout.matrix(base.pipeline)
    assert x.shape == (30, 2) and not np.isnan(y).any()

    windowed = assemble(base, obs, invalid, settings.model_copy(update={"window": 15}))
    assert windowed.rows_observations == 15 and windowed.rows == 75
    assert windowed.hash != data.hash


def test_without_observations_or_test_split_a_random_share_of_base_rows_is_held_out(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, holdout_share=0.25, seed=3)
    base = base_data(200, test=None)
    obs, invalid = observations(base.pipeline, 0)
    data = assemble(base, obs, invalid, settings)
    assert data.holdout.base is not None and len(data.holdout) == len(data.holdout.base)
    assert data.rows + len(data.holdout) == 200 and 30 < len(data.holdout) < 70
    again = assemble(base, obs, invalid, settings)
    assert again.hash == data.hash  # seeded: the same rows every time


def test_data_hash_follows_rows_labels_and_weights() -> None:
    pipeline = FeaturePipeline.fit(frame(), "label")
    x, y, w = np.ones((3, 2)), np.array([0.0, 1.0, 0.0]), np.ones(3)
    h = data_hash(pipeline, x, y, w)
    assert h == data_hash(pipeline, x.copy(), y.copy(), w.copy())
    assert h != data_hash(pipeline, x, y, w * 2)
    assert h != data_hash(pipeline, x, 1 - y, w)


def test_load_base_reuses_unchanged_files(tmp_path: Path) -> None:
    path = tmp_path / "base.csv"
    frame(40).to_csv(path, index=False)
    settings = load_settings(home=tmp_path, data=path, target="label")
    first = load_base(settings)
    assert load_base(settings, first) is first
    frame(50).to_csv(path, index=False)
    assert len(load_base(settings, first).frame) == 50


def test_the_newest_observations_alone_decide_once_there_are_enough(tmp_path: Path) -> None:
    base = base_data(60, test=frame(20))
    obs, invalid = observations(base.pipeline, 50)
    few = assemble(base, obs, invalid, load_settings(home=tmp_path, holdout_share=0.2, holdout_min=11))
    assert few.holdout.test is not None and len(few.holdout) == 30 and "base test split" in few.holdout_kind
    enough = assemble(base, obs, invalid, load_settings(home=tmp_path, holdout_share=0.2, holdout_min=10))
    assert enough.holdout.test is None and len(enough.holdout) == 10 and enough.holdout_kind == "newest observations"


def test_after_a_change_the_new_world_trains_and_decides_and_the_old_one_only_fills_in(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, holdout_share=0.2, half_life=None, observation_weight=2.0,
                             pre_change_weight=0.25)  # fmt: skip
    base = base_data(60, test=frame(20))
    obs, invalid = observations(base.pipeline, 400)
    data = assemble(base, obs, invalid, settings, change=200)
    assert data.change == 200 and data.rows_after_change == 200 and data.holdout_kind.endswith("after the change")
    assert data.holdout.test is None and len(data.holdout) == 40  # the newest 20% of the 200 new rows
    assert data.holdout.observations.features[0]["x"] == 360.0
    assert data.rows == 60 + 200 + 160 and data.rows_base == 60
    new, old = data.weight[-160:], data.weight[:-160]
    assert np.all(new == 2.0)
    assert old.sum() == pytest.approx(0.25 * new.sum())  # the old world together weighs a quarter of the new
    dropped = assemble(base, obs, invalid, settings.model_copy(update={"pre_change_weight": 0.0}), change=200)
    assert dropped.rows == 160 and dropped.rows_base == 0
    too_soon = assemble(base, obs, invalid, settings, change=350)  # 50 new rows: not enough to learn from yet
    assert too_soon.change is None and too_soon.rows_after_change == 0
