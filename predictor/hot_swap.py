"""The hot swap: a published model is fetched, verified, checked and warmed up off the serving
path, then one reference changes. The serving loop reads that reference once per batch, so a
batch is answered by one model from start to end and the swap falls between two batches.

Nothing that goes wrong here stops serving: a model that fails any step is refused (logged and
counted) and the old one keeps answering; a store that is down asks for a retry.

With compiled trees on (``STREAMFIT_COMPILED_TREES``) a model first serves through LightGBM, as
always; a background thread compiles it and, once the compiled model gives the same predictions on
the warm-up rows, the reference changes a second time, to the same version served faster.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from streamfit.common.bundle import ModelBundle
from streamfit.common.compiled import CompiledTrees, same_predictions
from streamfit.common.errors import BundleError, ModelStoreError
from streamfit.common.messages import ModelReload
from streamfit.common.pipeline import FeaturePipeline
from streamfit.predictor.metrics import PredictorMetrics

log = logging.getLogger(__name__)

Fetch = Callable[[str, str], ModelBundle]  # (uri, sha256) -> a verified bundle, as ModelStore.fetch_bundle


@dataclass(frozen=True)
class LoadedModel:
    version: str
    sha256: str
    bundle: ModelBundle
    loaded_at: float
    compiled: CompiledTrees | None = None  # the same trees as native code, once compiled and checked

    @property
    def pipeline(self) -> FeaturePipeline:
        return self.bundle.pipeline

    def predict_matrix(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        if self.compiled is not None:
            return self.compiled.predict_matrix(self.bundle.model_input(matrix), num_threads)
        return self.bundle.predict_matrix(matrix, num_threads)


class Outcome(enum.Enum):
    SWAPPED = "swapped"
    UNCHANGED = "unchanged"  # that version already serves
    REFUSED = "refused"  # the old model keeps serving; retrying would not help
    RETRY = "retry"  # the store could not be reached; try again later


class HotSwap:
    def __init__(
        self,
        fetch: Fetch,
        metrics: PredictorMetrics,
        sample: Callable[[], Sequence[Mapping[str, Any]]] = tuple,
        num_threads: int = 1,
        compile: Callable[[lgb.Booster], CompiledTrees] | None = None,
    ) -> None:
        self.fetch = fetch
        self.metrics = metrics
        self.sample = sample  # a few recent request rows to warm a new model up on
        self.num_threads = num_threads
        self.compile = compile  # None: LightGBM serves every model
        self.current: LoadedModel | None = None  # the one reference the serving loop reads
        self._lock = threading.Lock()  # the follower swaps, the compiler upgrades: one at a time
        # One daemon thread compiles, the newest model first: a stop never waits for a compile.
        self._to_compile: queue.Queue[tuple[LoadedModel, Sequence[Mapping[str, Any]]] | None] = queue.Queue()
        if compile is not None:
            threading.Thread(target=self._compile_loop, name="streamfit-compile", daemon=True).start()

    def apply(self, reload: ModelReload) -> Outcome:
        current = self.current
        if current is not None and reload.version == current.version and reload.sha256 == current.sha256:
            log.debug("version %s already serves: nothing to do", reload.version)
            return Outcome.UNCHANGED
        started = time.perf_counter()
        try:
            bundle = self.fetch(reload.uri, reload.sha256)
        except ModelStoreError as exc:
            self.metrics.store_errors.inc()
            log.warning("model version %s: %s (will retry)", reload.version, exc)
            return Outcome.RETRY
        except BundleError as exc:
            return self._refuse(reload, _bundle_reason(exc), str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug or surprise in loading must not kill the swap thread
            return self._refuse(reload, "load", f"{type(exc).__name__}: {exc}")
        if current is not None:
            why = current.pipeline.incompatibility(bundle.pipeline)
            if why is not None:
                return self._refuse(reload, "schema", why)
        rows = list(self.sample()) or [{}]
        try:
            _, scores = bundle.predict(rows, self.num_threads)
            if len(scores) != len(rows) or not np.all(np.isfinite(scores)):
                raise BundleError("warm-up prediction returned non-finite scores")
        except Exception as exc:  # noqa: BLE001 - whatever the model does on warm-up, it must not serve
            return self._refuse(reload, "warm_up", f"warm-up on {len(rows)} rows failed: {exc}")
        loaded = LoadedModel(reload.version, reload.sha256, bundle, time.time())
        with self._lock:
            self.current = loaded
            self.metrics.serving_compiled.set(0)
        self.metrics.swaps.inc()
        self.metrics.serving(reload.version, reload.sha256)
        log.info(
            "now serving model %s version %s (was %s); fetched, verified and warmed up on %d rows in %.2fs",
            reload.model_name, reload.version, current.version if current else "none", len(rows),
            time.perf_counter() - started,
        )  # fmt: skip
        if self.compile is not None:
            self._to_compile.put((loaded, rows))
        return Outcome.SWAPPED

    def _upgrade(self, loaded: LoadedModel, rows: Sequence[Mapping[str, Any]]) -> None:
        """Compile the model that serves and, if it predicts as LightGBM does, serve it compiled."""
        assert self.compile is not None
        try:
            compiled = self.compile(loaded.bundle.booster)
            matrix = loaded.pipeline.transform(rows)
            expected = loaded.bundle.predict_matrix(matrix, 1)
            got = compiled.predict_matrix(loaded.bundle.model_input(matrix), 1)
            why = same_predictions(expected, got)
            classes = loaded.pipeline.task != "regression"  # a regression's prediction is its score
            if why is None and classes and loaded.pipeline.decode(expected)[0] != loaded.pipeline.decode(got)[0]:
                why = "compiled trees predict another class on a warm-up row"
        except Exception as exc:  # noqa: BLE001 - a failed compile leaves LightGBM serving, nothing more
            why = f"{type(exc).__name__}: {exc}"
        else:
            if why is None:
                with self._lock:
                    if self.current is not loaded:
                        log.info("version %s was compiled after it stopped serving: dropped", loaded.version)
                        return
                    self.current = dataclasses.replace(loaded, compiled=compiled)
                    self.metrics.serving_compiled.set(1)
                log.info(
                    "version %s now serves compiled trees (%s in %.2fs, checked on %d rows)", loaded.version,
                    "loaded from the cache" if compiled.cached else "compiled", compiled.seconds, len(rows),
                )  # fmt: skip
                return
        self.metrics.compile_failures.inc()
        log.warning("version %s keeps serving through LightGBM: %s", loaded.version, why)

    def _compile_loop(self) -> None:
        while (item := self._to_compile.get()) is not None:
            while not self._to_compile.empty():  # only the newest model can still serve
                if (item := self._to_compile.get()) is None:
                    return
            self._upgrade(*item)

    def close(self) -> None:
        self._to_compile.put(None)

    def _refuse(self, reload: ModelReload, reason: str, detail: str) -> Outcome:
        self.metrics.swap_failures.labels(reason).inc()
        current = self.current
        keeps = f"version {current.version} keeps serving" if current else "still no model to serve"
        log.error("refused model %s version %s (%s): %s; %s", reload.model_name, reload.version, reason, detail, keeps)
        return Outcome.REFUSED


def _bundle_reason(exc: BundleError) -> str:
    text = str(exc)
    if text.startswith("sha256 mismatch"):
        return "sha256"
    if text.startswith("refusing bundle URI"):
        return "uri"
    return "corrupt"
