"""MLflow bookkeeping of a cycle: one parent run, one nested child run per trial.

The trainer talks to MLflow through ``MlflowClient`` with explicit run ids, never the fluent
``mlflow.start_run`` API: no process-global "active run" that a predictor or a demo running in
the same process could trip over. Every call that fails becomes a ``ModelStoreError`` naming the
store and the setting to change.

The parent run's ``streamfit.state`` tag records how far the cycle got (``training``,
``promoting``, ``promoted``, ``rejected``, ``too_few_rows``, ``failed``); recovery after a crash
reads it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson

from streamfit.common import tags as tag
from streamfit.common.errors import ModelStoreError
from streamfit.common.model_store import ModelStore
from streamfit.common.tags import MAX_TAG, text
from streamfit.trainer.search import Trial

log = logging.getLogger(__name__)

T = TypeVar("T")

PARENT_TAG = "mlflow.parentRunId"
DONE_STATES = ("promoted", "rejected", "too_few_rows")


def store_call(store: ModelStore, what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except ModelStoreError:
        raise
    except Exception as exc:
        raise ModelStoreError(
            f"MLflow store at {store.uri} failed to {what}: {type(exc).__name__}: {str(exc)[:300]}; "
            "check that it runs, or set MLFLOW_TRACKING_URI / --mlflow-tracking-uri"
        ) from exc


class CycleRun:
    """The parent run of one cycle."""

    def __init__(self, store: ModelStore, experiment_id: str, run_id: str) -> None:
        self.store = store
        self.client = store.client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.state: str | None = None  # the last streamfit.state this process set

    @classmethod
    def start(cls, store: ModelStore, experiment_id: str, name: str, tags: Mapping[str, Any]) -> CycleRun:
        run = store_call(
            store, "start the cycle's run",
            lambda: store.client.create_run(experiment_id, run_name=name, tags={k: text(v) for k, v in tags.items()}),
        )  # fmt: skip
        cycle = cls(store, experiment_id, run.info.run_id)
        cycle.state = str(tags[tag.STATE]) if tag.STATE in tags else None
        return cycle

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return store_call(self.store, what, call)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, text(v)) for k, v in tags.items()]
        self._call("tag the run", lambda: self.client.log_batch(self.run_id, tags=batch))
        if tag.STATE in tags:
            self.state = str(tags[tag.STATE])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        batch = [Param(k, text(v)) for k, v in params.items()]
        self._call("log parameters", lambda: self.client.log_batch(self.run_id, params=batch))

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
        self._call("log metrics", lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_trial(self, trial: Trial, metric: str) -> str:
        """A nested child run with the trial's parameters, CV score and best iteration."""
        from mlflow.entities import Metric, Param, RunTag

        def log() -> str:
            tags = {PARENT_TAG: self.run_id, tag.KIND: "trial", tag.TRIAL: str(trial.number)}
            if trial.error:
                tags[tag.ERROR] = trial.error[:MAX_TAG]
            child = self.client.create_run(self.experiment_id, run_name=f"trial-{trial.number:03d}", tags=tags)
            stamp = int(time.time() * 1000)
            metrics = {"best_iteration": float(trial.best_iteration), "seconds": trial.seconds}
            if trial.ok:
                metrics |= {"cv_loss": trial.loss, f"cv_{metric}": trial.loss}
                if trial.cv_std == trial.cv_std:  # not NaN
                    metrics[f"cv_{metric}_std"] = trial.cv_std
            self.client.log_batch(
                child.info.run_id,
                metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
                params=[Param(k, text(v)) for k, v in trial.params.items()],
                tags=[RunTag(tag.STATUS, "failed" if not trial.ok else "pruned" if trial.pruned else "ok")],
            )
            self.client.set_terminated(child.info.run_id, "FINISHED" if trial.ok else "FAILED")
            return str(child.info.run_id)

        return self._call(f"log trial {trial.number}", log)

    def log_figure(self, figure: Any, path: str) -> None:
        self._call(f"store {path}", lambda: self.client.log_figure(self.run_id, figure, path))

    def log_json(self, data: Any, path: str) -> None:
        def log() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / Path(path).name
                local.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
                parent = str(Path(path).parent)
                self.client.log_artifact(self.run_id, str(local), artifact_path=None if parent == "." else parent)

        self._call(f"store {path}", log)

    def child(self, name: str, kind: str, metrics: Mapping[str, float]) -> str:
        """A nested child run (``kind``: e.g. "fast-refit") holding its own metrics; returns its id.
        A model stored on it gets a bundle URI of its own."""
        from mlflow.entities import Metric

        def create() -> str:
            child = self.client.create_run(self.experiment_id, run_name=name,
                                           tags={PARENT_TAG: self.run_id, tag.KIND: kind})  # fmt: skip
            stamp = int(time.time() * 1000)
            batch = [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
            self.client.log_batch(child.info.run_id, metrics=batch)
            return str(child.info.run_id)

        return self._call(f"start the {kind} run", create)

    def end_child(self, run_id: str) -> None:
        self._call("end a child run", lambda: self.client.set_terminated(run_id, "FINISHED"))

    def finish(self, status: str = "FINISHED") -> None:
        self._call("end the run", lambda: self.client.set_terminated(self.run_id, status))

    def fail_quietly(self, state: str, error: str, status: str = "FAILED") -> None:
        """Best effort on the way out of a failed cycle: the store may be what failed."""
        try:
            self.set_tags({tag.STATE: state, tag.ERROR: error})
            self.finish(status)
        except Exception as exc:  # noqa: BLE001
            log.debug("could not mark run %s as %s: %s", self.run_id, state, exc)
