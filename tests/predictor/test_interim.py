"""The interim model (real LightGBM, no broker): learnt from the labels since a change, served only
where the rows it was not fitted on say it beats the answers served."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from streamfit.common.bundle import ModelBundle
from streamfit.common.pipeline import FeaturePipeline
from streamfit.predictor.interim import LIFETIME, MIN_ROWS, Rows, learn
from tests.predictor.conftest import synthetic_frame, train


@pytest.fixture(scope="module")
def old() -> ModelBundle:
    return train(rounds=30)


def rows_of(bundle: ModelBundle, frame: pd.DataFrame, labels: list[Any], served: list[Any] | None = None) -> Rows:
    pipeline = bundle.pipeline
    features = frame.drop(columns=["y"]).to_dict("records")
    if served is None:
        served, _ = pipeline.decode(bundle.predict_matrix(pipeline.transform(features)))
    return Rows("3", features, pipeline.encode_labels(labels).astype(np.int32),
                pipeline.encode_labels(served).astype(np.int32))  # fmt: skip


def answers(bundle: ModelBundle, model: Any, frame: pd.DataFrame) -> list[Any]:
    matrix = bundle.pipeline.transform(frame.drop(columns=["y"]).to_dict("records"))
    return bundle.pipeline.decode(model.predict(matrix, bundle.predict_matrix(matrix)))[0]


def flip(labels: pd.Series) -> list[str]:
    return ["no" if y == "yes" else "yes" for y in labels]


def test_a_flipped_concept_is_learnt_from_a_few_dozen_labels_and_served(old: ModelBundle) -> None:
    since = synthetic_frame(40, seed=31)
    model = learn(old.pipeline, old.predict_matrix, rows_of(old, since, flip(since.y)), serving=False, now=0.0)
    assert model is not None and model.version == "3" and model.until == LIFETIME
    assert model.verdict.rows == 40 and model.verdict.wins >= 30 and model.verdict.losses <= 3, model.verdict
    fresh = synthetic_frame(500, seed=32)
    right = np.mean(np.array(answers(old, model, fresh)) == np.array(flip(fresh.y)))
    old_right = np.mean(np.array(answers(old, _Identity(), fresh)) == np.array(flip(fresh.y)))
    assert right > 0.9 and old_right < 0.2, (right, old_right)
    assert model.active("3", now=LIFETIME - 1) and not model.active("3", now=LIFETIME) and not model.active("4", 1)


def test_an_unmoved_concept_noise_and_too_few_rows_keep_the_served_answers(old: ModelBundle) -> None:
    same = synthetic_frame(300, seed=33)
    assert learn(old.pipeline, old.predict_matrix, rows_of(old, same, same.y.tolist()), serving=False) is None
    noisy = synthetic_frame(300, seed=34)
    flips = np.random.default_rng(5).random(len(noisy)) < 0.2
    labels = np.where(flips, flip(noisy.y), noisy.y).tolist()
    assert learn(old.pipeline, old.predict_matrix, rows_of(old, noisy, labels), serving=False) is None
    few = synthetic_frame(MIN_ROWS - 1, seed=35)
    assert learn(old.pipeline, old.predict_matrix, rows_of(old, few, flip(few.y)), serving=False) is None


def test_from_the_fewest_rows_each_folds_model_reads_the_features(old: ModelBundle) -> None:
    """A flipped concept on exactly ``MIN_ROWS`` labels, twenty samples: most are taken, and every
    model taken answers both classes and beats the old answers on fresh rows (with too few rows a
    fold's model is one leaf, the majority label: a verdict then says nothing of the features)."""
    fresh = synthetic_frame(500, seed=32)
    truth = np.array(flip(fresh.y))
    taken = []
    for seed in range(40, 60):
        since = synthetic_frame(MIN_ROWS, seed=seed)
        model = learn(old.pipeline, old.predict_matrix, rows_of(old, since, flip(since.y)), serving=False)
        if model is not None:
            served = np.array(answers(old, model, fresh))
            taken.append((len(set(served)), float(np.mean(served == truth))))
    assert len(taken) >= 10 and all(classes == 2 and right > 0.6 for classes, right in taken), taken


def test_a_refit_of_a_serving_model_is_taken_unless_it_loses_to_the_answers_served(old: ModelBundle) -> None:
    """Rows answered by an interim model that was wrong now and then: a refit on them, as the model
    serving, replaces it without a clear win; against answers that were all right it loses, and
    the model serving stays."""
    since = synthetic_frame(200, seed=36)
    labels = flip(since.y)
    wrong = np.random.default_rng(6).random(len(labels)) < 0.1
    rows = rows_of(old, since, labels, served=np.where(wrong, since.y, labels).tolist())
    refit = learn(old.pipeline, old.predict_matrix, rows, serving=True)
    assert refit is not None and refit.verdict.wins >= refit.verdict.losses, refit
    perfect = rows_of(old, since, labels, served=labels)
    assert learn(old.pipeline, old.predict_matrix, perfect, serving=True) is None
    assert learn(old.pipeline, old.predict_matrix, perfect, serving=False) is None


def test_several_classes_keep_the_old_models_output_shape() -> None:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"x1": rng.normal(size=600), "x2": rng.normal(size=600)})
    frame["y"] = np.select([frame.x1 < -0.5, frame.x1 < 0.5], ["low", "mid"], "high")
    pipeline = FeaturePipeline.fit(frame, "y")
    data = lgb.Dataset(pipeline.transform_frame(frame), pipeline.encode_labels(frame.y.tolist()))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbosity": -1, "num_threads": 1}, data, 20)
    bundle = ModelBundle(booster, pipeline, {})
    since = frame.iloc[:60].copy()
    since["y"] = np.select([since.x2 < -0.5, since.x2 < 0.5], ["low", "mid"], "high")  # another rule
    model = learn(pipeline, bundle.predict_matrix, rows_of(bundle, since, since.y.tolist()), serving=False)
    assert model is not None
    matrix = pipeline.transform(frame.drop(columns=["y"]).iloc[300:].to_dict("records"))
    raw = model.predict(matrix, bundle.predict_matrix(matrix))
    assert raw.shape == (300, 3)
    truth = np.select([frame.x2[300:] < -0.5, frame.x2[300:] < 0.5], ["low", "mid"], "high")
    assert np.mean(np.array(pipeline.decode(raw)[0]) == truth) > 0.8


def test_a_number_to_predict_gets_no_interim_model() -> None:
    frame = pd.DataFrame({"x1": np.arange(100.0), "y": np.arange(100.0) * 2})
    pipeline = FeaturePipeline.fit(frame, "y")
    # rows a classifier would take: every served answer contradicted by its label, and a model serving
    rows = Rows("1", frame[["x1"]].to_dict("records"), np.ones(100, np.int32), np.zeros(100, np.int32))
    assert pipeline.task == "regression"
    assert learn(pipeline, lambda m: m[:, 0], rows, serving=True) is None


class _Identity:
    """Serves the old model's output as it is."""

    def predict(self, matrix: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return raw
