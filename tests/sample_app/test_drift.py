import copy

import pandas as pd
import pytest

from streamfit.common.errors import ConfigError
from streamfit.common.settings import ADULT_TEST
from streamfit.sample_app.drift import Segment, apply_drift, plan_drift
from streamfit.sample_app.source import Source, load_source


@pytest.fixture(scope="module")
def adult() -> Source:
    return load_source(ADULT_TEST, "income")


def test_adult_drift_changes_only_married_rows_after_k(adult: Source) -> None:
    plan = plan_drift(adult.frame, "income", adult.task, start=100)
    assert plan.segment == Segment("equals", "marital_status", "Married-civ-spouse")
    assert plan.feature == "hours_per_week" and plan.scale == pytest.approx(52 / 12)
    assert 0.4 < plan.segment_share < 0.5
    assert "per month" in plan.describe() and "'<=50K' ↔ '>50K'" in plan.describe()
    changed = 0
    for position in range(300):
        features, truth = adult.row(position)
        original = copy.deepcopy(features)
        for index in (position, position + 1000):  # before and after K
            out, label = apply_drift(plan, index, features, truth)
            assert features == original  # the input is never mutated
            married = features["marital_status"] == "Married-civ-spouse"
            if index < 100 or not married:
                assert (out, label) == (features, truth)
                continue
            changed += 1
            assert label == {"<=50K": ">50K", ">50K": "<=50K"}[str(truth)]
            assert out.pop("hours_per_week") == pytest.approx(features["hours_per_week"] * 52 / 12)
            assert out == {k: v for k, v in features.items() if k != "hours_per_week"}
    assert changed > 100


def test_generic_drift_on_a_non_adult_multiclass_frame() -> None:
    frame = pd.DataFrame(
        {
            "shop": ["north", "south", "north", "east", "north", "south"] * 10,
            "basket": [10.0, 20.0, 30.0, 40.0, None, 60.0] * 10,
            "visits": [1, 1, 2, 2, 3, 3] * 10,
            "tier": ["gold", "silver", "bronze", "gold", "silver", "bronze"] * 10,
        }
    )
    plan = plan_drift(frame, "tier", "multiclass", start=5)
    assert plan.segment == Segment("equals", "shop", "north")  # its top value is 50% of rows
    assert plan.feature in ("basket", "visits") and plan.scale == 1 and plan.offset > 0
    assert sorted(map(str, plan.label_map.values())) == sorted(plan.label_map)  # a permutation
    north = {"shop": "north", "basket": 10.0, "visits": 1}
    south = {"shop": "south", "basket": 20.0, "visits": 1}
    assert apply_drift(plan, 4, north, "gold") == (north, "gold")
    assert apply_drift(plan, 5, south, "gold") == (south, "gold")
    out, label = apply_drift(plan, 5, north, "gold")
    assert label == "silver"  # bronze → gold → silver → bronze
    assert out["shop"] == "north" and out != north
    assert apply_drift(plan, 6, {**north, "basket": None}, None)[1] is None  # unknown truth stays


def test_regression_target_is_mirrored_and_numeric_only_frames_work() -> None:
    frame = pd.DataFrame(
        {"a": [float(i) for i in range(20)], "b": [i % 3 for i in range(20)], "y": [float(i * 2) for i in range(20)]}
    )
    plan = plan_drift(frame, "y", "regression", start=0)
    assert plan.segment.kind == "above" and plan.mirror == 38.0
    inside = {"a": 19.0, "b": 1}
    out, label = apply_drift(plan, 0, inside, 4.0)
    assert label == 34.0 and out != inside
    assert apply_drift(plan, 0, {"a": 0.0, "b": 1}, 4.0) == ({"a": 0.0, "b": 1}, 4.0)


def test_a_frame_with_no_usable_segment_drifts_every_row() -> None:
    frame = pd.DataFrame({"const": [1, 1, 1, 1], "y": ["x", "y", "x", "y"]})
    plan = plan_drift(frame, "y", "binary", start=0)
    assert plan.segment == Segment("all") and plan.segment_share == 1.0
    assert apply_drift(plan, 0, {"const": 1}, "x") == ({"const": 2}, "y")


def test_a_partial_drift_is_deterministic_with_the_seed(adult: Source) -> None:
    def labels(seed: int) -> list[object]:
        plan = plan_drift(adult.frame, "income", adult.task, start=0, seed=seed, label_share=0.5)
        return [apply_drift(plan, i, {"marital_status": "Married-civ-spouse"}, ">50K")[1] for i in range(400)]

    first = labels(1)
    assert first == labels(1)
    assert first != labels(2)
    assert 150 < first.count("<=50K") < 250


def test_overrides_are_checked() -> None:
    frame = pd.DataFrame({"c": ["a", "b"] * 5, "n": range(10), "y": [0, 1] * 5})
    plan = plan_drift(frame, "y", "binary", start=0, segment="c=b", feature="n")
    assert plan.segment == Segment("equals", "c", "b") and plan.feature == "n"
    with pytest.raises(ConfigError, match="COLUMN=VALUE"):
        plan_drift(frame, "y", "binary", start=0, segment="nope")
    with pytest.raises(ConfigError, match="numeric feature"):
        plan_drift(frame, "y", "binary", start=0, feature="c")
