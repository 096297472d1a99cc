"""The search on a real LightGBM Dataset (no broker, no MLflow): every optimizer, budgets,
determinism, and one Dataset for all trials."""

from __future__ import annotations

import logging
import threading
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from streamfit.common.errors import SearchFailed
from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.settings import load_settings
from streamfit.trainer.fit import task_params, trial_folds
from streamfit.trainer.objective import CrossValidation, TrialInterrupted, TrialScore, build_dataset
from streamfit.trainer.search import SPACE, Search, Trial, params_key, past_points, warm_start
from tests.trainer.support import synthetic


def cross_validation(task: str = "binary", rows: int = 400) -> CrossValidation:
    target = {"binary": "bought", "multiclass": "species", "regression": "price"}[task]
    frame = synthetic(task, rows)
    pipeline = FeaturePipeline.fit(frame, target)
    params = task_params(pipeline, load_settings(num_threads=1, seed=7))
    x, y = pipeline.transform_frame(frame), pipeline.encode_labels(frame[target].tolist())
    dataset = build_dataset(pipeline, x, y, None, params)
    return CrossValidation(dataset, params, folds=3, max_rounds=40, early_stopping=10, seed=7,
                           stratified=task != "regression")  # fmt: skip


def search(cv: Any, optimizer: str, trials: int = 4, **kwargs: Any) -> Search:
    return Search(cv, optimizer=optimizer, trials=trials, time_budget=kwargs.pop("time_budget", 60.0), seed=7,
                  **kwargs)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize("optimizer", ["tpe", "gp", "random"])
def test_each_optimizer_runs_the_budget_starting_from_the_defaults_and_is_deterministic(optimizer: str) -> None:
    cv = cross_validation()
    seen: list[tuple[int, float]] = []
    first = search(cv, optimizer, on_trial=lambda t, best: seen.append((t.number, best.loss if best else 0))).run()
    assert [t.number for t in first.trials] == [1, 2, 3, 4] and first.stopped_by == "trials"
    assert first.trials[0].params["learning_rate"] == 0.05 and first.trials[0].params["num_leaves"] == 31
    assert all(t.ok and 1 <= t.best_iteration <= 40 for t in first.trials)
    assert first.best.loss == min(t.loss for t in first.trials)
    assert [b for _, b in seen] == [min(t.loss for t in first.trials[:i]) for i in range(1, 5)]
    for trial in first.trials:
        for dim in SPACE:
            assert dim.low <= trial.params[dim.name] <= dim.high
        assert isinstance(trial.params["num_leaves"], int)
    assert len({tuple(sorted(t.params.items())) for t in first.trials}) == 4  # the optimizer explored

    second = search(cv, optimizer).run()
    assert [t.params for t in second.trials] == [t.params for t in first.trials]
    assert second.best.params == first.best.params and second.best.loss == first.best.loss
    assert cv.constructions == 1  # eight trials, one binned Dataset


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_other_tasks_score_with_their_own_metric(task: str) -> None:
    cv = cross_validation(task)
    assert cv.metric == {"multiclass": "multi_logloss", "regression": "l2"}[task]
    result = search(cv, "tpe", trials=2).run()
    assert result.best.ok and result.best.loss > 0


def test_time_budget_ends_the_search_after_the_running_trial() -> None:
    result = search(cross_validation(), "tpe", trials=50, time_budget=0.001).run()
    assert len(result.trials) == 1 and result.stopped_by == "time_budget"
    gp = search(cross_validation(), "gp", trials=50, time_budget=0.001).run()
    assert len(gp.trials) == 1 and gp.stopped_by == "time_budget"
    # gp_minimize scores all of its first points (x0: the start and the past points) before it asks
    # whether to stop: the budget holds there too
    past = [{**warm_start(None), "num_leaves": 15}, {**warm_start(None), "num_leaves": 63}]
    gp = search(cross_validation(), "gp", trials=50, time_budget=0.001, past=past).run()
    assert len(gp.trials) == 1 and gp.stopped_by == "time_budget"


def test_stop_request_ends_the_search() -> None:
    trials: list[Trial] = []
    result = search(cross_validation(), "random", trials=50, on_trial=lambda t, b: trials.append(t),
                    should_stop=lambda: len(trials) >= 2).run()  # fmt: skip
    assert len(result.trials) == 2 and result.stopped_by == "stop"


def test_a_failing_trial_does_not_end_the_search() -> None:
    cv = cross_validation()
    calls = {"n": 0}

    def flaky(params: dict[str, Any]) -> TrialScore:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("LightGBM refused these parameters")
        return cv(params)

    for optimizer in ("tpe", "gp"):
        calls["n"] = 0
        result = search(flaky, optimizer, trials=3).run()
        assert len(result.trials) == 3
        assert [t.ok for t in result.trials] == [True, False, True]
        assert "refused" in str(result.trials[1].error) and result.best.ok


def test_all_trials_failing_is_an_error() -> None:
    def broken(params: dict[str, Any]) -> TrialScore:
        raise ValueError("no")

    result = search(broken, "random", trials=2).run()
    with pytest.raises(SearchFailed, match="all 2 trials failed"):
        _ = result.best


@pytest.mark.parametrize("optimizer", ["tpe", "gp"])
def test_an_interrupt_abandons_the_running_trial_between_boosting_rounds(
    optimizer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A drift request waiting behind a count cycle must not wait for a whole trial (issue 12),
    and giving way is no error: nothing is logged at ERROR (hyperopt logs a raising trial so)."""
    cv = cross_validation()
    rounds = {"n": 0}

    def interrupt() -> bool:
        rounds["n"] += 1
        return rounds["n"] > 50  # in the second trial (the first runs at most 40 rounds)

    cv.interrupt = interrupt
    run = search(cv, optimizer, trials=10)
    with caplog.at_level(logging.INFO), pytest.raises(TrialInterrupted, match="abandoned after"):
        run.run()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(run.trials) == 1  # the interrupted trial is neither recorded nor counted as failed
    assert run.trials[0].ok
    cv.interrupt = None
    assert cv({**run.trials[0].params}).loss == run.trials[0].loss  # the objective still works afterwards


def test_a_trial_that_cannot_catch_up_with_the_best_is_pruned_and_the_best_runs_in_full() -> None:
    cv = cross_validation(rows=600)
    cv.max_rounds = 300
    best = cv({"learning_rate": 0.3, "num_leaves": 31})
    assert not best.pruned and cv.best_loss == best.loss
    slow = {"learning_rate": 0.01, "num_leaves": 8}  # far behind after 20 rounds, gaining little per round
    pruned = cv(slow)
    assert pruned.pruned and pruned.loss > best.loss and pruned.best_iteration < 300
    cv.prune = False
    full = cv(slow)
    assert not full.pruned and full.best_iteration > pruned.best_iteration
    # In a search a pruned trial is recorded as such (the optimizer learns it was poor), never the best.
    result = search(cross_validation(rows=600), "tpe", trials=6, start={"learning_rate": 0.3}).run()
    assert not result.trials[0].pruned and not result.best.pruned
    assert all(t.loss >= result.best.loss for t in result.trials if t.pruned)


@pytest.mark.parametrize("optimizer", ["tpe", "gp"])
def test_earlier_cycles_best_points_are_evaluated_right_after_the_start(optimizer: str) -> None:
    past = past_points(
        [
            {
                "learning_rate": "0.2",
                "num_leaves": "15",
                "min_child_weight": "0.01",
                "feature_fraction": "0.7",
                "bagging_fraction": "0.8",
                "lambda_l1": "0.001",
                "lambda_l2": "1.0",
                "num_rounds": "40",
            },
            {"learning_rate": "0.1"},  # an incomplete set (another space): left out
            {d.name: str(d.start) for d in SPACE},  # the start itself: not evaluated twice
        ]
    )
    assert len(past) == 2 and past[0]["num_leaves"] == 15 and past[0]["learning_rate"] == 0.2
    result = search(cross_validation(), optimizer, trials=4, past=past).run()
    assert result.trials[0].params == warm_start(None)
    assert result.trials[1].params == past[0]
    assert len({params_key(t.params) for t in result.trials}) == 4  # the rest explored


@pytest.mark.parametrize("optimizer", ["tpe", "random"])
def test_parallel_trials_run_at_once_on_the_one_dataset_and_are_recorded_in_order(optimizer: str) -> None:
    """``--parallel-trials 2``: two proposals scored at a time in threads (issue 13)."""
    cv = cross_validation(rows=600)
    cv.prune = False  # which of two trials finishes first would change what a pruned one scores
    lock, active, most = threading.Lock(), [0], [0]

    def objective(params: dict[str, Any]) -> TrialScore:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            return cv(params)
        finally:
            with lock:
                active[0] -= 1

    seen: list[int] = []
    result = search(objective, optimizer, trials=6, parallel=2, on_trial=lambda t, best: seen.append(t.number)).run()
    assert most[0] == 2  # two trials were in LightGBM at the same time
    assert [t.number for t in result.trials] == seen == [1, 2, 3, 4, 5, 6] and result.stopped_by == "trials"
    assert result.trials[0].params["learning_rate"] == 0.05  # the start point still goes first
    assert all(t.ok for t in result.trials) and len({params_key(t.params) for t in result.trials}) == 6
    assert cv.constructions == 1  # the threads shared the binned Dataset
    for trial in result.trials:  # a trial's score is the one it gets alone
        assert cv(trial.params).loss == pytest.approx(trial.loss, rel=1e-9)


def test_an_interrupt_ends_every_parallel_trial_and_records_none_of_them() -> None:
    cv = cross_validation()
    recorded: list[int] = []
    cv.interrupt = lambda: len(recorded) >= 2  # once the first pair is recorded: inside the second pair
    run = search(cv, "tpe", trials=10, parallel=2, on_trial=lambda t, best: recorded.append(t.number))
    with pytest.raises(TrialInterrupted, match="abandoned after 1 boosting rounds"):
        run.run()
    assert len(run.trials) == 2 and all(t.ok for t in run.trials) and run._stopped_by == "stop"


def test_gp_refuses_parallel_trials() -> None:
    with pytest.raises(ValueError, match="one point at a time"):
        search(cross_validation(), "gp", parallel=2)


def test_one_split_scores_a_trial_on_one_held_out_fifth_the_same_rows_for_every_trial() -> None:
    folds = cross_validation(rows=1000)
    cv = CrossValidation(folds.dataset, folds.base_params, folds=1, max_rounds=40, early_stopping=10, seed=7,
                         stratified=True)  # fmt: skip
    y = folds.dataset.get_label()
    assert cv.split is not None
    ((train, valid),) = cv.split  # every trial is held to these rows
    assert len(valid) == 200 and sorted(np.r_[train, valid]) == list(range(1000))
    assert abs(y[valid].mean() - y.mean()) < 0.01  # stratified: the classes keep their shares
    params = {"learning_rate": 0.1, "num_leaves": 15}
    score = cv(params)
    # One model, trained on the other four fifths: the score is that model's loss on the fifth.
    booster = lgb.train({**cv.base_params, **params}, folds.dataset.subset(sorted(train)), num_boost_round=40,
                        valid_sets=[folds.dataset.subset(sorted(valid))],
                        callbacks=[lgb.early_stopping(10, verbose=False, min_delta=cv.min_delta)])  # fmt: skip
    assert score.best_iteration == booster.best_iteration
    assert score.loss == pytest.approx(booster.best_score["valid_0"]["binary_logloss"], rel=1e-9)
    assert score.std == 0.0  # one fold: no spread
    assert cv(params) == score


def test_trials_are_scored_on_one_split_from_one_split_rows_on() -> None:
    settings = load_settings(cv_folds=4, one_split_rows=5000)
    assert (trial_folds(settings, 4999), trial_folds(settings, 5000)) == (4, 1)
    assert trial_folds(load_settings(cv_folds=4, one_split_rows=0), 10**7) == 4
