"""The recovery evaluation: its streams and its arithmetic (no broker), and one tiny live run.

The live run checks that the harness fills every window with a served, a frozen and a River
number; it asserts nothing about how good they are (the machine is shared, and the evaluation
measures the trainer, it does not gate it).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.recovery import scoring
from benchmarks.recovery.river_baseline import prequential
from benchmarks.recovery.streams import StreamSpec, make_stream
from streamfit.common.errors import ConfigError

# --- streams -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["agrawal", "sea", "sine", "stagger", "mixed", "led", "none", "hyperplane", "friedman", "adult"]
)
def test_a_stream_is_the_same_for_the_same_spec_and_another_for_another_seed(name: str) -> None:
    spec = StreamSpec(name, seed=3, rows=1200, drift_at=600)
    first, again = make_stream(spec), make_stream(spec)
    assert len(first.frame) == 1200
    assert first.frame.equals(again.frame)
    other = make_stream(StreamSpec(name, seed=4, rows=1200, drift_at=600))
    assert not first.frame.equals(other.frame)
    assert first.target == "y" and all(isinstance(c, str) for c in first.frame.columns)


def test_sea_switches_its_threshold_at_the_row_asked() -> None:
    """SEA: y = x0 + x1 > threshold; variant 0 is 8, variant 3 is 9.5."""
    stream = make_stream(StreamSpec("sea", seed=1, rows=4000, drift_at=2500))
    assert stream.drifts == (2500,) and stream.task == "binary"
    total = stream.frame["x0"] + stream.frame["x1"]
    y = stream.frame["y"].astype(bool)
    assert ((total > 8) == y).iloc[:2499].all()  # row 2499 is river's coin flip (t = position)
    assert ((total > 9.5) == y).iloc[2502:].all()
    assert not ((total > 8) == y).iloc[2502:].all()  # the drift changed some labels


def test_a_gradual_drift_mixes_the_two_concepts_around_the_row_asked() -> None:
    stream = make_stream(StreamSpec("sea", seed=2, rows=6000, drift_at=3000, width=1000))
    total, y = stream.frame["x0"] + stream.frame["x1"], stream.frame["y"].astype(bool)
    old, new = (total > 8) == y, (total > 9.5) == y
    assert old.iloc[:500].all() and new.iloc[5500:].all()
    middle = slice(2800, 3200)
    assert not old.iloc[middle].all() and not new.iloc[middle].all()


def test_agrawal_has_string_categories_and_no_drift_means_no_drift_mark() -> None:
    drifting = make_stream(StreamSpec("agrawal", seed=1, rows=800, drift_at=400))
    assert drifting.drifts == (400,)
    assert drifting.frame["car"].str.startswith("c").all() and drifting.frame["zipcode"].str.startswith("z").all()
    assert make_stream(StreamSpec("none", seed=1, rows=800, drift_at=400)).drifts == ()
    assert make_stream(StreamSpec("hyperplane", seed=1, rows=800, drift_at=400)).drifts == ()


def test_the_other_abrupt_drifts_change_the_label_rule_at_the_row_asked() -> None:
    """A model of the rows before the drift is right before it and wrong after it: the rule moved."""
    import lightgbm as lgb

    cases = (("sine", 0.95, 0.85), ("stagger", 0.99, 0.5), ("mixed", 0.9, 0.3), ("led", 0.6, 0.3))
    for name, floor, after_at_most in cases:
        stream = make_stream(StreamSpec(name, seed=1, rows=6000, drift_at=3000))
        assert stream.drifts == (3000,) and stream.task == ("multiclass" if name == "led" else "binary")
        frame = stream.frame
        if name == "stagger":
            assert frame["color"].str.startswith("c").all()  # categories, as strings
            frame = frame.assign(**{c: frame[c].str[1:].astype(int) for c in ("size", "color", "shape")})
        x, y = frame.drop(columns="y").to_numpy(dtype=float), frame["y"].to_numpy()
        model = lgb.LGBMClassifier(n_estimators=60, verbose=-1).fit(x[:2000], y[:2000])
        before = float((model.predict(x[2000:3000]) == y[2000:3000]).mean())
        after = float((model.predict(x[3100:]) == y[3100:]).mean())
        assert before >= floor and after <= after_at_most, (name, before, after)


def test_other_functions_are_chosen_per_stream_and_named_in_the_label() -> None:
    """``agrawal:1-4`` in a suite replays Agrawal's function 1, then 4: other rows than the default 0-2."""
    from benchmarks.recovery.__main__ import parse, specs

    chosen = specs(parse(["--suite", "--streams", "agrawal:1-4,sea", "--seeds", "2", "--rows", "800",
                               "--drift-at", "400"]))  # fmt: skip
    assert [s.label for s in chosen] == ["agrawal-f1to4-s2-abrupt", "sea-s2-abrupt"]
    other, default = make_stream(chosen[0]), make_stream(replace(chosen[0], functions=None))
    assert other.drifts == default.drifts == (400,)
    assert not other.frame["y"].equals(default.frame["y"])
    with pytest.raises(ConfigError, match="BEFORE-AFTER"):
        specs(parse(["--suite", "--streams", "agrawal:1"]))
    with pytest.raises(ConfigError, match="no functions"):
        StreamSpec("friedman", functions=(0, 1))
    with pytest.raises(ConfigError, match="no functions"):
        StreamSpec("none", functions=(1, 4))  # it would drift, scored as no drift
    with pytest.raises(ConfigError, match="0 to 3"):
        StreamSpec("sea", functions=(0, 9))


def test_friedman_is_a_regression_and_adult_carries_the_demo_drift() -> None:
    friedman = make_stream(StreamSpec("friedman", seed=1, rows=900, drift_at=300, friedman_type="lea"))
    assert friedman.task == "regression" and friedman.drifts == (300, 500, 700)
    adult = make_stream(StreamSpec("adult", seed=1, rows=2000, drift_at=1000))
    married = adult.frame["marital_status"] == "Married-civ-spouse"
    # The demo's drift reports hours per month from the drift on, in its segment only.
    assert adult.frame.loc[married.index[:1000][married.iloc[:1000]], "hours_per_week"].max() <= 99
    assert adult.frame.loc[married.index[1000:][married.iloc[1000:]], "hours_per_week"].mean() > 100


def test_a_csv_is_replayed_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "stream.csv"
    make_stream(StreamSpec("sea", seed=1, rows=500, drift_at=250)).frame.rename(columns={"y": "label"}).to_csv(
        path, index=False
    )
    stream = make_stream(StreamSpec("csv", csv=path, target="label", rows=0, drift_at=300))
    assert len(stream.frame) == 500 and stream.drifts == (300,) and stream.target == "label"


# --- scoring -------------------------------------------------------------------------------------


def test_pointwise_scores_classes_by_their_one_spelling_and_marks_unanswered() -> None:
    series = scoring.pointwise("binary", [1, 0, "a", 1], [1.0, 1, "a", None])
    assert series[:3].tolist() == [1.0, 0.0, 1.0] and math.isnan(series[3])


def test_rolling_accuracy_and_r2_over_the_trailing_window() -> None:
    acc = scoring.rolling("binary", np.zeros(5), np.array([1.0, 0.0, 1.0, 1.0, math.nan]), 2)
    assert math.isnan(acc[0]) and acc[1:].tolist() == [50.0, 50.0, 100.0, 100.0]
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    assert scoring.rolling("regression", truth, truth.copy(), 4)[-1] == pytest.approx(100.0)
    assert scoring.rolling("regression", truth, np.full(4, 2.5), 4)[-1] == pytest.approx(0.0)


def test_recovery_is_found_at_the_index_where_the_served_series_comes_back() -> None:
    n, drift = 10_000, 2_000
    river = np.full(n, 90.0)
    served = np.full(n, 90.0)
    served[drift:6_000] = 60.0  # down after the drift, back from index 6,000 on
    got = scoring.requests_to_recovery(served, river, drift, tolerance=2.0, width=500, hold=500)
    assert got == 6_000 - drift + 1


def test_a_brief_blip_back_is_not_a_recovery_and_a_series_that_stays_down_never_recovers() -> None:
    n, drift = 8_000, 1_000
    river = np.full(n, 90.0)
    served = np.full(n, 70.0)
    served[3_000:3_100] = 89.0  # 100 requests within 2 points: shorter than the hold
    assert scoring.requests_to_recovery(served, river, drift, width=500, hold=500) is None
    served[5_000:] = 88.5  # within 2 points from 5,000 on (88.5 >= 90 - 2)
    assert scoring.requests_to_recovery(served, river, drift, width=500, hold=500) == 5_000 - drift + 1


def test_the_pre_drift_level_also_counts_as_recovered_and_pre_drift_rows_never_do() -> None:
    n, drift = 6_000, 1_000
    river = np.full(n, 99.0)
    served = np.full(n, 80.0)
    assert scoring.requests_to_recovery(served, river, drift, pre_level=81.0, width=500, hold=500) == 500
    assert scoring.requests_to_recovery(served, river, drift, pre_level=95.0, width=500, hold=500) is None


def test_windows_score_the_three_models_on_the_same_answered_rows() -> None:
    served = np.array([1.0, 1.0, math.nan, 0.0, 1.0, 1.0])
    frozen = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    river = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    versions = ["1", "1", None, "2", "2", "2"]
    w = scoring.windows("binary", np.zeros(6), served, frozen, river, versions, 3)
    assert [x.served for x in w] == [100.0, pytest.approx(66.667, abs=1e-3)]
    assert w[0].frozen == 0.0 and w[0].river == 50.0 and w[0].unanswered == 1  # the unanswered row counts nowhere
    assert w[0].versions == {"1": 2} and w[1].versions == {"2": 3}
    assert scoring.first_answers(versions) == [("1", 0), ("2", 3)]


def test_worst_window_finds_the_lowest_served_minus_frozen() -> None:
    served = np.ones(100)
    served[60:70] = 0.0
    gap, at = scoring.worst_window("binary", np.zeros(100), served, np.ones(100), 20)
    assert gap == pytest.approx(-50.0) and 69 <= at <= 79


# --- River ---------------------------------------------------------------------------------------


class Recorder:
    """A learner that predicts the last label it learned and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.last: Any = None

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        self.calls.append(("learn", y))
        self.last = y

    def predict_one(self, x: dict[str, Any]) -> Any:
        self.calls.append(("predict", x.get("i")))
        return self.last


def test_river_learns_the_base_rows_first_then_predicts_before_learning_each_row() -> None:
    base = [({"i": -1}, "b")]
    stream = [({"i": 0, "gone": None}, "a0"), ({"i": 1}, "a1"), ({"i": 2}, "a2")]
    learner = Recorder()
    out = prequential("binary", base, stream, learner=learner)
    assert out == ["b", "a0", "a1"]
    assert learner.calls[:3] == [("learn", "b"), ("predict", 0), ("learn", "a0")]
    delayed = prequential("binary", base, stream, learner=Recorder(), delay=1)
    assert delayed == ["b", "b", "a0"]  # a label arrives one request late


# --- one tiny live run ---------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
def test_a_tiny_live_run_fills_every_window_with_three_numbers(broker: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    earlier = tmp_path / "logs" / "sea-s1-abrupt"  # an earlier run of the same stream left its trouble
    earlier.mkdir(parents=True)
    stale = "2026-01-01 00:00:00,000 ERROR   trainer: from an earlier run"
    (earlier / "trainer.log").write_text(stale + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.recovery", "--stream", "sea", "--rows", "3000", "--drift-at", "2000",
         "--base-rows", "1000", "--rate", "400", "--retrain-every", "500", "--trials", "2", "--window", "500",
         "--set", "MAX_ROUNDS=100", "--bootstrap-servers", broker, "--out", str(tmp_path / "out"),
         "--logs", str(tmp_path / "logs")],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    raw = json.loads((tmp_path / "out" / "recovery.json").read_text())
    (result,) = raw["streams"]
    assert result["requests"] == 2000 and result["unanswered"] == 0
    assert len(result["windows"]) == 4
    for window in result["windows"]:
        for key in ("served", "frozen", "river"):
            assert isinstance(window[key], float) and 0 <= window[key] <= 100, window
        assert window["versions"]
    assert len(result["drifts"]) == 1 and result["drifts"][0]["at"] == 1000
    assert (tmp_path / "out" / "recovery-sea-s1-abrupt.png").stat().st_size > 0
    assert "python -m benchmarks.recovery" in (tmp_path / "out" / "recovery.md").read_text()
    assert stale not in result["problems"]["trainer"]  # this run's logs alone
    assert "starting with settings" in (earlier / "trainer.log").read_text()
