"""Compiled trees (lleaves, real LightGBM models): the same predictions as the booster, on every
task the trainer makes, with missing values and categories the model never saw."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from streamfit.common.compiled import SCORE_TOLERANCE, compile_trees, same_predictions
from streamfit.common.pipeline import FeaturePipeline

pytest.importorskip("lleaves", reason="the fast extra: pip install 'streamfit[fast]'")


def frame(task: str, rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "x1": rng.normal(size=rows), "x2": rng.normal(size=rows),
        "shade": rng.choice(["red", "green", "blue", "grey"], rows),
    })  # fmt: skip
    signal = df.x1 + 0.5 * df.x2 + (df.shade == "red") - (df.shade == "blue")
    df["y"] = {
        "binary": lambda: np.where(signal > 0.3, "yes", "no"),
        "multiclass": lambda: np.select([signal < -0.5, signal < 0.8], ["low", "mid"], "high"),
        "regression": lambda: 3.0 * signal + rng.normal(scale=0.1, size=rows),
    }[task]()
    return df


def booster(df: pd.DataFrame, pipeline: FeaturePipeline) -> lgb.Booster:
    objective = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}[pipeline.task]
    params = {"objective": objective, "verbosity": -1, "num_threads": 1, "seed": 0, "min_data_in_leaf": 5}
    if pipeline.task == "multiclass":
        params["num_class"] = len(pipeline.classes)
    x, y = pipeline.transform_frame(df), pipeline.encode_labels(df.y.tolist())
    return lgb.train(params, lgb.Dataset(x, y, categorical_feature=pipeline.categorical_indices), 40)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_compiled_trees_predict_what_lightgbm_predicts_and_a_second_compile_loads_the_cache(
    task: str, tmp_path: Path
) -> None:
    df = frame(task)
    pipeline = FeaturePipeline.fit(df, "y")
    model = booster(df, pipeline)
    rows = frame(task, rows=300, seed=1).drop(columns="y").to_dict("records")
    rows += [{"x1": None, "x2": 0.5, "shade": "red"}, {"x1": 1.0, "x2": None, "shade": "purple"}, {}]
    matrix = pipeline.transform(rows)
    assert np.isnan(matrix).any()  # missing values and an unseen category reach the trees

    compiled = compile_trees(model, tmp_path)
    expected, got = model.predict(matrix), compiled.predict_matrix(matrix, 1)

    assert not compiled.cached and same_predictions(expected, got) is None
    if task != "regression":  # the same class for every row (a regression's prediction is its score)
        assert pipeline.decode(got)[0] == pipeline.decode(expected)[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=SCORE_TOLERANCE)
    again = compile_trees(model, tmp_path)
    assert again.cached and same_predictions(expected, again.predict_matrix(matrix, 2)) is None


def test_scores_that_differ_or_have_another_shape_are_named() -> None:
    scores = np.array([0.1, 0.5, 0.9])
    assert same_predictions(scores, scores + SCORE_TOLERANCE / 2) is None
    assert "differ from LightGBM's by up to 1e-06" in str(same_predictions(scores, scores + 1e-6))
    assert "shape" in str(same_predictions(scores, np.ones((3, 2))))
    assert "differ" in str(same_predictions(scores, np.array([0.1, np.nan, 0.9])))
