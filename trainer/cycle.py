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
from dataclasses import dataclass, field
from typing import Any

from common.bundle import ModelBundle
from common.errors import BundleError
from common.messages import ModelReload
from common.model_store import ModelStore
from common.settings import Settings
from trainer import plots
from trainer.coalesce import RetrainBatch
from trainer.data import BaseData, CycleData, assemble, load_base, select_observations
from trainer.fit import evaluate, task_params, train_bundle
from trainer.metrics import CYCLE_SECONDS, CYCLES, TRIALS
from trainer.objective import CrossValidation, build_dataset
from trainer.observations import ObservationLog, Refresh
from trainer.progress import SearchProgress
from trainer.promotion import Decision, decide
from trainer.publisher import Publisher
from trainer.recovery import RETRAIN_FIRST, RETRAIN_NEXT, RETRAIN_TOPIC, VERSION
from trainer.search import Search, SearchResult, Trial
from trainer.tracking import KIND, STATE, CycleRun, store_call, text

log = logging.getLogger(__name__)

SEARCH_SETTINGS = ("optimizer", "trials", "time_budget", "cv_folds", "max_rounds", "early_stopping",
                   "holdout_share", "half_life", "window", "observation_weight", "promotion_margin",
                   "min_rows", "objective", "metric", "seed")  # fmt: skip


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
        spark_parallelism: int = 0,
    ) -> None:
        self.settings = settings
        self.spark_parallelism = spark_parallelism
        self.store = store
        self.publisher = publisher
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.observations = ObservationLog(settings)
        self._base: BaseData | None = None
        # MLflow draws a download progress bar on stderr when it fetches the champion's bundle.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def run(self, batch: RetrainBatch, experiment_id: str | None = None) -> CycleResult:
        started = time.monotonic()
        settings = self.settings
        try:
            experiment_id = experiment_id or self.store.experiment_id()  # an unreachable store fails here, first
            self._base = base = load_base(settings, self._base)
            refresh = self.observations.refresh(base.pipeline, self.publisher.dead_letter, self.publisher.flush)
            cached = self.observations
            observations, invalid = select_observations(
                base.pipeline, cached.features, cached.labels, cached.observed_at, cached.request_ids,
                settings.missing_features == "reject",
            )  # fmt: skip
            data = assemble(base, observations, invalid, settings)
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
            result = self._train_and_decide(run, batch, data, refresh, started)
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
    def _tags(self, batch: RetrainBatch, data: CycleData, refresh: Refresh) -> dict[str, Any]:
        import streamfit

        tags: dict[str, Any] = {
            KIND: "cycle", STATE: "training", "streamfit.reason": batch.reason,
            "streamfit.reasons": batch.reasons, "streamfit.requests": len(batch.requests),
            "streamfit.observations_topic": self.observations.topic,
            "streamfit.watermarks": {str(p): o for p, o in sorted(refresh.watermarks.items())},
            "streamfit.observations_read": refresh.read, "streamfit.dead_lettered": refresh.dead_lettered,
            "streamfit.data_hash": data.hash, "streamfit.package_version": streamfit.__version__,
            "streamfit.optimizer": self.settings.optimizer, "streamfit.task": data.pipeline.task,
            "streamfit.spark_parallelism": self.spark_parallelism,
            "streamfit.data": str(self.settings.data_path), "streamfit.host": f"{socket.gethostname()}:{os.getpid()}",
            **{f"streamfit.{k}": v for k, v in data.counts().items()},
        }  # fmt: skip
        if batch.next_offsets:
            tags[RETRAIN_TOPIC] = batch.topic
            tags[RETRAIN_FIRST] = {str(p): o for p, o in sorted(batch.first_offsets.items())}
            tags[RETRAIN_NEXT] = {str(p): o for p, o in sorted(batch.next_offsets.items())}
        return tags

    def _result(self, run: CycleRun, batch: RetrainBatch, data: CycleData, refresh: Refresh,
                started: float, state: str, **more: Any) -> CycleResult:  # fmt: skip
        return CycleResult(
            run_id=run.run_id, state=state, reason=batch.reason, seconds=time.monotonic() - started,
            watermarks=dict(refresh.watermarks), counts=data.counts(), data_hash=data.hash, **more,
        )  # fmt: skip

    def _train_and_decide(
        self, run: CycleRun, batch: RetrainBatch, data: CycleData, refresh: Refresh, started: float
    ) -> CycleResult:
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
            run.set_tags({STATE: "too_few_rows", "streamfit.note": why})
            run.finish()
            return self._result(run, batch, data, refresh, started, "too_few_rows")

        # --- search -----------------------------------------------------------------------------
        params = task_params(pipeline, settings)
        dataset = build_dataset(pipeline, data.x, data.y, data.weight, params)
        cv = CrossValidation(
            dataset, params, folds=settings.cv_folds, max_rounds=settings.max_rounds,
            early_stopping=settings.early_stopping, seed=settings.seed, stratified=pipeline.task != "regression",
        )  # fmt: skip
        with SearchProgress(settings.trials, settings.time_budget, cv.metric, self.progress) as progress:

            def on_trial(trial: Trial, best: Trial | None) -> None:
                run.log_trial(trial, cv.metric)
                TRIALS.inc()
                progress.update(trial, best)

            search = Search(
                cv, optimizer=settings.optimizer, trials=settings.trials, time_budget=settings.time_budget,
                seed=settings.seed, on_trial=on_trial, should_stop=self.should_stop,
                spark_parallelism=self.spark_parallelism,
            )  # fmt: skip
            result = search.run()
        if result.stopped_by == "stop":
            raise CycleAborted(f"stopped after {len(result.trials)} trials")
        best = result.best

        # --- the candidate ----------------------------------------------------------------------
        final_params = {**params, **best.params}
        meta: dict[str, Any] = {
            "reason": batch.reason, "run_id": run.run_id, "rows": data.counts(), "data_hash": data.hash,
            "watermarks": {str(p): o for p, o in refresh.watermarks.items()}, "optimizer": settings.optimizer,
            "trials": len(result.trials), "best_cv_loss": best.loss, "data": str(settings.data_path),
        }  # fmt: skip
        candidate = train_bundle(pipeline, dataset, final_params, best.best_iteration, meta)
        hx, hy = data.holdout.matrix(pipeline)
        candidate_metrics = evaluate(candidate, hx, hy)
        candidate = ModelBundle(candidate.booster, pipeline, {**candidate.meta, "metrics": candidate_metrics})

        # --- the champion, on the same holdout ----------------------------------------------------
        champion_version, champion_metrics = self._champion(data)

        # --- store everything before anything points at it ----------------------------------------
        self._log_search(run, result, best, candidate, candidate_metrics, champion_metrics, cv.metric)
        uri, sha256 = self.store.save_bundle(run.run_id, candidate)
        version = self.store.register(run.run_id, uri, sha256, candidate_metrics)
        decision = decide(
            candidate_metrics["loss"], None if champion_metrics is None else champion_metrics["loss"],
            settings.promotion_margin,
        )  # fmt: skip
        scores = {
            "streamfit.candidate_loss": candidate_metrics["loss"], "streamfit.decision": decision.reason,
            "streamfit.champion_loss": "none" if champion_metrics is None else champion_metrics["loss"],
            "streamfit.champion_version": champion_version or "none",
        }  # fmt: skip
        self._tag_version(version, {**scores, "streamfit.run_id": run.run_id})
        more: dict[str, Any] = {
            "version": version, "decision": decision, "candidate_metrics": candidate_metrics,
            "champion_metrics": champion_metrics, "champion_version": champion_version,
            "best_params": dict(best.params), "best_iteration": best.best_iteration, "best_cv_loss": best.loss,
            "trials": len(result.trials), "search_seconds": result.seconds,
        }  # fmt: skip
        if not decision.promote:
            self._tag_version(version, {"streamfit.rejected": "true"})
            run.set_tags({**scores, VERSION: version, STATE: "rejected"})
            run.log_metrics({"cycle_seconds": time.monotonic() - started})
            run.finish()
            log.info("version %s rejected: %s", version, decision.reason)
            return self._result(run, batch, data, refresh, started, "rejected", **more)

        run.set_tags({**scores, VERSION: version, STATE: "promoting"})
        self.store.set_champion(version)
        reload = self.store.reload_message(version)
        self.publisher.publish_reload(reload)
        self._tag_version(version, {"streamfit.promoted_at": f"{time.time():.3f}",
                                    "streamfit.previous_champion": champion_version or "none"})  # fmt: skip
        run.set_tags({STATE: "promoted"})
        run.log_metrics({"cycle_seconds": time.monotonic() - started})
        run.finish()
        log.info("version %s promoted: %s", version, decision.reason)
        return self._result(run, batch, data, refresh, started, "promoted", reload=reload, **more)

    def _champion(self, data: CycleData) -> tuple[str | None, dict[str, float] | None]:
        """The champion's version and its metrics on this cycle's holdout (None: nothing to beat)."""
        version = self.store.champion_version()
        if version is None:
            return None, None
        message = self.store.reload_message(version)
        try:
            champion = self.store.fetch_bundle(message.uri, message.sha256)
        except BundleError as exc:
            log.error("champion version %s cannot be loaded (%s): any valid candidate beats it", version, exc)
            return version, None
        why = champion.pipeline.incompatibility(data.pipeline)
        if why is not None:
            log.warning("champion version %s was trained for another schema (%s): it cannot be compared, and "
                        "predictors serving it will refuse the candidate", version, why)  # fmt: skip
            return version, None
        x, y = data.holdout.matrix(champion.pipeline)
        return version, evaluate(champion, x, y)

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
        run.set_tags({"streamfit.best_trial": best.number, "streamfit.stopped_by": result.stopped_by})
        run.log_figure(plots.search_history(result.trials, metric, result.optimizer), "plots/search_history.png")
        run.log_figure(
            plots.feature_importance(candidate.booster, candidate.pipeline.feature_names),
            "plots/feature_importance.png",
        )
        run.log_json(
            [{"number": t.number, "params": t.params, "loss": t.loss if t.ok else None,
              "best_iteration": t.best_iteration, "seconds": t.seconds, "error": t.error} for t in result.trials],
            "search/trials.json",
        )  # fmt: skip

    def _tag_version(self, version: str, tags: dict[str, Any]) -> None:
        client, name = self.store.client, self.store.name

        def tag() -> None:
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, text(value))

        store_call(self.store, f"tag version {version}", tag)
