import numpy as np
import pandas as pd
import pytest

from streamfit.common.linear import LinearScore
from streamfit.common.pipeline import FeaturePipeline
from streamfit.trainer.linear import fit_linear_score, linear_score_wins
from streamfit.trainer.objective import TrialScore
from tests.support.frames import slanted


def test_the_score_learns_a_slanted_boundary_and_reads_numeric_columns_only() -> None:
    frame = slanted(400, 0)
    pipeline = FeaturePipeline.fit(frame, "y")
    x, y = pipeline.transform_frame(frame), pipeline.encode_labels(frame.y.tolist())
    fitted = fit_linear_score(pipeline, x, y, None, seed=1)
    assert fitted is not None
    linear, augmented = fitted
    assert linear.columns == (0, 1, 2) and linear.width == 1 and linear.names == ("linear_score",)
    assert augmented.shape == (400, 5) and np.array_equal(augmented[:, :4], x, equal_nan=True)
    fresh = slanted(2000, 1)
    fx, fy = pipeline.transform_frame(fresh), pipeline.encode_labels(fresh.y.tolist())
    scores = linear.scores(fx)[:, 0]
    assert np.mean((scores > 0) == (fy == 1)) > 0.97  # one linear score alone draws the line
    assert abs(linear.coef[0][2]) < 0.2 * abs(linear.coef[0][0])  # and leaves the noise column out


def test_training_rows_get_out_of_fold_scores_that_did_not_see_their_label() -> None:
    """On labels that are pure noise a model scoring the rows it was fitted on finds a pattern
    (its scores agree with the labels); scores from models that did not see the row do not."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(80, 30)), columns=[f"f{i}" for i in range(30)])
    frame["y"] = rng.choice(["a", "b"], 80)
    pipeline = FeaturePipeline.fit(frame, "y")
    x, y = pipeline.transform_frame(frame), pipeline.encode_labels(frame.y.tolist())
    fitted = fit_linear_score(pipeline, x, y, None, seed=1)
    assert fitted is not None
    linear, augmented = fitted
    in_sample = np.corrcoef(linear.scores(x)[:, 0], y)[0, 1]
    out_of_fold = np.corrcoef(augmented[:, -1], y)[0, 1]
    assert in_sample > 0.5 and out_of_fold < 0.2, (in_sample, out_of_fold)


def test_multiclass_gets_a_score_per_class_and_a_missing_value_counts_as_the_mean() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["y"] = np.select([frame.a > 0.5, frame.b > 0.5], ["one", "two"], "three")
    pipeline = FeaturePipeline.fit(frame, "y")
    x, y = pipeline.transform_frame(frame), pipeline.encode_labels(frame.y.tolist())
    fitted = fit_linear_score(pipeline, x, y, np.linspace(0.5, 1.5, 300), seed=1)
    assert fitted is not None
    linear = fitted[0]
    assert linear.width == 3 and len(set(linear.names)) == 3
    missing = pipeline.transform([{"a": None, "b": None}])
    mean = np.asarray([linear.mean])
    assert np.allclose(linear.scores(missing), linear.scores(mean))
    assert LinearScore.from_dict(linear.to_dict()) == linear


def test_no_score_without_numeric_columns_or_without_two_classes() -> None:
    frame = pd.DataFrame({"c": ["x", "y"] * 50, "y": ["a", "b"] * 50})
    pipeline = FeaturePipeline.fit(frame, "y")
    x, y = pipeline.transform_frame(frame), pipeline.encode_labels(frame.y.tolist())
    assert fit_linear_score(pipeline, x, y, None, seed=1) is None
    numeric = FeaturePipeline.fit(slanted(100, 4), "y")
    one_class = slanted(100, 4).assign(y="low")
    xs, ys = numeric.transform_frame(one_class), numeric.encode_labels(one_class.y.tolist())
    assert fit_linear_score(numeric, xs, ys, None, seed=1) is None


@pytest.mark.parametrize(
    "change, message",
    [({"format": 2}, "format"), ({"scale": [1.0, 0.0]}, "positive"), ({"coef": [[1.0]]}, "coefficient"),
     ({"intercept": [float("nan")]}, "finite"), ({"names": []}, "name")],
)  # fmt: skip
def test_a_broken_score_is_refused_when_read(change: dict[str, object], message: str) -> None:
    good = {"format": 1, "columns": [0, 2], "mean": [0.0, 1.0], "scale": [1.0, 2.0], "coef": [[0.5, -0.5]],
            "intercept": [0.1], "names": ["linear_score"]}  # fmt: skip
    assert LinearScore.from_dict(good).width == 1
    with pytest.raises(ValueError, match=message):
        LinearScore.from_dict({**good, **change})


@pytest.mark.parametrize(
    ("with_score", "folds", "wins", "error"),
    [
        (TrialScore(0.285, 50, std=0.02), 4, True, 0.01),  # 0.300 - 0.285 = 0.015 > 0.02 / 2: clear of the noise
        (TrialScore(0.292, 50, std=0.02), 4, False, 0.01),  # lower, but by less than its standard error
        (TrialScore(0.299, 50), 1, True, 0.0),  # one split: no spread, the lower loss decides
        (TrialScore(0.250, 50, std=0.02, pruned=True), 4, False, 0.01),  # pruned: never the choice
        (TrialScore(0.310, 50, std=0.0), 4, False, 0.0),  # higher
    ],
)
def test_the_score_is_kept_only_when_it_wins_by_more_than_one_standard_error(
    with_score: TrialScore, folds: int, wins: bool, error: float
) -> None:
    without = TrialScore(0.300, 50, std=0.02)
    assert linear_score_wins(with_score, without, folds) == (wins, pytest.approx(error))
