import math
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from streamfit.common.errors import ConfigError
from streamfit.common.messages import Decoder, Request
from streamfit.common.settings import ADULT_TEST
from streamfit.sample_app.source import Source, load_source, row_features, to_value


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (np.int64(7), 7),
        (np.float32(1.5), 1.5),
        (np.bool_(True), True),
        (math.nan, None),
        (np.float64("nan"), None),
        (math.inf, None),
        (pd.NA, None),
        (pd.NaT, None),
        (None, None),
        ("Private", "Private"),
        (3, 3),
        (pd.Timestamp("2024-01-02 03:04:05"), "2024-01-02T03:04:05"),
    ],
)
def test_a_cell_becomes_a_plain_json_value(cell: object, expected: object) -> None:
    value = to_value(cell)
    assert value == expected
    assert type(value) is type(expected)


def test_row_features_drop_the_target_and_keep_nulls() -> None:
    row = {"age": np.int64(30), "job": math.nan, "income": ">50K"}
    assert row_features(row, "income") == {"age": 30, "job": None}


def test_a_row_of_the_shipped_data_is_a_valid_request() -> None:
    source = load_source(ADULT_TEST, "income")
    assert source.task == "binary" and len(source) == 16281
    missing = next(i for i in range(200) if source.row(i)[0]["workclass"] is None)
    features, truth = source.row(missing)
    assert "income" not in features and truth in ("<=50K", ">50K")
    raw = Request(request_id="r-1", features=features, sent_at=1.0).encode()
    assert orjson.loads(raw)["features"]["workclass"] is None  # NaN travels as null
    decoded = Decoder(Request)(raw)
    assert isinstance(decoded, Request) and decoded.features == features
    assert all(type(v) in (int, float, str, type(None)) for v in features.values())


def test_parquet_and_a_non_adult_frame(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, None, 3.0], "c": ["a", None, "b"], "y": [0, 1, 2]})
    path = tmp_path / "d.parquet"
    frame.to_parquet(path)
    source = load_source(path, "y")
    assert source.task == "multiclass"
    assert source.row(1) == ({"x": None, "c": None}, 1)


def test_a_missing_file_or_target_is_one_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; set --file"):
        load_source(tmp_path / "nope.csv", "income")
    with pytest.raises(ConfigError, match=r"target column 'nope' is not in .*--target"):
        load_source(ADULT_TEST, "nope")
    with pytest.raises(ConfigError, match="no rows"):
        Source.from_frame(pd.DataFrame({"x": [], "y": []}), "y")
