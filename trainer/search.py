"""Hyper-parameter search: one space, three optimizers (hyperopt TPE, scikit-optimize GP, random).

The space is declared once (``SPACE``) and translated for each library, so that ``--optimizer``
changes how the next point is chosen and nothing else. Every search starts from the defaults the
bootstrap model used (``Dimension.start``), so the best trial is never worse in cross-validation
than the configuration the first model was trained with. The search stops at the trial budget,
at the time budget (the trial running at that moment finishes), or when ``should_stop`` says so.

Randomness comes from ``seed`` alone: the same objective values give the same proposals, hence
the same data, settings and seed give the same best parameters.

When one machine is not enough, ``spark_parallelism`` runs the TPE or random search with
hyperopt's ``SparkTrials`` on the Spark cluster of the active (or default) ``SparkSession``: that
many trials at a time, each on an executor. The trials are recorded on the driver as they finish,
so every trial still gets its MLflow child run. Parallel trials see fewer earlier results when
they are proposed, so a parallel search is not reproducible trial for trial.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from streamfit.common.errors import SearchFailed
from streamfit.trainer.objective import TrialInterrupted, TrialScore

log = logging.getLogger(__name__)

Optimizer = Literal["tpe", "gp", "random"]
Scale = Literal["log", "uniform", "int"]

FAILED_LOSS = 1e6  # what a failed trial reports to an optimizer that needs a number (GP)


@dataclass(frozen=True)
class Dimension:
    name: str
    low: float
    high: float
    scale: Scale
    start: float  # the bootstrap default, clipped into [low, high]

    def value(self, raw: Any) -> float | int:
        """An optimizer's raw proposal as the LightGBM parameter value."""
        if self.scale == "int":
            return int(min(self.high, max(self.low, round(float(raw)))))
        return float(min(self.high, max(self.low, float(raw))))


SPACE: tuple[Dimension, ...] = (
    Dimension("learning_rate", 0.01, 0.3, "log", 0.05),
    Dimension("num_leaves", 8, 128, "int", 31),
    Dimension("min_child_weight", 1e-3, 10.0, "log", 1e-3),
    Dimension("feature_fraction", 0.5, 1.0, "uniform", 0.9),
    Dimension("bagging_fraction", 0.5, 1.0, "uniform", 0.9),
    Dimension("lambda_l1", 1e-4, 10.0, "log", 1e-4),
    Dimension("lambda_l2", 1e-4, 10.0, "log", 1e-4),
)
FIXED_PARAMS: dict[str, Any] = {"bagging_freq": 1}


def to_params(raw: Mapping[str, Any], space: tuple[Dimension, ...] = SPACE) -> dict[str, Any]:
    return {d.name: d.value(raw[d.name]) for d in space} | FIXED_PARAMS


def params_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable identity of a parameter set, to recognise a point already scored."""
    return tuple(sorted(params.items()))


def past_points(params: list[Mapping[str, Any]], space: tuple[Dimension, ...] = SPACE) -> list[dict[str, Any]]:
    """Parameters of earlier cycles (MLflow params: text) as points of the space; a set that does
    not name every dimension, or names one with something that is not a number, is left out."""
    points: list[dict[str, Any]] = []
    for given in params:
        try:
            points.append(to_params({d.name: float(given[d.name]) for d in space}, space))
        except (KeyError, TypeError, ValueError):
            continue
    return points


def warm_start(params: Mapping[str, Any] | None, space: tuple[Dimension, ...] = SPACE) -> dict[str, Any]:
    """A model's parameters as a point of the space (clipped into it; defaults for missing ones)."""
    given = params or {}
    return to_params({d.name: given.get(d.name, d.start) for d in space}, space)


@dataclass(frozen=True)
class Trial:
    number: int  # 1-based, in the order the trials ran
    params: dict[str, Any]
    loss: float  # cross-validated, lower is better; inf for a failed trial
    best_iteration: int
    seconds: float
    cv_std: float = math.nan
    error: str | None = None
    pruned: bool = False  # stopped early as hopeless (``trainer.objective``): loss is where it stood

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.loss)


@dataclass(frozen=True)
class SearchResult:
    trials: tuple[Trial, ...]
    optimizer: Optimizer
    seconds: float
    stopped_by: Literal["trials", "time_budget", "stop"]

    @property
    def best(self) -> Trial:
        ok = [t for t in self.trials if t.ok]
        if not ok:
            errors = "; ".join(sorted({t.error or "non-finite loss" for t in self.trials}))[:500]
            raise SearchFailed(f"all {len(self.trials)} trials failed: {errors}")
        return min(ok, key=lambda t: (t.loss, t.number))


Objective = Callable[[dict[str, Any]], TrialScore]
OnTrial = Callable[[Trial, Trial | None], None]  # (this trial, best so far)


class Search:
    """One search: runs ``objective`` on proposals, keeps the trials, enforces the budgets."""

    def __init__(
        self,
        objective: Objective,
        *,
        optimizer: Optimizer,
        trials: int,
        time_budget: float,
        seed: int,
        on_trial: OnTrial | None = None,
        should_stop: Callable[[], bool] | None = None,
        space: tuple[Dimension, ...] = SPACE,
        spark_parallelism: int = 0,
        start: Mapping[str, Any] | None = None,
        known: Mapping[tuple[tuple[str, Any], ...], TrialScore] | None = None,
        past: list[dict[str, Any]] | None = None,
        parallel: int = 1,
    ) -> None:
        if spark_parallelism and optimizer == "gp":
            raise ValueError("Spark runs the tpe and random searches only (hyperopt SparkTrials); use --optimizer tpe")
        if parallel > 1 and optimizer == "gp":
            raise ValueError("the gp search proposes one point at a time; parallel trials need tpe or random")
        self.objective = objective
        self.optimizer = optimizer
        self.max_trials = trials
        self.time_budget = time_budget
        self.seed = seed
        self.on_trial = on_trial
        self.should_stop = should_stop or (lambda: False)
        self.space = space
        self.spark_parallelism = spark_parallelism
        self.parallel = max(1, parallel)  # trials scored at once on this machine (tpe, random)
        self.start = dict(start or {})  # warm start: e.g. the champion's parameters (missing ones: defaults)
        self.known = dict(known or {})  # scores already measured this cycle, by params_key: not run again
        # The best points of earlier cycles: evaluated (on this cycle's data) right after ``start``.
        seen = {params_key(to_params(self.start_point(), space))}
        self.past: list[dict[str, Any]] = []
        for point in past or []:
            if params_key(point) not in seen:  # the start, or a point already taken: once is enough
                seen.add(params_key(point))
                self.past.append(point)
        self.trials: list[Trial] = []
        self._record_lock = threading.Lock()
        self._deadline = math.inf
        self._stopped_by: Literal["trials", "time_budget", "stop"] = "trials"

    # --- the one evaluation path every optimizer goes through ---------------------------------
    def evaluate(self, raw: Mapping[str, Any]) -> Trial:
        return self.evaluate_all([raw])[0]

    def evaluate_all(self, raws: list[Mapping[str, Any]]) -> list[Trial]:
        """Score the points (at once, in threads, when there are several: LightGBM releases the GIL
        while it trains, and every trial shares the one binned Dataset) and record them in order.
        A trial that gives way (``TrialInterrupted``) is not recorded; the others are, then it is
        raised."""
        if len(raws) <= 1:
            scored = [self._score(raw) for raw in raws]
        else:
            from joblib import Parallel, delayed

            scored = Parallel(n_jobs=len(raws), prefer="threads")(delayed(self._score)(raw) for raw in raws)
        out = [self._record_scored(*one) for one in scored if not isinstance(one[1], TrialInterrupted)]
        interrupted = next((one[1] for one in scored if isinstance(one[1], TrialInterrupted)), None)
        if interrupted is not None:
            self._stopped_by = "stop"
            raise interrupted  # the search ends here; the cycle decides what a stop means
        return out

    def _score(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], TrialScore | Exception, float]:
        params = to_params(raw, self.space)
        known = self.known.get(params_key(params))
        if known is not None:
            return params, known, known.seconds if math.isfinite(known.seconds) else 0.0
        started = time.perf_counter()
        try:
            score: TrialScore | Exception = self.objective(params)
        except Exception as exc:  # noqa: BLE001 - a bad point fails its trial, not the search
            score = exc
        return params, score, time.perf_counter() - started

    def _record_scored(self, params: dict[str, Any], score: TrialScore | Exception, seconds: float) -> Trial:
        number = len(self.trials) + 1
        if isinstance(score, Exception):
            log.warning("trial %d failed: %s: %s", number, type(score).__name__, score)
            trial = Trial(number, params, math.inf, 0, seconds, error=f"{type(score).__name__}: {score}"[:500])
        else:
            trial = Trial(number, params, score.loss, score.best_iteration, seconds, score.std, pruned=score.pruned)
        self._record(trial)
        return trial

    def _record(self, trial: Trial) -> None:
        with self._record_lock:
            self.trials.append(trial)
            if self.on_trial is not None:
                ok = [t for t in self.trials if t.ok]
                self.on_trial(trial, min(ok, key=lambda t: (t.loss, t.number)) if ok else None)

    def done(self) -> bool:
        if self.should_stop():
            self._stopped_by = "stop"
            return True
        if len(self.trials) >= self.max_trials:
            self._stopped_by = "trials"
            return True
        if self.trials and time.monotonic() >= self._deadline:  # the first trial always runs
            self._stopped_by = "time_budget"
            return True
        return False

    def run(self) -> SearchResult:
        started = time.monotonic()
        self._deadline = started + self.time_budget
        if self.optimizer == "gp":
            self._run_gp()
        elif self.spark_parallelism:
            self._run_spark()
        else:
            self._run_hyperopt()
        return SearchResult(tuple(self.trials), self.optimizer, time.monotonic() - started, self._stopped_by)

    # --- hyperopt: TPE and random --------------------------------------------------------------
    def hyperopt_space(self) -> dict[str, Any]:
        from hyperopt import hp

        space: dict[str, Any] = {}
        for d in self.space:
            if d.scale == "log":
                space[d.name] = hp.loguniform(d.name, math.log(d.low), math.log(d.high))
            elif d.scale == "int":
                space[d.name] = hp.quniform(d.name, d.low, d.high, 1)
            else:
                space[d.name] = hp.uniform(d.name, d.low, d.high)
        return space

    def hyperopt_algorithm(self) -> Any:
        from hyperopt import rand, tpe

        if self.optimizer == "random":
            return rand.suggest
        # hyperopt's TPE samples at random for its first 20 trials by default, which is the whole
        # default budget; a quarter of the budget (2 to 10 trials) leaves room for the model.
        startup = min(10, max(2, self.max_trials // 4))
        return functools.partial(tpe.suggest, n_startup_jobs=startup)

    def _run_hyperopt(self) -> None:
        """hyperopt's own loop (``fmin``) driven by hand, so that ``parallel`` proposals can be
        scored at once: the first points in order, then ``parallel`` new proposals at a time from
        the trials so far (one at a time, as ``fmin`` does, when ``parallel`` is 1)."""
        from hyperopt import STATUS_FAIL, STATUS_OK, base
        from hyperopt.fmin import generate_trials_to_calculate

        domain = base.Domain(lambda _point: None, self.hyperopt_space())
        history = generate_trials_to_calculate(self.first_points())
        algorithm, rstate = self.hyperopt_algorithm(), np.random.default_rng(self.seed)

        def unscored(room: int) -> list[dict[str, Any]]:
            return [doc for doc in history._dynamic_trials if doc["state"] == base.JOB_STATE_NEW][:room]

        while not self.done():
            room = min(self.parallel, self.max_trials - len(self.trials))
            waiting = unscored(room)
            if len(waiting) < room:  # proposals fill what the first points leave of the batch
                ids = history.new_trial_ids(room - len(waiting))
                history.insert_trial_docs(algorithm(ids, domain, history, rstate.integers(2**31 - 1)))
                history.refresh()
                waiting = unscored(room)
            if not waiting:  # the optimizer proposed nothing more
                break
            for doc in waiting:
                doc["state"] = base.JOB_STATE_RUNNING
            trials = self.evaluate_all([{k: v[0] for k, v in doc["misc"]["vals"].items()} for doc in waiting])
            for doc, trial in zip(waiting, trials, strict=True):
                doc["state"] = base.JOB_STATE_DONE
                doc["result"] = {"status": STATUS_OK, "loss": trial.loss} if trial.ok else {"status": STATUS_FAIL}
            history.refresh()

    # --- hyperopt on Spark ------------------------------------------------------------------------
    def _run_spark(self) -> None:
        from hyperopt import JOB_STATE_ERROR, SparkTrials, fmin
        from hyperopt.exceptions import AllTrialsFailed

        # Local mode runs the executors' Python on this machine: make it this interpreter, which
        # has LightGBM. A cluster sets PYSPARK_PYTHON itself.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        trials = SparkTrials(parallelism=self.spark_parallelism)
        recorded: set[int] = set()

        def collect(found: Any) -> None:
            """Record the trials the executors finished, in the order hyperopt numbered them."""
            for doc in sorted(found.trials, key=lambda d: d["tid"]):
                result = doc.get("result") or {}
                if doc["tid"] in recorded or (doc.get("state") != JOB_STATE_ERROR and "params" not in result):
                    continue
                recorded.add(doc["tid"])
                if "params" not in result:  # the task itself failed on the executor
                    vals = doc.get("misc", {}).get("vals", {})
                    raw = {k: v[0] for k, v in vals.items() if v}
                    error = str(doc.get("misc", {}).get("error", "the Spark task failed"))[:500]
                    self._record(Trial(len(self.trials) + 1, to_params(raw, self.space), math.inf, 0, 0.0, error=error))
                    continue
                ok = result.get("status") == "ok"
                self._record(Trial(
                    len(self.trials) + 1, dict(result["params"]), float(result["loss"]) if ok else math.inf,
                    int(result.get("best_iteration", 0)), float(result.get("seconds", 0.0)),
                    float(result.get("std", math.nan)), None if ok else str(result.get("error", "failed")),
                ))  # fmt: skip

        def early_stop(found: Any, *args: Any) -> tuple[bool, tuple[Any, ...]]:
            collect(found)
            return self.done(), args

        with contextlib.suppress(AllTrialsFailed):
            fmin(
                remote_trial(self.objective, self.space), self.hyperopt_space(), algo=self.hyperopt_algorithm(),
                max_evals=self.max_trials, trials=trials, rstate=np.random.default_rng(self.seed),
                early_stop_fn=early_stop, show_progressbar=False, verbose=False, return_argmin=False,
            )  # fmt: skip
        collect(trials)

    def start_point(self) -> dict[str, float]:
        """The first point evaluated: ``start`` where it names a dimension, the defaults elsewhere."""
        return {d.name: float(d.value(self.start.get(d.name, d.start))) for d in self.space}

    def first_points(self) -> list[dict[str, float]]:
        """``start``, then the past points (within the trial budget), as the optimizers take them."""
        past = [{d.name: float(p[d.name]) for d in self.space} for p in self.past]
        return [self.start_point(), *past][: max(1, self.max_trials)]

    # --- scikit-optimize: Gaussian process -----------------------------------------------------
    def _run_gp(self) -> None:
        from skopt import gp_minimize
        from skopt.space import Integer, Real

        dimensions = [
            Integer(int(d.low), int(d.high), name=d.name) if d.scale == "int"
            else Real(d.low, d.high, prior="log-uniform" if d.scale == "log" else "uniform", name=d.name)
            for d in self.space
        ]  # fmt: skip
        names = [d.name for d in self.space]
        x0 = [[int(point[d.name]) if d.scale == "int" else float(point[d.name]) for d in self.space]
              for point in self.first_points()]  # fmt: skip

        def fn(values: list[Any]) -> float:
            if self.done():  # gp_minimize scores every x0 point (the start, past points) before it asks to stop
                return FAILED_LOSS
            trial = self.evaluate(dict(zip(names, values, strict=True)))
            return trial.loss if trial.ok else FAILED_LOSS

        if self.done():
            return
        # GP needs a few random points before its model means anything: about a third of the
        # budget, at most 10, after the start point.
        initial = min(10, max(0, (self.max_trials - len(x0)) // 3)) if self.max_trials > len(x0) else 0
        gp_minimize(
            fn, dimensions, n_calls=self.max_trials, n_initial_points=initial, x0=x0,
            random_state=self.seed, callback=[lambda _result: self.done()], n_jobs=1,
        )  # fmt: skip


def remote_trial(objective: Objective, space: tuple[Dimension, ...]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The function SparkTrials ships to an executor: it captures only the (picklable) objective
    and returns everything the driver needs to record the trial."""

    def run(raw: dict[str, Any]) -> dict[str, Any]:
        params = to_params(raw, space)
        started = time.perf_counter()
        try:
            score = objective(params)
        except Exception as exc:  # noqa: BLE001 - a bad point fails its trial, not the search
            return {"status": "fail", "params": params, "error": f"{type(exc).__name__}: {exc}"[:500],
                    "seconds": time.perf_counter() - started}  # fmt: skip
        return {"status": "ok", "loss": score.loss, "params": params, "best_iteration": score.best_iteration,
                "std": score.std, "seconds": time.perf_counter() - started}  # fmt: skip

    return run
