"""The serving-side drift monitor as pure logic: real pipelines, real LightGBM models, no broker.

The Adult tests drive it the way the service does (one matrix per batch, then the joined
outcomes), with real Adult rows through the real pipeline and a real model, and the sample app's
own drift (``sample_app.drift``). They cover the decision, not the Kafka plumbing around it;
``test_drift_loop.py`` runs the whole loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from streamfit.common.bundle import ModelBundle
from streamfit.common.pipeline import FeaturePipeline, read_table
from streamfit.common.profile import ReferenceProfile
from streamfit.common.settings import ADULT_TEST, ADULT_TRAIN
from streamfit.predictor.drift import STEP_EVERY, STEP_MIN_AFTER, Alarm, DriftMonitor
from streamfit.predictor.interim import MIN_ROWS, learn
from streamfit.sample_app.drift import apply_drift, plan_drift
from streamfit.trainer.drift import reference_rows
from streamfit.trainer.fit import evaluate
from tests.predictor.conftest import synthetic_frame, train


def profiled(bundle: ModelBundle, holdout: dict[str, float] | None = None) -> ModelBundle:
    frame = synthetic_frame(2000, seed=5)
    profile = ReferenceProfile.build(bundle.pipeline, bundle.pipeline.transform_frame(frame), holdout)
    return ModelBundle(bundle.booster, bundle.pipeline, {**bundle.meta, "profile": profile.to_dict()})


def feed_labels(bundle: ModelBundle, frame: Any) -> list[float]:
    return bundle.pipeline.encode_labels(frame["y"].tolist()).tolist()


def feed(monitor: DriftMonitor, version: str, bundle: ModelBundle, frame: Any, batch: int = 100) -> list[Alarm]:
    """Serve ``frame`` batch by batch, every request labelled at once; the alarms raised."""
    alarms = []
    rows = frame.drop(columns=["y"]).to_dict("records")
    labels = frame["y"].tolist()
    for start in range(0, len(rows), batch):
        matrix = bundle.pipeline.transform(rows[start : start + batch])
        predictions, _ = bundle.pipeline.decode(bundle.predict_matrix(matrix))
        monitor.requests(version, bundle, matrix)
        answered = zip(predictions, labels[start : start + batch], rows[start : start + batch], strict=True)
        monitor.outcomes.extend((version, p, y, f) for p, y, f in answered)
        if alarm := monitor.check():
            alarms.append(alarm)
    return alarms


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    model = train(rounds=30)
    frame = synthetic_frame(3000, seed=9)
    x, y = model.pipeline.transform_frame(frame), model.pipeline.encode_labels(frame.y.tolist())
    return profiled(model, evaluate(model, x, y))


def test_no_alarm_on_the_reference_population_and_nothing_before_a_full_window(bundle: ModelBundle) -> None:
    monitor = DriftMonitor(window=500, psi_threshold=0.25, metric_drop=0.05, cooldown=1000)
    assert feed(monitor, "1", bundle, synthetic_frame(3000, seed=11)) == []
    assert monitor.overall_psi is not None and monitor.overall_psi < 0.05
    assert monitor.live_metric is not None and monitor.served_in_window == 500
    shifted = synthetic_frame(400, seed=12)
    shifted["x2"] += 3
    # the input check waits for a full window (the live metric's early verdict has its own test)
    fresh = DriftMonitor(window=500, psi_threshold=0.25, metric_drop=0, cooldown=0)
    assert feed(fresh, "1", bundle, shifted) == []  # 400 < window: no verdict yet
    assert fresh.overall_psi is None and fresh.live_metric is None


def test_a_shifted_feature_raises_one_alarm_per_cooldown_naming_it(bundle: ModelBundle) -> None:
    monitor = DriftMonitor(window=500, psi_threshold=0.25, metric_drop=0, cooldown=1500)
    feed(monitor, "1", bundle, synthetic_frame(1000, seed=13))
    shifted = synthetic_frame(3000, seed=14)
    shifted["x2"] += 3
    alarms = feed(monitor, "1", bundle, shifted)
    assert len(alarms) == 2  # 3,000 shifted requests, one alarm per 1,500
    first = alarms[0]
    assert first.causes == ("psi",) and first.top_features[0][0] == "x2" and first.top_features[0][1] > 0.25
    assert first.model_version == "1" and first.details()["causes"] == ["psi"]


def test_a_falling_live_metric_raises_an_alarm_and_restore_undoes_it(bundle: ModelBundle) -> None:
    monitor = DriftMonitor(window=300, psi_threshold=0, metric_drop=0.05, cooldown=10_000)
    feed(monitor, "1", bundle, synthetic_frame(600, seed=15))
    flipped = synthetic_frame(600, seed=16)
    flipped["y"] = np.where(flipped.y == "yes", "no", "yes")  # concept drift: same inputs, other answers
    state = monitor.snapshot()
    alarms = feed(monitor, "1", bundle, flipped)
    assert len(alarms) == 1 and "metric" in alarms[0].causes
    assert alarms[0].live is not None and alarms[0].holdout is not None and alarms[0].live < alarms[0].holdout - 0.05
    monitor.restore(state)  # the batch that carried it was not delivered: the alarm may fire again
    assert feed(monitor, "1", bundle, flipped[:100]) != []


def test_a_step_in_the_live_error_raises_an_alarm_long_before_the_window_mean_falls(bundle: ModelBundle) -> None:
    """A change that makes a fifth of the answers wrong: the step is found within 200 observations,
    while the mean of the 1,000-observation window has moved by under four points."""
    monitor = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=10_000)
    assert feed(monitor, "1", bundle, synthetic_frame(1000, seed=21)) == []
    changed = synthetic_frame(200, seed=22)
    rng = np.random.default_rng(3)
    flip = rng.random(len(changed)) < 0.2
    changed["y"] = np.where(flip, np.where(changed.y == "yes", "no", "yes"), changed.y)
    alarms = feed(monitor, "1", bundle, changed)
    assert len(alarms) == 1 and alarms[0].causes == ("step",), alarms
    step = alarms[0].step
    assert (
        step is not None and step.after - step.before > 0.1 and abs(step.at - 800) <= 50
    )  # in the window: 800 old, 200 new
    assert alarms[0].details()["step"]["at"] == step.at and "rose from" in alarms[0].describe()
    assert monitor.live_metric is not None and monitor.live_metric > alarms[0].holdout - 0.05  # type: ignore[operator]
    quiet = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=0)
    assert feed(quiet, "1", bundle, synthetic_frame(3000, seed=23)) == []  # no change: no step


def test_a_model_right_every_time_is_caught_a_few_answers_after_its_rule_flips(bundle: ModelBundle) -> None:
    """Labels that agree with every answer, then contradict every one, arriving one at a time: the
    step is found ``STEP_MIN_AFTER`` to ``STEP_MIN_AFTER + STEP_EVERY`` observations after the flip,
    fewer than 10 (each of those is an answer served wrong before anything can change)."""
    frame = synthetic_frame(1100, seed=25)
    answers, _ = bundle.pipeline.decode(bundle.predict_matrix(bundle.pipeline.transform(
        frame.drop(columns=["y"]).to_dict("records"))))  # fmt: skip
    frame["y"] = np.where(np.arange(len(frame)) < 1000, answers, np.where(np.array(answers) == "yes", "no", "yes"))
    monitor = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=10_000)
    assert feed(monitor, "1", bundle, frame.iloc[:1000]) == []
    for after in range(1, 101):
        if alarms := feed(monitor, "1", bundle, frame.iloc[999 + after : 1000 + after], batch=1):
            break
    assert alarms and alarms[0].causes == ("step",), alarms
    assert STEP_MIN_AFTER <= after < min(10, STEP_MIN_AFTER + STEP_EVERY), after


def test_a_model_swapped_in_after_a_change_is_judged_early_against_its_holdout(bundle: ModelBundle) -> None:
    """A model that starts serving just after a change has no "before" in its own answers for the
    step test; its live error, far above what its holdout promised, raises a metric alarm within a
    few hundred observations, long before its 1,000-observation window is full. Without a change
    the early verdict stays quiet."""
    changed = synthetic_frame(1000, seed=24)
    flip = np.random.default_rng(4).random(len(changed)) < 0.25
    changed["y"] = np.where(flip, np.where(changed.y == "yes", "no", "yes"), changed.y)
    monitor = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=10_000)
    alarms = feed(monitor, "2", bundle, changed, batch=50)
    assert len(alarms) == 1 and alarms[0].causes == ("metric",), alarms
    alarm = alarms[0]
    assert alarm.observations <= 400, alarm.observations  # the window holds 1,000
    assert alarm.live is not None and alarm.holdout is not None and alarm.live < alarm.holdout - 0.05
    assert "vs holdout" in alarm.describe()
    quiet = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=0)
    assert feed(quiet, "2", bundle, synthetic_frame(900, seed=25), batch=50) == []


def test_the_early_verdict_allows_for_a_holdout_of_a_few_rows(bundle: ModelBundle) -> None:
    """The first model after a change is crowned on a holdout of a few dozen rows: a perfect score
    there promises little. Six points short of it after 900 answers is an alarm when the figure
    stands on 5,000 rows, and not when it stands on 20."""
    frame = synthetic_frame(900, seed=26)
    for rows, alarms in ((5000.0, 1), (20.0, 0)):
        promised = profiled(bundle, {"loss": 0.01, "accuracy": 1.0, "rows": rows})
        monitor = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=10_000)
        raised = feed(monitor, "3", promised, frame, batch=50)
        assert len(raised) == alarms and all(a.causes == ("metric",) for a in raised), (rows, raised)


def test_a_new_model_starts_new_windows_and_old_answers_do_not_count(bundle: ModelBundle) -> None:
    monitor = DriftMonitor(window=200, psi_threshold=0.25, metric_drop=0.05, cooldown=0)
    feed(monitor, "1", bundle, synthetic_frame(400, seed=17))
    assert monitor.served_in_window == 200 and monitor.observed_in_window == 200
    monitor.requests("2", bundle, bundle.pipeline.transform(synthetic_frame(50, seed=18).to_dict("records")))
    monitor.outcomes.extend(("1", "yes", "no", {}) for _ in range(300))  # labels for answers of version 1
    assert monitor.check() is None
    assert monitor.model_version == "2" and monitor.served_in_window == 50 and monitor.observed_in_window == 0


def test_heavy_tailed_regression_errors_raise_no_step_and_a_lasting_shift_does() -> None:
    """Regression errors have no exact count to guard a short tail: residuals from a Student t with
    2 degrees of freedom, stationary over 20,000 answers, raise no alarm (looking 10 rows after a step
    they raised several); a lasting shift of the target does."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x1": rng.normal(size=21_100)})
    frame["y"] = 2 * frame.x1 + rng.standard_t(2, size=len(frame))
    pipeline = FeaturePipeline.fit(frame.iloc[:1000], "y")
    data = lgb.Dataset(pipeline.transform_frame(frame.iloc[:1000]), label=2 * frame.x1.iloc[:1000].to_numpy())
    # a holdout error the live one stays under: only a step can raise an alarm
    metrics = {"metrics": {"mae": 50.0, "rows": 1000}}
    model = ModelBundle(lgb.train({"objective": "regression", "verbosity": -1}, data, 20), pipeline, metrics)
    assert pipeline.task == "regression"
    monitor = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=0)
    assert feed(monitor, "1", model, frame.iloc[1000:21_000], batch=10) == []
    shifted = frame.iloc[21_000:].assign(y=frame.y.iloc[21_000:] + 20)
    alarms = feed(monitor, "1", model, shifted, batch=10)
    assert alarms and alarms[0].causes == ("step",) and alarms[0].step is not None, alarms
    assert alarms[0].step.after - alarms[0].step.before > 2  # found within a few dozen shifted rows


def test_a_bundle_without_profile_is_served_with_the_live_check_only() -> None:
    old = train(rounds=30)
    old = ModelBundle(old.booster, old.pipeline, {"metrics": {"loss": 0.3, "accuracy": 0.95}})
    monitor = DriftMonitor(window=200, psi_threshold=0.25, metric_drop=0.05, cooldown=0)
    shifted = synthetic_frame(400, seed=19)
    shifted["x2"] += 3
    shifted["y"] = np.where(shifted.y == "yes", "no", "yes")
    alarms = feed(monitor, "7", old, shifted)
    assert alarms and all(a.causes == ("metric",) for a in alarms)
    assert monitor.feature_psi() == {} and monitor.holdout_metric == ("accuracy", 0.95)


# --- on the Adult stream ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Adult:
    bundle: ModelBundle
    features: list[dict[str, Any]]
    labels: list[Any]
    train: Any


@pytest.fixture(scope="module")
def adult() -> Adult:
    """A model of the Adult training split with the profile bootstrap gives it, and the test split."""
    frame, test = read_table(ADULT_TRAIN), read_table(ADULT_TEST)
    pipeline = FeaturePipeline.fit(frame, "income")
    x, y = pipeline.transform_frame(frame), pipeline.encode_labels(frame.income.tolist())
    params = {"objective": "binary", "verbosity": -1, "num_threads": 1, "learning_rate": 0.1, "seed": 1}
    booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=pipeline.categorical_indices), 150)
    test = test[test.income.notna()].reset_index(drop=True)
    ty = pipeline.encode_labels(test.income.tolist())
    metrics = evaluate(ModelBundle(booster, pipeline), pipeline.transform_frame(test), ty)
    profile = ReferenceProfile.build(pipeline, x[reference_rows(len(y), 0, seed=42)], metrics)
    bundle = ModelBundle(booster, pipeline, {"metrics": metrics, "profile": profile.to_dict()})
    rows = test.drop(columns=["income"]).astype(object).where(test.notna(), None).to_dict("records")
    return Adult(bundle, rows, test.income.tolist(), frame)


def stream(adult: Adult, count: int, drift_at: int | None, monitor: DriftMonitor, batch: int = 50) -> Iterator[int]:
    """Serve ``count`` Adult test requests (cycling) as the sample app sends them; yields the
    index after each batch that raised an alarm."""
    plan = plan_drift(adult.train, "income", "binary", drift_at) if drift_at is not None else None
    pipeline, n = adult.bundle.pipeline, len(adult.features)
    for start in range(0, count, batch):
        rows, labels = [], []
        for i in range(start, start + batch):
            features, label = adult.features[i % n], adult.labels[i % n]
            if plan is not None:
                features, label = apply_drift(plan, i, features, label)
            rows.append(features)
            labels.append(label)
        matrix = pipeline.transform(rows)
        predictions, _ = pipeline.decode(adult.bundle.predict_matrix(matrix))
        monitor.requests("1", adult.bundle, matrix)
        monitor.outcomes.extend(("1", p, y, f) for p, y, f in zip(predictions, labels, rows, strict=True))
        if monitor.check() is not None:
            yield start + batch


def default_monitor() -> DriftMonitor:
    from streamfit.common.settings import Settings

    defaults = Settings.model_fields
    return DriftMonitor(
        defaults["drift_window"].default, defaults["drift_psi_threshold"].default,
        defaults["drift_metric_drop"].default, defaults["drift_cooldown"].default,
    )  # fmt: skip


def test_adult_without_drift_raises_no_alarm_over_20000_requests(adult: Adult) -> None:
    """The default settings on 20,000 undrifted Adult test requests (the split cycled): no drift
    retrain would be asked for. Logic only: the whole service is in test_drift_loop.py."""
    monitor = default_monitor()
    assert list(stream(adult, 20_000, None, monitor)) == []
    assert monitor.overall_psi is not None and monitor.live_metric is not None  # it did judge, on full windows


def test_adult_with_the_sample_apps_drift_raises_an_alarm_within_500_requests(adult: Adult) -> None:
    monitor = default_monitor()
    alarms = list(stream(adult, 6000, 3000, monitor))
    assert alarms and 3000 < alarms[0] <= 3500, alarms


def test_after_a_step_alarm_the_monitor_offers_the_rows_since_the_change_for_an_interim_model(
    bundle: ModelBundle,
) -> None:
    """Every label flipped after 1,000 answers: once the step alarm has placed the change, the
    monitor offers the labelled rows from there on (the new world's alone), from a few dozen on and
    again as they grow, and an interim model learnt from them answers as the new labels do. Labels
    that flip a fifth of the time are offered too, and learn nothing that beats the old model;
    without an alarm nothing is offered."""
    monitor = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=10_000)
    assert feed(monitor, "1", bundle, synthetic_frame(1000, seed=21)) == [] and monitor.interim() is None
    flipped = synthetic_frame(300, seed=22)
    flipped["y"] = np.where(flipped.y == "yes", "no", "yes")
    offered, alarms = [], []
    for start in range(0, 300, 10):
        alarms += feed(monitor, "1", bundle, flipped[start : start + 10], batch=10)
        if (rows := monitor.interim()) is not None:
            offered.append((start + 10, rows))
    assert len(alarms) == 1 and "step" in alarms[0].causes
    first_at, first = offered[0]
    assert first_at <= 30 and first.version == "1" and len(first.labels) >= MIN_ROWS, (first_at, len(first.labels))
    # from where the error stepped up (the scan wants STEP_MIN_AFTER rows after a step: with fewer, a few rows
    # before it), the labels with the answers served, oldest first
    ordered = feed_labels(bundle, synthetic_frame(1000, seed=21)) + feed_labels(bundle, flipped)
    end = 1000 + first_at
    assert first.labels.tolist() == ordered[end - len(first.labels) : end]
    assert first.features[-1] == flipped.drop(columns=["y"]).iloc[first_at - 1].to_dict()
    assert len(first.labels) - first_at <= 20 and (first.served != first.labels)[-first_at:].mean() > 0.9
    # with more rows after it the step is placed again, where the labels flipped
    second_at, second = offered[1]
    assert len(second.labels) == second_at and (second.served != second.labels).mean() > 0.9
    sizes = [len(rows.labels) for _, rows in offered]
    assert sizes == sorted(set(sizes)) and sizes[-1] >= 250, sizes  # offered again as the rows grow
    assert all(rows.since_change for _, rows in offered)
    later = synthetic_frame(1200, seed=24)
    later["y"] = np.where(later.y == "yes", "no", "yes")
    beyond = []
    for start in range(0, 1200, 50):
        feed(monitor, "1", bundle, later[start : start + 50], batch=50)
        if (rows := monitor.interim()) is not None:
            beyond.append(rows)
    # the change has left the window: the whole window, still offered as labels come, a quarter apart
    assert len(beyond) >= 5 and not beyond[-1].since_change and len(beyond[-1].labels) == 1000
    grown = next(rows for _, rows in offered if len(rows.labels) >= 40)
    model = learn(bundle.pipeline, bundle.predict_matrix, grown, serving=False)
    assert model is not None
    fresh = synthetic_frame(300, seed=23)
    matrix = bundle.pipeline.transform(fresh.drop(columns=["y"]).to_dict("records"))
    served, _ = bundle.pipeline.decode(model.predict(matrix, bundle.predict_matrix(matrix)))
    assert np.mean(np.array(served) != fresh.y.to_numpy()) > 0.9

    noisy = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=10_000)
    assert feed(noisy, "1", bundle, synthetic_frame(1000, seed=21)) == []
    changed = synthetic_frame(400, seed=22)
    flip = np.random.default_rng(3).random(len(changed)) < 0.2
    changed["y"] = np.where(flip, np.where(changed.y == "yes", "no", "yes"), changed.y)
    learnt = []
    for start in range(0, 400, 50):
        feed(noisy, "1", bundle, changed[start : start + 50], batch=50)
        if (rows := noisy.interim()) is not None:
            learnt.append(learn(bundle.pipeline, bundle.predict_matrix, rows, serving=False))
    assert noisy.alarms == 1 and learnt and learnt == [None] * len(learnt)


def test_a_step_that_starts_after_an_alarm_is_not_held_back_by_the_cooldown(bundle: ModelBundle) -> None:
    """A first alarm (here the early verdict on a model whose labels a quarter of the time say
    otherwise) starts the cooldown; a change of the world after it (every label flips) is a step
    that alarm cannot have been about: it raises a second alarm at once, and only one."""
    noisy = synthetic_frame(600, seed=24)
    flip = np.random.default_rng(4).random(len(noisy)) < 0.25
    noisy["y"] = np.where(flip, np.where(noisy.y == "yes", "no", "yes"), noisy.y)
    monitor = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=10_000)
    first = feed(monitor, "2", bundle, noisy, batch=50)
    assert [a.causes for a in first] == [("metric",)]
    flipped = synthetic_frame(400, seed=26)
    flipped["y"] = np.where(flipped.y == "yes", "no", "yes")
    second = feed(monitor, "2", bundle, flipped, batch=50)
    assert len(second) == 1 and "step" in second[0].causes, second
    assert second[0].step is not None and second[0].step.at >= 550  # after the first alarm, in the window
    quiet = DriftMonitor(window=1000, psi_threshold=0, metric_drop=0.05, cooldown=10_000)
    assert [a.causes for a in feed(quiet, "2", bundle, noisy, batch=50)] == [("metric",)]
    more = synthetic_frame(400, seed=27)  # the same world as before: no step, and the cooldown holds
    again = np.random.default_rng(5).random(len(more)) < 0.25
    more["y"] = np.where(again, np.where(more.y == "yes", "no", "yes"), more.y)
    assert feed(quiet, "2", bundle, more, batch=50) == []
