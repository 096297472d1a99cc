"""One training cycle, start to finish: data up to the watermarks, search, final model, holdout
comparison with the champion, registration, and promotion or rejection.

The order of the last steps is what makes a reload impossible to half-see: the bundle is stored
(``save_bundle`` returns once the artifact is written) before a version points at it, the version
exists before the ``champion`` alias moves, and the alias moves before the reload message is
sent. The run's ``streamfit.state`` tag says how far it got, for ``trainer.recovery``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import numpy as np
from threadpoolctl import threadpool_limits

from streamfit.common import __version__
from streamfit.common import tags as tag
from streamfit.common.bundle import ModelBundle
from streamfit.common.change import latest_change
from streamfit.common.errors import BundleError, TrainServeSkew
from streamfit.common.linear import LinearScore
from streamfit.common.messages import ModelReload
from streamfit.common.model_store import ModelStore
from streamfit.common.profile import ReferenceProfile
from streamfit.common.settings import Settings
from streamfit.trainer import plots
from streamfit.trainer.coalesce import RetrainBatch
from streamfit.trainer.crown import crown
from streamfit.trainer.data import BaseData, CycleData, Observations, assemble, load_base, select_observations
from streamfit.trainer.drift import ADVERSARIAL_ROWS, adversarial_validation, reference_rows
from streamfit.trainer.fit import holdout_scores, parallel_trials, task_params, train_bundle, trial_folds, usable_cores
from streamfit.trainer.linear import fit_linear_score, linear_score_wins
from streamfit.trainer.metrics import CYCLE_SECONDS, CYCLES, DRIFT_SCORE, SKEW_CHECKED, SKEW_MISMATCHES, TRIALS
from streamfit.trainer.objective import CrossValidation, TrialInterrupted, TrialScore, build_dataset
from streamfit.trainer.observations import ObservationLog, Refresh
from streamfit.trainer.progress import SearchProgress
from streamfit.trainer.promotion import Decision, better_share, decide
from streamfit.trainer.publisher import Publisher
from streamfit.trainer.search import Search, SearchResult, Trial, params_key, past_points, warm_start
from streamfit.trainer.tracking import CycleRun

log = logging.getLogger(__name__)

NEW_WORLD_WAIT = 30.0  # most seconds a cycle waits for enough rows after a change of the world
NEW_WORLD_IDLE = 5.0  # ... and without a new observation (the stream has gone quiet)
# Most seconds a drift request for a rising error waits for the change to show in the observations.
# A false alarm (LED in the recovery suite: a bootstrap figure a little optimistic) waits it all.
CHANGE_WAIT = 10.0
RESCAN_BEFORE = 1000  # rows before a change found earlier that a later scan looks at again
READ_AGAIN = 0.1  # seconds between two reads while waiting: at 100 requests/s, 10 rows of the new world
PAST_CYCLES = 3  # earlier cycles whose best parameters a search evaluates first

SEARCH_SETTINGS = ("optimizer", "trials", "time_budget", "cv_folds", "one_split_rows", "max_rounds",
                   "early_stopping", "holdout_share", "half_life", "window", "observation_weight",
                   "promotion_margin", "min_rows", "objective", "metric", "seed", "promotion_confidence",
                   "holdout_min", "change_detection", "pre_change_weight")  # fmt: skip


class CycleAborted(Exception):
    """``stop()`` was called during the search: the cycle ends unpublished and uncommitted."""


@dataclass(frozen=True)
class CycleResult:
    run_id: str
    state: str  # promoted, rejected or too_few_rows
    reason: str
    seconds: float
    watermarks: dict[int, int]
    counts: dict[str, int]
    data_hash: str
    version: str | None = None
    reload: ModelReload | None = None
    decision: Decision | None = None
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    champion_version: str | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_iteration: int = 0
    best_cv_loss: float = math.nan
    trials: int = 0
    search_seconds: float = 0.0
    fast_refit: str = ""  # what became of the fast refit
    fast_version: str | None = None  # the version the fast refit crowned, if it did

    @property
    def promoted(self) -> bool:
        return self.state == "promoted"

    def summary(self) -> str:
        if self.state == "too_few_rows":
            return f"cycle {self.run_id}: too few rows ({self.counts.get('rows', 0)}), nothing published"
        champion = (
            f"champion v{self.champion_version} {self.champion_metrics['loss']:.5f}"
            if self.champion_metrics and self.champion_version else "no champion"
        )  # fmt: skip
        return (
            f"cycle {self.run_id}: {self.trials} trials in {self.search_seconds:.1f}s, version {self.version} "
            f"{self.state} (holdout loss {self.candidate_metrics.get('loss', math.nan):.5f} vs {champion}) "
            f"in {self.seconds:.1f}s"
        )


class CyclePreempted(CycleAborted):
    """A drift request arrived during a count cycle's search: the cycle ends unpublished (what its
    fast refit crowned stays) and runs again together with the drift request, first."""


@dataclass
class _Champion:
    version: str | None
    bundle: ModelBundle | None
    metrics: dict[str, float] | None  # on this cycle's holdout; None: nothing to beat
    losses: np.ndarray | None  # per holdout row, for the paired comparison
    params: dict[str, Any] | None  # what it was trained with: the warm start


@dataclass(frozen=True)
class _Candidate:
    bundle: ModelBundle
    metrics: dict[str, float]
    losses: np.ndarray
    kind: str  # "fast refit", "leaf refit" (the champion's trees, new leaf values) or "search"


@dataclass(frozen=True)
class _Outcome:
    decision: Decision
    version: str | None  # None: a fast refit that lost (not registered)
    reload: ModelReload | None  # set when crowned

    @property
    def promoted(self) -> bool:
        return self.reload is not None


@dataclass
class _Context:
    run: CycleRun
    batch: RetrainBatch
    data: CycleData
    refresh: Refresh
    params: dict[str, Any]
    dataset: Any
    champion: _Champion
    linear: LinearScore | None = None  # the scores ``dataset`` holds after the pipeline's columns
    known: dict[Any, TrialScore] = field(default_factory=dict)  # parameters already cross-validated on it


class CycleRunner:
    """Runs cycles for one model; keeps the base data and the observation cache between them."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        publisher: Publisher,
        *,
        progress: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.preempt: Callable[[], bool] = lambda: False  # set per cycle by the service (a drift request waits)
        self._preemptible = True  # this cycle gives way to a drift request (see run)
        self.observations = ObservationLog(settings)
        self._base: BaseData | None = None
        self._change_time: float | None = None  # observed_at of the first row after the latest change found
        # MLflow draws a download progress bar on stderr when it fetches the champion's bundle.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def run(self, batch: RetrainBatch, experiment_id: str | None = None) -> CycleResult:
        # The cycle's BLAS work (the linear score's fit, a Gaussian process's proposals) is small; on
        # more threads OpenBLAS's workers go on spinning after each call and take cores from the
        # LightGBM trial that follows, whose OpenMP threads then wait on each other: on Adult's rows
        # the trial after the linear fit took 0.41 s instead of 0.32 (docs/benchmarks.md). The limit
        # holds for the whole process, which runs one cycle at a time; the previous one returns after.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._run(batch, experiment_id)

    def _run(self, batch: RetrainBatch, experiment_id: str | None) -> CycleResult:
        started = time.monotonic()
        settings = self.settings
        try:
            experiment_id = experiment_id or self.store.experiment_id()  # an unreachable store fails here, first
            self._base = base = load_base(settings, self._base)
            self._preemptible = batch.reason != "drift"
            refresh, data, observations = self._read(base, expect_change=batch.error_rose)
            # A drift cycle that found no change gives way to the next drift request: that one may be
            # about a change that came after this cycle's alarm (which may have been a false one).
            self._preemptible = batch.reason != "drift" or data.change is None
            new_world = self._new_world_only(base, data, observations)
            run = CycleRun.start(self.store, experiment_id, f"cycle-{batch.reason}", self._tags(batch, data, refresh))
        except BaseException:
            CYCLES.labels("failed").inc()
            raise
        log.info(
            "cycle %s (%s, %d request(s)): %d training rows (%d base, %d observations), holdout %d, watermarks %s",
            run.run_id, batch.reason, len(batch.requests), data.rows, data.rows_base, data.rows_observations,
            len(data.holdout), dict(sorted(refresh.watermarks.items())),
        )  # fmt: skip
        try:
            run.log_params({f"setting.{k}": getattr(settings, k) for k in SEARCH_SETTINGS})
            result = self._train_and_decide(run, batch, data, refresh, started, new_world)
        except CyclePreempted as exc:
            CYCLES.labels("preempted").inc()
            run.fail_quietly("preempted", str(exc), status="KILLED")
            raise
        except CycleAborted:
            CYCLES.labels("stopped").inc()
            run.fail_quietly("stopped", "the trainer was stopped during the cycle", status="KILLED")
            raise
        except BaseException as exc:
            CYCLES.labels("failed").inc()
            # A cycle that moved the alias stays "promoting": recovery publishes its reload later.
            run.fail_quietly(
                "promoting" if run.state == "promoting" else "failed", f"{type(exc).__name__}: {exc}"[:2000]
            )
            raise
        CYCLES.labels(result.state).inc()
        CYCLE_SECONDS.observe(result.seconds)
        log.info("%s", result.summary())
        return result

    # --- the steps --------------------------------------------------------------------------
    def _read(self, base: BaseData, expect_change: bool = False) -> tuple[Refresh, CycleData, tuple[Observations, int]]:
        """The observations up to the watermarks, and the cycle's data from them. Just after a
        change of the world there may be too few rows of the new world to train on (it takes
        ``MIN_CHANGE_ROWS``, and ``min_rows`` once the old rows are left out), or, when a predictor
        asked because its error rose (``expect_change``), no change point may show yet in the
        observations the trainer has; then the cycle reads again as they arrive, for at most
        ``NEW_WORLD_WAIT`` seconds (``CHANGE_WAIT`` while no change shows; ``NEW_WORLD_IDLE``
        without a new observation), instead of training on the old world once more or publishing
        nothing."""
        refresh, data, change, observations = self._read_once(base)

        def waiting(data: CycleData, change: int | None) -> bool:
            return self._too_few(data, change) or (expect_change and change is None)

        if not waiting(data, change):
            return refresh, data, observations
        if change is None:
            log.info("the predictor's error rose, but no change of the world shows in the %d observations yet: "
                     "waiting up to %.0fs for it", data.rows_observations_valid, CHANGE_WAIT)  # fmt: skip
        else:
            log.info("%d observations after the change of the world: waiting up to %.0fs for enough to train on",
                     data.rows_observations_valid - change, NEW_WORLD_WAIT)  # fmt: skip
        started = last_new = time.monotonic()
        while (time.monotonic() - started < (NEW_WORLD_WAIT if change is not None else CHANGE_WAIT)
               and time.monotonic() - last_new < NEW_WORLD_IDLE):  # fmt: skip
            if self._stop_search():
                break
            time.sleep(READ_AGAIN)
            more, data, change, observations = self._read_once(base)
            refresh = refresh.then(more)
            if more.read:
                last_new = time.monotonic()
            if not waiting(data, change):
                log.info("%d observations after the change after %.1fs: training on them",
                         data.rows_after_change, time.monotonic() - started)  # fmt: skip
                return refresh, data, observations
        if change is None:
            log.info("no change of the world found after %.1fs: training on all the rows",
                     time.monotonic() - started)  # fmt: skip
        else:
            log.info("still too few rows after the change (%d observations after it): training on what there is",
                     data.rows_observations_valid - change)  # fmt: skip
        return refresh, data, observations

    def _too_few(self, data: CycleData, change: int | None) -> bool:
        return change is not None and (data.change is None or data.rows_new_world < self.settings.min_rows)

    def _new_world_only(self, base: BaseData, data: CycleData, selected: tuple[Observations, int]) -> CycleData | None:
        """After a change with the old rows kept at ``pre_change_weight``: the other variant, the
        rows after the change alone (``_new_world_first`` keeps the better one), from the same
        ``selected`` observations."""
        if data.change is None or data.old_weight == 0 or data.rows_new_world < self.settings.min_rows:
            return None
        alone = self.settings.model_copy(update={"pre_change_weight": 0.0})
        return assemble(base, *selected, alone, data.change)

    def _read_once(self, base: BaseData) -> tuple[Refresh, CycleData, int | None, tuple[Observations, int]]:
        settings, cached = self.settings, self.observations
        refresh = cached.refresh(base.pipeline, self.publisher.dead_letter, self.publisher.flush)
        self._check_skew(refresh)
        observations, invalid = select_observations(
            base.pipeline, cached.features, cached.labels, cached.observed_at, cached.request_ids,
            settings.missing_features == "reject", cached.served_error,
        )  # fmt: skip
        change = self._find_change(observations, base.pipeline.task)
        return refresh, assemble(base, observations, invalid, settings, change), change, (observations, invalid)

    def _find_change(self, observations: Observations, task: str) -> int | None:
        """The first observation of the current world: the latest step up in the served error, at or
        after the one found before (a change, once found, is remembered by its time).

        The scan wants ``common.change.MIN_SEGMENT`` (50) rows after a step, and a predictor asks as soon as a few rows
        show it: the first scan then places the change at the last split it may, up to ``MIN_SEGMENT``
        rows before the real one (on River's STAGGER 28 to 39 rows early, a third of the drift cycle's
        first rows from the old world). So the scan starts ``RESCAN_BEFORE`` rows before the change
        found before, which lets a later read move it to where the rows after it now put it (with only
        ``MIN_SEGMENT`` rows before it the scan has too little of the old world to pass ``Z`` when an
        interim model has already made most answers after the change right)."""
        if not self.settings.change_detection or not len(observations):
            return None
        start = lead = 0
        if self._change_time is not None:
            start = int(np.searchsorted(observations.observed_at, self._change_time, side="left"))
            lead = max(0, start - RESCAN_BEFORE)
        found = latest_change(observations.served_error[lead:], task != "regression")
        if found is not None and (self._change_time is None or lead + found.at >= start):
            at = lead + found.at
            if at < len(observations):
                # Observations joined in one batch share a time: found again, it may lie a row or two
                # after the first of them, and that is no news.
                moved = self._change_time is None or observations.observed_at[at] > self._change_time
                self._change_time = float(observations.observed_at[at])
                if moved:
                    log.info("change of the world: %s; training on the rows after it",
                             found.describe(len(observations) - lead))  # fmt: skip
            return at
        return start if self._change_time is not None else None

    def _check_skew(self, refresh: Refresh) -> None:
        """Fail the cycle loudly when the predictor encoded features otherwise than this trainer."""
        SKEW_CHECKED.inc(refresh.skew_checked)
        if not refresh.skew:
            return
        SKEW_MISMATCHES.inc(len(refresh.skew))
        raise TrainServeSkew(
            f"{len(refresh.skew)} of {refresh.skew_checked} observations that carried their served vector were "
            f"encoded otherwise by the predictor than by this trainer; first: {refresh.skew[0]}. They were "
            "dead-lettered and no model is trained from this cycle: run predictor and trainer with the same base "
            "data (--data / STREAMFIT_DATA) and the same streamfit version"
        )

    def _drift_report(self, run: CycleRun, data: CycleData) -> None:
        """Adversarial validation of the newest observations against the base rows, on the parent
        run. Diagnostics: a failure here is logged, and does not fail the cycle."""
        try:
            self._measure_drift(run, data)
        except Exception as exc:  # noqa: BLE001 - the model is already decided and published
            log.warning("drift report of cycle %s failed: %s: %s", run.run_id, type(exc).__name__, exc)

    def _measure_drift(self, run: CycleRun, data: CycleData) -> None:
        pipeline = data.pipeline
        base = data.x[: data.rows_base]
        if not len(base) and self._base is not None:  # new world alone: base data is the reference
            base = pipeline.transform_frame(self._base.frame)
        newest = data.x[data.rows_base :]
        if len(data.holdout.observations):
            newest = np.vstack([newest, pipeline.transform(data.holdout.observations.features)])
        result = adversarial_validation(pipeline, base, newest, self.settings.seed)
        if result is None:
            log.info("drift report skipped: %d observations (fewer than needed)", len(newest))
            return
        reference = ReferenceProfile.build(pipeline, base)
        counts = reference.counts(reference.bin(newest[-ADVERSARIAL_ROWS:]))
        psi = dict(zip(reference.names, reference.psi(counts).tolist(), strict=True))
        DRIFT_SCORE.set(result.drift)
        run.log_metrics({"drift_score": result.drift, "adversarial_auc": result.auc,
                         **{f"psi.{name}": value for name, value in psi.items()}})  # fmt: skip
        top = sorted(psi.items(), key=lambda kv: -kv[1])[:3]
        run.set_tags({tag.DRIFT_SCORE: round(result.drift, 4),
                      tag.DRIFT_TOP: {name: round(value, 4) for name, value in top}})  # fmt: skip
        run.log_figure(plots.drift_report(psi, result.drift, result.auc, (len(base), len(newest))),
                       "plots/drift_report.png")  # fmt: skip
        log.info("drift of the newest %d observations vs the base data: AUC %.3f, score %.3f, top PSI %s",
                 result.new_rows, result.auc, result.drift, {k: round(v, 3) for k, v in top})  # fmt: skip

    def _tags(self, batch: RetrainBatch, data: CycleData, refresh: Refresh) -> dict[str, Any]:
        tags: dict[str, Any] = {
            tag.KIND: "cycle", tag.STATE: "training", tag.REASON: batch.reason,
            tag.REASONS: batch.reasons, tag.REQUESTS: len(batch.requests),
            tag.OBSERVATIONS_TOPIC: self.observations.topic,
            tag.WATERMARKS: {str(p): o for p, o in sorted(refresh.watermarks.items())},
            tag.OBSERVATIONS_READ: refresh.read, tag.DEAD_LETTERED: refresh.dead_lettered,
            tag.DATA_HASH: data.hash, tag.PACKAGE_VERSION: __version__,
            tag.OPTIMIZER: self.settings.optimizer, tag.TASK: data.pipeline.task,
            tag.SPARK_PARALLELISM: self.settings.spark_parallelism,
            tag.PARALLEL_TRIALS: parallel_trials(self.settings, data.rows),
            tag.TRIAL_FOLDS: trial_folds(self.settings, data.rows),
            tag.HOLDOUT: data.holdout_kind,
            tag.CHANGE_AT: "none" if data.change is None else data.change,
            tag.DATA: str(self.settings.data_path), tag.HOST: f"{socket.gethostname()}:{os.getpid()}",
            **{f"{tag.PREFIX}{k}": v for k, v in data.counts().items()},
        }  # fmt: skip
        drifting: dict[str, float] = {}
        for request in batch.requests:
            for feature in request.top_features or ():
                drifting[feature.feature] = max(feature.psi, drifting.get(feature.feature, 0.0))
        if drifting:  # what the predictors saw move, for whoever reads the run
            tags[tag.DRIFT_REQUESTED_FOR] = {k: round(v, 4) for k, v in sorted(drifting.items())}
        if batch.next_offsets:
            tags[tag.RETRAIN_TOPIC] = batch.topic
            tags[tag.RETRAIN_FIRST] = {str(p): o for p, o in sorted(batch.first_offsets.items())}
            tags[tag.RETRAIN_NEXT] = {str(p): o for p, o in sorted(batch.next_offsets.items())}
        return tags

    def _result(self, run: CycleRun, batch: RetrainBatch, data: CycleData, refresh: Refresh,
                started: float, state: str, **more: Any) -> CycleResult:  # fmt: skip
        return CycleResult(
            run_id=run.run_id, state=state, reason=batch.reason, seconds=time.monotonic() - started,
            watermarks=dict(refresh.watermarks), counts=data.counts(), data_hash=data.hash, **more,
        )  # fmt: skip

    def _train_and_decide(
        self,
        run: CycleRun,
        batch: RetrainBatch,
        data: CycleData,
        refresh: Refresh,
        started: float,
        new_world: CycleData | None = None,
    ) -> CycleResult:
        """Fast refit first (the champion's parameters on this cycle's data, crowned at once if it
        beats the champion), then the search warm-started from it; its best model replaces the
        (possibly new) champion only if it beats it too."""
        settings = self.settings
        pipeline = data.pipeline
        if data.rows < settings.min_rows or len(data.holdout) == 0:
            why = (
                f"{data.rows} training rows ({data.rows_base} base + {data.rows_observations} observations) "
                f"< min_rows {settings.min_rows} (--min-rows / STREAMFIT_MIN_ROWS)"
                if data.rows < settings.min_rows
                else "the holdout is empty: nothing to compare candidate and champion on"
            )
            log.warning("cycle %s publishes nothing: %s", run.run_id, why)
            run.set_tags({tag.STATE: "too_few_rows", tag.NOTE: why})
            run.finish()
            return self._result(run, batch, data, refresh, started, "too_few_rows")

        champion = self._champion(data)
        try:
            if new_world is not None:
                context, cv, fast, fast_outcome, known = self._new_world_first(run, batch, data, new_world, refresh,
                                                                               champion)  # fmt: skip
                data = context.data
            else:
                context, cv = self._context(run, batch, data, refresh, champion)
                fast, fast_outcome, known = self._fast_refit(context, cv)
            fast_params = warm_start(champion.params)
            result = self._search(context, cv, fast_params, known, self._past_points(run, pipeline.task))
        except TrialInterrupted as exc:
            self._give_way(f"in a trial ({exc})")
        if result.stopped_by == "stop":
            self._give_way(f"after {len(result.trials)} trials")
        best = result.best
        if fast is not None and params_key(best.params) == params_key(fast_params):
            outcome, final = fast_outcome, fast
            if not fast_outcome.promoted:  # record the candidate like any rejected one
                outcome = self._decide(context, fast, register_rejected=True, decision=fast_outcome.decision)
        else:
            final = self._candidate(context, {**best.params}, best.best_iteration, best.loss, "search")
            outcome = self._decide(context, final, register_rejected=True)

        self._log_search(run, result, best, final.bundle, final.metrics,
                         champion.metrics, cv.metric)  # fmt: skip
        promoted = outcome.promoted or fast_outcome.promoted
        version = outcome.version if outcome.promoted or not fast_outcome.promoted else fast_outcome.version
        run.set_tags({tag.STATE: "promoted" if promoted else "rejected", tag.VERSION: version or "none",
                      tag.FAST_REFIT: fast_outcome.decision.reason[:500]})  # fmt: skip
        run.log_metrics({"cycle_seconds": time.monotonic() - started})
        self._drift_report(run, data)  # after the reload: diagnostics never delay a promotion
        run.finish()
        log.info("version %s %s: %s", version, "promoted" if promoted else "rejected", outcome.decision.reason)
        last = outcome if outcome.promoted or not fast_outcome.promoted else fast_outcome
        return self._result(
            run, batch, data, refresh, started, "promoted" if promoted else "rejected", version=version,
            reload=last.reload, decision=last.decision, candidate_metrics=final.metrics,
            champion_metrics=champion.metrics, champion_version=champion.version, best_params=dict(best.params),
            best_iteration=best.best_iteration, best_cv_loss=best.loss, trials=len(result.trials),
            search_seconds=result.seconds, fast_refit=fast_outcome.decision.reason,
            fast_version=fast_outcome.version if fast_outcome.promoted else None,
        )  # fmt: skip

    def _cross_validation(self, dataset: Any, params: dict[str, Any], task: str) -> CrossValidation:
        """The cycle's objective; a stop or a waiting drift request ends it between boosting rounds."""
        settings = self.settings
        cv = CrossValidation(
            dataset, params, folds=trial_folds(settings, dataset.num_data()), max_rounds=settings.max_rounds,
            early_stopping=settings.early_stopping, seed=settings.seed, stratified=task != "regression",
        )  # fmt: skip
        cv.interrupt = self._stop_search
        return cv

    def _context(
        self, run: CycleRun, batch: RetrainBatch, data: CycleData, refresh: Refresh, champion: _Champion
    ) -> tuple[_Context, CrossValidation]:
        """The cycle's data made ready to train on: its one LightGBM Dataset and its objective. The
        Dataset holds a linear model's scores as well (``trainer.linear``) when, for the parameters
        the cycle starts from, they lower the cross-validated loss on this data."""
        settings, pipeline = self.settings, data.pipeline
        params = task_params(pipeline, settings, data.rows)
        plain = build_dataset(pipeline, data.x, data.y, data.weight, params)
        cv = self._cross_validation(plain, params, pipeline.task)
        context = _Context(run, batch, data, refresh, params, plain, champion)
        fitted = settings.linear_score and fit_linear_score(pipeline, data.x, data.y, data.weight, settings.seed)
        return self._or_linear_score(context, cv, *fitted) if fitted else (context, cv)

    def _or_linear_score(
        self, context: _Context, cv: CrossValidation, linear: LinearScore, x: np.ndarray
    ) -> tuple[_Context, CrossValidation]:
        """``context`` on ``x`` (its matrix with ``linear``'s out-of-fold scores) when, for the
        parameters the cycle starts from, the cross-validated loss is lower there by more than the
        folds' noise (``linear_score_wins``); else as it is. Either way the context knows that
        score, so the fast refit does not run it again."""
        started = time.perf_counter()
        data, params = context.data, context.params
        start = warm_start(context.champion.params)
        without = replace(cv(start), seconds=time.perf_counter() - started)
        scored = time.perf_counter()
        augmented = build_dataset(data.pipeline, x, data.y, data.weight, params, linear)
        linear_cv = self._cross_validation(augmented, params, data.pipeline.task)
        linear_cv.best_loss = without.loss  # the bar: pruned as a search's trial would be, once it cannot reach it
        with_linear = replace(linear_cv(start), seconds=time.perf_counter() - scored)
        keep, error = linear_score_wins(with_linear, without, linear_cv.folds)
        verdict = (f"{'kept' if keep else 'left out'} (cross-validated {cv.metric} {with_linear.loss:.5g} with "
                   f"{linear.width} linear score(s){' when pruned' if with_linear.pruned else ''}, "
                   f"{without.loss:.5g} without, standard error {error:.2g})")  # fmt: skip
        log.info("linear score %s: %.1fs", verdict, time.perf_counter() - started)
        context.run.set_tags({tag.LINEAR_SCORE: verdict})
        if not keep:
            context.known[params_key(start)] = without
            return context, cv
        return replace(context, dataset=augmented, linear=linear, known={params_key(start): with_linear}), linear_cv

    def _new_world_first(
        self, run: CycleRun, batch: RetrainBatch, kept: CycleData, alone: CycleData, refresh: Refresh,
        champion: _Champion,
    ) -> tuple[_Context, CrossValidation, _Candidate | None, _Outcome, dict[Any, Any]]:  # fmt: skip
        """After a change, of the two variants of the data (the rows after it alone, or with the older
        rows kept at a share of the weight): the new rows alone first, their fast refit crowned at once
        if it beats the champion, since every second the old model serves is served wrong. Then the
        older rows' fast refit (the same parameters) challenges it on the holdout they share, and wins
        only with the confidence promotion asks. Where the whole label rule changed the old rows
        mislead; where a part of it did they fill in what the new rows have not shown yet; the new
        world says which. Returns the chosen variant, ready for the search, with its fast refit."""
        context, cv = self._context(run, batch, alone, refresh, champion)
        fast, outcome, known = self._fast_refit(context, cv)
        if fast is None:  # no champion to compare with: nothing to judge the older rows by either
            self._tag_world(run, alone, "left out (no comparable champion to judge them by)")
            return context, cv, fast, outcome, known
        started = time.perf_counter()
        rival, rival_cv = self._context(run, batch, kept, refresh, context.champion)
        fast_params = warm_start(champion.params)
        challenger, score = self._fit_fast(rival, rival_cv, fast_params)
        settings = self.settings
        share = better_share(challenger.losses, fast.losses, settings.seed)
        scores = challenger.metrics["loss"], fast.metrics["loss"]
        keep = decide(*scores, settings.promotion_margin, share=share, confidence=settings.promotion_confidence).promote
        log.info("after the change: holdout loss %.5g with the older rows at %.2f of the weight (better in %.0f%% "
                 "of paired resamples), %.5g without them: the search trains %s them (%.1fs)", scores[0],
                 kept.old_weight, 100 * share, scores[1], "with" if keep else "without",
                 time.perf_counter() - started)  # fmt: skip
        self._tag_world(run, kept if keep else alone, f"{'kept' if keep else 'left out'} (holdout loss {scores[0]:.5g} "
                        f"with them at {kept.old_weight:g}, {scores[1]:.5g} without; with them better in {share:.0%} "
                        "of paired resamples)")  # fmt: skip
        if not keep:
            return context, cv, fast, outcome, known
        # The same rule as the comparison above, against the same losses when the new rows' refit was
        # crowned: the older rows' refit is crowned too (two versions from one cycle; the run names both).
        rival_outcome, rival_known = self._offer_fast(rival, rival_cv, challenger, score, fast_params)
        if rival_outcome.promoted and outcome.promoted:
            run.set_tags({tag.NEW_WORLD_VERSION: outcome.version or "none"})
        return rival, rival_cv, challenger, rival_outcome if rival_outcome.promoted else outcome, rival_known

    def _tag_world(self, run: CycleRun, chosen: CycleData, old_rows: str) -> None:
        """The run's data tags follow the variant the search trains on (the run began with the other)."""
        run.set_tags({tag.OLD_ROWS: old_rows, tag.DATA_HASH: chosen.hash,
                      **{f"{tag.PREFIX}{k}": v for k, v in chosen.counts().items()}})  # fmt: skip

    def _fast_refit(self, context: _Context, cv: CrossValidation) -> tuple[_Candidate | None, _Outcome, dict[Any, Any]]:
        """The champion's parameters on the data of this cycle, crowned at once if it beats the
        champion. With no champion to beat (no bootstrap), the search alone decides."""
        champion = context.champion
        if champion.metrics is None:
            nothing = Decision(False, "no fast refit: no champion to beat", math.nan, None, 0.0)
            return None, _Outcome(nothing, None, None), dict(context.known)
        params = warm_start(champion.params)
        fast, score = self._fit_fast(context, cv, params)
        fast = self._or_leaf_refit(context, fast)
        outcome, known = self._offer_fast(context, cv, fast, score, params)
        return fast, outcome, known

    def _or_leaf_refit(self, context: _Context, fast: _Candidate) -> _Candidate:
        """After a change: the champion's own trees with every leaf's value re-estimated on the rows
        after it (LightGBM's ``refit``, ``decay_rate`` 0), instead of ``fast`` when its holdout loss
        is lower. Where the world changed inside regions the old trees already separate (a segment
        whose labels flipped, a shifted scale) the old structure, learnt on many rows, with values
        from the few new ones beats a model grown from those few rows alone; where the whole rule
        changed the old splits are the wrong ones and it loses. Offline, on the first 200 rows of
        the new world (a script on ``benchmarks.old_rows``' streams and data assembly, not kept;
        three seeds, accuracy): the sample app's
        Adult drift 82.2% against 76.0% for the new rows alone, Mixed 97.6 against 95.2, SEA 93.9
        against 94.5, Agrawal 54.2 against 81.0. No refit costs a cross-validation: it is one pass."""
        champion, data = context.champion, context.data
        if data.change is None or data.old_weight > 0 or champion.bundle is None or champion.metrics is None:
            return fast  # no change, or not the rows after it alone, or nothing to refit
        if champion.bundle.pipeline.to_dict() != data.pipeline.to_dict():  # not the same columns
            return fast
        started = time.perf_counter()
        booster = champion.bundle.booster.refit(
            champion.bundle.model_input(data.x), data.y, decay_rate=0.0, weight=data.weight,
            categorical_feature=data.pipeline.categorical_indices,
        )  # fmt: skip
        kept = {k: champion.bundle.meta[k] for k in ("params", "num_rounds") if k in champion.bundle.meta}
        meta = {**self._meta(context, "leaf refit", math.nan), **kept, "refit_of": champion.version}
        refit = ModelBundle(booster, data.pipeline, meta, champion.bundle.linear)
        leaves = self._scored(context, refit, "leaf refit")
        chosen = leaves if leaves.metrics["loss"] < fast.metrics["loss"] else fast
        seconds = time.perf_counter() - started
        log.info("leaf refit: holdout loss %.5g for version %s's trees with their leaves refit on the %d new rows "
                 "(%.2fs), %.5g for the fast refit on them: the %s goes on", leaves.metrics["loss"],
                 champion.version, data.rows, seconds, fast.metrics["loss"], chosen.kind)  # fmt: skip
        return chosen

    def _fit_fast(
        self, context: _Context, cv: CrossValidation, params: dict[str, Any]
    ) -> tuple[_Candidate, TrialScore]:
        """``params`` cross-validated (for the rounds) and fit on the context's data."""
        score = context.known.get(params_key(params))
        if score is None:
            started = time.perf_counter()
            score = replace(cv(params), seconds=time.perf_counter() - started)
        return self._candidate(context, params, score.best_iteration, score.loss, "fast refit"), score

    def _offer_fast(
        self, context: _Context, cv: CrossValidation, fast: _Candidate, score: TrialScore, params: dict[str, Any]
    ) -> tuple[_Outcome, dict[Any, Any]]:
        """A fast refit against the context's champion, crowned at once if it beats it. Either way its
        score is the search's trial 1, and the bar the search's pruning measures trials against."""
        cv.best_loss = min(cv.best_loss, score.loss)
        outcome = self._decide(context, fast, register_rejected=False)
        log.info("fast refit of cycle %s (%d rounds, cross-validated in %.1fs): %s", context.run.run_id,
                 score.best_iteration, score.seconds, outcome.decision.reason)  # fmt: skip
        if outcome.promoted:
            context.champion = _Champion(outcome.version, fast.bundle, fast.metrics, fast.losses, params)
        return outcome, {params_key(params): score}

    def _past_points(self, run: CycleRun, task: str) -> list[dict[str, Any]]:
        """The best parameters of the latest ``PAST_CYCLES`` finished cycles on the same base data
        (from their MLflow runs), which the search evaluates right after the champion's: a search
        starts from what earlier ones found instead of cold. The run names them. Read failures
        leave the search cold; they never fail the cycle."""
        settings = self.settings
        try:
            runs = self.store.client.search_runs(
                [run.experiment_id], f"tags.`{tag.KIND}` = 'cycle' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"], max_results=4 * PAST_CYCLES,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - diagnostics of a warm start
            log.warning("no warm start from earlier cycles: %s: %s", type(exc).__name__, exc)
            return []
        data = str(settings.data_path)
        same = [r for r in runs if r.info.run_id != run.run_id and r.data.tags.get(tag.DATA) == data
                and r.data.tags.get(tag.TASK) == task][:PAST_CYCLES]  # fmt: skip
        points = past_points([r.data.params for r in same])
        if same:
            run.set_tags({tag.WARM_START_FROM: [r.info.run_id for r in same]})
            log.info("search warm-started from %d earlier cycle(s): %s", len(points),
                     ", ".join(r.info.run_id for r in same))  # fmt: skip
        return points

    def _search(
        self,
        context: _Context,
        cv: CrossValidation,
        start: dict[str, Any],
        known: dict[Any, Any],
        past: list[dict[str, Any]] | None = None,
    ) -> SearchResult:
        """The Bayesian search, warm-started from ``start`` (whose score is already ``known``), then
        the ``past`` cycles' best points."""
        settings, run = self.settings, context.run
        with SearchProgress(settings.trials, settings.time_budget, cv.metric, self.progress) as progress:

            def on_trial(trial: Trial, best: Trial | None) -> None:
                run.log_trial(trial, cv.metric)
                TRIALS.inc()
                progress.update(trial, best)

            parallel = parallel_trials(settings, context.data.rows)
            if parallel > 1 and not settings.num_threads:  # the trials running at once share the cores
                cv.base_params["num_threads"] = max(1, usable_cores() // parallel)
            search = Search(
                cv, optimizer=settings.optimizer, trials=settings.trials, time_budget=settings.time_budget,
                seed=settings.seed, on_trial=on_trial, should_stop=self._stop_search,
                spark_parallelism=settings.spark_parallelism, start=start, known=known, past=past, parallel=parallel,
            )  # fmt: skip
            return search.run()

    def _give_way(self, when: str) -> NoReturn:
        """End the cycle unpublished (what a fast refit crowned stays): for the trainer's stop, or
        for a drift request waiting behind this count cycle (or drift cycle without a change)."""
        if not self.should_stop():
            raise CyclePreempted(f"preempted by a drift request {when}")
        raise CycleAborted(f"stopped {when}")

    def _stop_search(self) -> bool:
        return self.should_stop() or (self._preemptible and self.preempt())

    def _candidate(
        self, context: _Context, params: dict[str, Any], rounds: int, cv_loss: float, kind: str
    ) -> _Candidate:
        """Train on the whole cycle's data, score on the holdout, attach the serving profile."""
        final_params = {**context.params, **params}
        meta = self._meta(context, kind, cv_loss)
        bundle = train_bundle(context.data.pipeline, context.dataset, final_params, rounds, meta, context.linear)
        return self._scored(context, bundle, kind)

    def _meta(self, context: _Context, kind: str, cv_loss: float) -> dict[str, Any]:
        """What a candidate's bundle says of where it came from: this cycle, its data and watermarks."""
        settings, data = self.settings, context.data
        return {
            "reason": context.batch.reason, "run_id": context.run.run_id, "rows": data.counts(),
            "data_hash": data.hash, "watermarks": {str(p): o for p, o in context.refresh.watermarks.items()},
            "optimizer": settings.optimizer, "best_cv_loss": cv_loss, "data": str(settings.data_path),
            "candidate": kind, "holdout": data.holdout_kind,
        }  # fmt: skip

    def _scored(self, context: _Context, bundle: ModelBundle, kind: str) -> _Candidate:
        """A trained model scored on the holdout, with the serving profile attached."""
        data, pipeline = context.data, context.data.pipeline
        hx, hy = data.holdout.matrix(pipeline)
        metrics, losses = holdout_scores(bundle, hx, hy)
        reference = data.x[reference_rows(data.rows_base, data.rows_observations, self.settings.seed)]
        profile = ReferenceProfile.build(pipeline, reference, metrics)
        meta = {**bundle.meta, "metrics": metrics, "profile": profile.to_dict()}
        bundle = replace(bundle, pipeline=pipeline, meta=meta)
        return _Candidate(bundle, metrics, losses, kind)

    def _decide(
        self, context: _Context, candidate: _Candidate, *, register_rejected: bool, decision: Decision | None = None
    ) -> _Outcome:
        """Compare with the champion on the same holdout rows (unless ``decision`` was reached
        already); crown, or record the rejection."""
        settings, run, champion = self.settings, context.run, context.champion
        if decision is None:
            loss = candidate.metrics["loss"]
            reference = None if champion.metrics is None else champion.metrics["loss"]
            share = None  # the paired bootstrap, drawn only when the mean losses alone would promote
            if (champion.losses is not None and len(champion.losses) == len(candidate.losses)
                    and reference is not None and loss < reference - settings.promotion_margin):  # fmt: skip
                share = better_share(candidate.losses, champion.losses, settings.seed)
            decision = decide(loss, reference, settings.promotion_margin, share=share,
                              confidence=settings.promotion_confidence)  # fmt: skip
        if not decision.promote and not register_rejected:
            return _Outcome(decision, None, None)
        scores = {
            tag.CANDIDATE_LOSS: candidate.metrics["loss"], tag.DECISION: decision.reason,
            tag.CHAMPION_LOSS: "none" if champion.metrics is None else champion.metrics["loss"],
            tag.CHAMPION_VERSION: champion.version or "none", tag.HOLDOUT: context.data.holdout_kind,
            tag.CANDIDATE: candidate.kind,
        }  # fmt: skip
        # Store everything before anything points at it: bundle, version, alias, then the reload.
        # A fast refit's model lives on a child run of its own, so that its bundle URI stays its own.
        model_run = run.run_id
        if candidate.kind != "search":
            model_run = run.child("fast-refit", "fast-refit", {f"holdout_{k}": v for k, v in candidate.metrics.items()})
        uri, sha256 = self.store.save_bundle(model_run, candidate.bundle)
        version = self.store.register(model_run, uri, sha256, candidate.metrics)
        if model_run != run.run_id:
            run.end_child(model_run)
        self.store.tag_version(version, {**scores, tag.RUN_ID: run.run_id, tag.REASON: context.batch.reason})
        if not decision.promote:
            self.store.tag_version(version, {tag.REJECTED: "true"})
            run.set_tags({**scores, tag.VERSION: version})
            log.info("version %s (%s) rejected: %s", version, candidate.kind, decision.reason)
            return _Outcome(decision, version, None)
        run.set_tags(scores)
        reload = crown(self.store, version, self.publisher.publish_reload, run)
        run.set_tags({tag.STATE: "training"})  # the reload is out; the cycle goes on (recovery: see trainer.recovery)
        log.info("version %s (%s) promoted: %s", version, candidate.kind, decision.reason)
        return _Outcome(decision, version, reload)

    def _champion(self, data: CycleData) -> _Champion:
        """The champion: its version, its model, and its metrics and row losses on this cycle's
        holdout (no metrics: nothing to beat)."""
        version = self.store.champion_version()
        if version is None:
            return _Champion(None, None, None, None, None)
        message = self.store.reload_message(version)
        try:
            champion = self.store.fetch_bundle(message.uri, message.sha256)
        except BundleError as exc:
            log.error("champion version %s cannot be loaded (%s): any valid candidate beats it", version, exc)
            return _Champion(version, None, None, None, None)
        params = champion.meta.get("params") if isinstance(champion.meta.get("params"), dict) else None
        why = champion.pipeline.incompatibility(data.pipeline)
        if why is not None:
            log.warning("champion version %s was trained for another schema (%s): it cannot be compared, and "
                        "predictors serving it will refuse the candidate", version, why)  # fmt: skip
            return _Champion(version, None, None, None, params)
        x, y = data.holdout.matrix(champion.pipeline)
        metrics, losses = holdout_scores(champion, x, y)
        return _Champion(version, champion, metrics, losses, params)

    def _log_search(
        self,
        run: CycleRun,
        result: SearchResult,
        best: Trial,
        candidate: ModelBundle,
        candidate_metrics: dict[str, float],
        champion_metrics: dict[str, float] | None,
        metric: str,
    ) -> None:
        run.log_params({**best.params, "num_rounds": best.best_iteration})
        metrics = {f"holdout_{k}": v for k, v in candidate_metrics.items()}
        if champion_metrics is not None:
            metrics |= {f"champion_holdout_{k}": v for k, v in champion_metrics.items()}
        metrics |= {"best_cv_loss": best.loss, f"best_cv_{metric}": best.loss, "trials": float(len(result.trials)),
                    "search_seconds": result.seconds, "best_trial": float(best.number)}  # fmt: skip
        run.log_metrics(metrics)
        run.set_tags({tag.BEST_TRIAL: best.number, tag.STOPPED_BY: result.stopped_by})
        run.log_figure(plots.search_history(result.trials, metric, result.optimizer), "plots/search_history.png")
        run.log_figure(
            plots.feature_importance(candidate.booster, candidate.feature_names),
            "plots/feature_importance.png",
        )
        run.log_json(
            [{"number": t.number, "params": t.params, "loss": t.loss if t.ok else None,
              "best_iteration": t.best_iteration, "seconds": t.seconds, "error": t.error, "pruned": t.pruned}
             for t in result.trials],
            "search/trials.json",
        )  # fmt: skip
