import io
import zipfile

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from streamfit.common.bundle import ModelBundle, sha256_hex
from streamfit.common.errors import BundleError
from streamfit.common.pipeline import FeaturePipeline
from streamfit.trainer.linear import fit_linear_score


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=400), "c": rng.choice(["x", "y", "z"], 400)})
    df["t"] = np.where(df.a + (df.c == "x") > 0.5, "hi", "lo")
    pipeline = FeaturePipeline.fit(df, "t")
    x, y = pipeline.transform_frame(df), pipeline.encode_labels(df.t.tolist())
    data = lgb.Dataset(x, y, categorical_feature=pipeline.categorical_indices, params={"verbosity": -1})
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, data, 20)
    return ModelBundle(booster, pipeline, {"metrics": {"loss": 0.3}})


def test_round_trip_gives_identical_predictions(bundle: ModelBundle) -> None:
    data = bundle.to_bytes()
    loaded = ModelBundle.from_bytes(data, sha256_hex(data))
    rows = [{"a": 1.0, "c": "x"}, {"a": -1.0, "c": "never-seen"}, {"a": None}]
    assert loaded.predict(rows) == bundle.predict(rows)
    assert loaded.metrics == {"loss": 0.3}
    assert loaded.pipeline == bundle.pipeline


def test_sha256_mismatch_is_refused(bundle: ModelBundle) -> None:
    with pytest.raises(BundleError, match="sha256 mismatch"):
        ModelBundle.from_bytes(bundle.to_bytes(), "0" * 64)


def test_bundle_holds_no_pickle_and_corruption_is_a_bundle_error(bundle: ModelBundle) -> None:
    data = bundle.to_bytes()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert sorted(names) == ["manifest.json", "meta.json", "model.txt", "pipeline.json"]
    with pytest.raises(BundleError, match="corrupt bundle"):
        ModelBundle.from_bytes(data[: len(data) // 2])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("manifest.json", b'{"format": 1}')
        z.writestr("model.txt", b"not a model")
        z.writestr("pipeline.json", b'{"target": "t", "task": "binary", "features": []}')
        z.writestr("meta.json", b"{}")
    with pytest.raises(BundleError):
        ModelBundle.from_bytes(buffer.getvalue())


def test_warm_up_fails_a_model_that_cannot_read_its_own_pipelines_rows(bundle: ModelBundle) -> None:
    bundle.warm_up([{"a": 0.1, "c": "y"}])  # a sound model passes
    rng = np.random.default_rng(1)
    three = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1},
        lgb.Dataset(rng.normal(size=(200, 3)), rng.integers(0, 2, 200), params={"verbosity": -1}),
        5,
    )
    broken = ModelBundle(three, bundle.pipeline, {})  # a booster of three features behind a two-feature pipeline
    with pytest.raises(lgb.basic.LightGBMError, match="number of features"):
        broken.warm_up()


def test_a_model_on_linear_scores_travels_with_them_and_predicts_the_same_after_loading() -> None:
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"a": rng.uniform(0, 10, 600), "b": rng.uniform(0, 10, 600), "c": rng.choice(["x", "y"], 600)})
    df["t"] = np.where(df.a + df.b <= 8, "lo", "hi")
    pipeline = FeaturePipeline.fit(df, "t")
    x, y = pipeline.transform_frame(df), pipeline.encode_labels(df.t.tolist())
    fitted = fit_linear_score(pipeline, x, y, None, seed=1)
    assert fitted is not None
    linear, augmented = fitted
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(augmented, y), 20)
    bundle = ModelBundle(booster, pipeline, {}, linear)
    assert bundle.feature_names == ["a", "b", "c", "linear_score"]
    data = bundle.to_bytes()
    assert "linear.json" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    loaded = ModelBundle.from_bytes(data)
    assert loaded.linear == linear
    rows = [{"a": 1.0, "b": 2.0, "c": "x"}, {"a": 9.0, "b": None}, {}]
    assert loaded.predict(rows) == bundle.predict(rows)
    assert np.array_equal(loaded.predict_matrix(pipeline.transform(rows)),
                          booster.predict(linear.augment(pipeline.transform(rows))))  # fmt: skip
    # Without its scores the trees would read the wrong columns: such a bundle is refused.
    without = ModelBundle(booster, pipeline, {}).to_bytes()
    with pytest.raises(BundleError, match="model expects 4 features, pipeline gives 3"):
        ModelBundle.from_bytes(without)
