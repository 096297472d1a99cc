import math

import numpy as np
import pandas as pd
import pytest

from streamfit.common.errors import ConfigError
from streamfit.common.pipeline import FeaturePipeline, category_key, read_table
from streamfit.common.settings import ADULT_TRAIN


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "size": [1.0, 2.5, None, 4.0, 5.0, 6.0],
            "colour": ["red", "blue", None, "red", "green", "red"],
            "count": [1, 2, 3, 4, 5, 6],
            "flag": [True, False, True, True, False, True],
            "y": ["yes", "no", "yes", "no", "yes", "no"],
        }
    )


def test_fit_reads_kinds_task_and_classes_from_the_data(frame: pd.DataFrame) -> None:
    p = FeaturePipeline.fit(frame, "y")
    kinds = {f.name: f.kind for f in p.features}
    assert kinds == {"size": "numeric", "colour": "categorical", "count": "numeric", "flag": "categorical"}
    assert p.task == "binary" and p.classes == ("no", "yes")
    colour = next(f for f in p.features if f.name == "colour")
    assert colour.categories[0] == "red"  # most frequent first


@pytest.mark.parametrize(
    ("target", "task"),
    [
        (["a", "b", "c", "a", "b", "c"], "multiclass"),
        ([0, 1, 2, 0, 1, 2], "multiclass"),
        ([0, 1, 0, 1, 0, 1], "binary"),
        ([0.5, 1.25, 3.0, 2.0, 8.5, 1.0], "regression"),
        (list(range(100, 130)), "regression"),
    ],
)
def test_task_is_inferred_from_the_target(target: list[object], task: str) -> None:
    df = pd.DataFrame({"x": range(len(target)), "t": target})
    assert FeaturePipeline.fit(df, "t").task == task


def test_unseen_categories_and_missing_values_become_nan(frame: pd.DataFrame) -> None:
    p = FeaturePipeline.fit(frame, "y")
    x = p.transform([{"size": None, "colour": "purple", "count": 3, "flag": True}])
    assert np.isnan(x[0, 0]) and np.isnan(x[0, 1])
    assert x[0, 2] == 3.0 and not np.isnan(x[0, 3])


def test_missing_and_extra_fields_are_handled_explicitly(frame: pd.DataFrame) -> None:
    p = FeaturePipeline.fit(frame, "y")
    row = {"size": 2.5, "unknown_field": "ignored"}
    assert p.check(row, reject_missing=True) == (
        "missing feature 'colour' (send null for a missing value, or set missing_features=impute)"
    )
    assert p.check(row, reject_missing=False) is None
    x = p.transform([row])
    assert x.shape == (1, 4) and x[0, 0] == 2.5 and np.isnan(x[0, 1:]).all()


def test_wrong_types_for_numeric_features_are_refused(frame: pd.DataFrame) -> None:
    p = FeaturePipeline.fit(frame, "y")
    full = {"size": 1.0, "colour": "red", "count": 1, "flag": True}
    assert p.check(full, reject_missing=True) is None
    assert "must be a number" in str(p.check({**full, "size": "big"}, reject_missing=True))
    assert "must be a number" in str(p.check({**full, "count": True}, reject_missing=True))
    # categorical features accept any scalar: a number is looked up by its spelling
    assert p.check({**full, "colour": 5}, reject_missing=True) is None


def test_training_and_serving_give_the_same_matrix() -> None:
    df = read_table(ADULT_TRAIN).head(2000)
    p = FeaturePipeline.fit(df, "income")
    from_frame = p.transform_frame(df)
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in df.drop(columns="income").to_dict("records")
    ]
    assert np.array_equal(from_frame, p.transform(rows), equal_nan=True)


def test_category_key_is_one_spelling() -> None:
    assert category_key(1.0) == category_key(1) == category_key(np.int64(1)) == "1"
    assert category_key(float("nan")) is None and category_key(None) is None
    assert category_key(True) == "True" and category_key("x") == "x"


def test_labels_encode_and_invalid_labels_are_none(frame: pd.DataFrame) -> None:
    p = FeaturePipeline.fit(frame, "y")
    assert p.encode_label("yes") == 1.0 and p.encode_label("no") == 0.0
    assert p.encode_label("maybe") is None and p.encode_label(None) is None
    reg = FeaturePipeline.fit(pd.DataFrame({"x": range(30), "t": np.linspace(0, 1, 30)}), "t")
    assert reg.encode_label(0.5) == 0.5
    assert reg.encode_label("0.5") is None and reg.encode_label(True) is None and reg.encode_label(math.inf) is None


def test_decode_gives_prediction_and_score_per_task(frame: pd.DataFrame) -> None:
    p = FeaturePipeline.fit(frame, "y")
    assert p.decode(np.array([0.2, 0.8])) == (["no", "yes"], [0.2, 0.8])
    multi = FeaturePipeline.fit(pd.DataFrame({"x": range(6), "t": ["a", "b", "c"] * 2}), "t")
    preds, scores = multi.decode(np.array([[0.1, 0.7, 0.2]]))
    assert preds == ["b"] and scores == [0.7]


def test_serialisation_round_trip_and_compatibility(frame: pd.DataFrame) -> None:
    p = FeaturePipeline.fit(frame, "y")
    again = FeaturePipeline.from_dict(p.to_dict())
    assert again == p
    assert np.array_equal(again.transform([{"colour": "blue"}]), p.transform([{"colour": "blue"}]), equal_nan=True)
    assert p.incompatibility(again) is None
    other = FeaturePipeline.fit(frame.rename(columns={"size": "width"}), "y")
    assert "feature schema differs" in str(p.incompatibility(other))


@pytest.mark.parametrize(
    ("df", "message"),
    [
        (pd.DataFrame({"x": [1, 2], "t": ["a", "a"]}), "has a single value"),
        (pd.DataFrame({"x": [1, 2], "t": [1, 2]}), None),
        (pd.DataFrame({"x": [1, 2]}), "target column 't' is not in the data"),
        (pd.DataFrame({"t": ["a", "b"]}), "no feature columns"),
    ],
)
def test_bad_data_sets_fail_with_a_clear_message(df: pd.DataFrame, message: str | None) -> None:
    if message is None:
        FeaturePipeline.fit(df, "t")
        return
    with pytest.raises(ConfigError, match=message):
        FeaturePipeline.fit(df, "t")


def test_read_table_names_the_setting_for_a_missing_file(tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(ConfigError, match="does not exist; set --data / STREAMFIT_DATA"):
        read_table(Path("/nonexistent/file.csv"))


def test_read_table_reads_parquet(tmp_path: object, frame: pd.DataFrame) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "d.parquet"
    frame.to_parquet(path)
    assert read_table(path).shape == frame.shape
