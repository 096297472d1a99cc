"""The hot swap and its schedule, without a broker: real bundles, a fetch that can fail."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from streamfit.common.bundle import ModelBundle
from streamfit.common.compiled import CompiledTrees, compile_trees
from streamfit.common.errors import BundleError, ModelStoreError
from streamfit.common.messages import ModelReload
from streamfit.common.pipeline import FeaturePipeline, FeatureSpec
from streamfit.predictor.hot_swap import HotSwap, Outcome
from streamfit.predictor.metrics import PredictorMetrics
from streamfit.predictor.model_follower import ReloadSchedule
from streamfit.trainer.linear import fit_linear_score
from tests.predictor.conftest import features, synthetic_frame, train, wait_for


def reload(version: str, sha: str = "a" * 64) -> ModelReload:
    return ModelReload(model_name="m", version=version, uri=f"runs:/r{version}/bundle/streamfit-bundle.zip",
                       sha256=sha, metrics={}, published_at=time.time())  # fmt: skip


class Store:
    """Hands out bundles by URI, or raises what it is told to."""

    def __init__(self) -> None:
        self.bundles: dict[str, ModelBundle | Exception] = {}
        self.fetched: list[str] = []

    def fetch(self, uri: str, sha256: str) -> ModelBundle:
        self.fetched.append(uri)
        found = self.bundles[uri]
        if isinstance(found, Exception):
            raise found
        return found


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return train(seed=1)


@pytest.fixture
def store(bundle: ModelBundle) -> Store:
    store = Store()
    store.bundles[reload("1").uri] = bundle
    return store


def test_swap_then_same_version_is_a_no_op(store: Store, bundle: ModelBundle) -> None:
    metrics = PredictorMetrics()
    swap = HotSwap(store.fetch, metrics, sample=lambda: [features(i) for i in range(4)])
    assert swap.apply(reload("1")) is Outcome.SWAPPED
    assert swap.current is not None and swap.current.version == "1" and swap.current.bundle is bundle
    assert swap.apply(reload("1")) is Outcome.UNCHANGED
    assert store.fetched == [reload("1").uri]
    assert metrics.value("swaps_total") == 1 and metrics.value("model_version") == 1.0


def test_a_store_that_is_down_asks_for_a_retry_and_keeps_the_old_model(store: Store) -> None:
    metrics = PredictorMetrics()
    swap = HotSwap(store.fetch, metrics)
    swap.apply(reload("1"))
    store.bundles[reload("2").uri] = ModelStoreError("MLflow store at http://x failed to download")
    assert swap.apply(reload("2")) is Outcome.RETRY
    assert swap.current is not None and swap.current.version == "1"
    assert metrics.value("model_store_errors_total") == 1 and metrics.value("swap_failures_total") == 0


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        (BundleError("sha256 mismatch: expected 0, got 1"), "sha256"),
        (BundleError("refusing bundle URI 'file:///x': not a bundle of this model store"), "uri"),
        (BundleError("corrupt bundle: BadZipFile"), "corrupt"),
        (RuntimeError("surprise"), "load"),
    ],
)
def test_a_bundle_that_cannot_load_is_refused(store: Store, problem: Exception, reason: str) -> None:
    metrics = PredictorMetrics()
    swap = HotSwap(store.fetch, metrics)
    swap.apply(reload("1"))
    store.bundles[reload("2").uri] = problem
    assert swap.apply(reload("2")) is Outcome.REFUSED
    assert swap.current is not None and swap.current.version == "1"
    assert metrics.value("swap_failures_total", {"reason": reason}) == 1


def test_another_schema_is_refused_but_is_fine_as_a_first_model(store: Store) -> None:
    other = train(seed=2, extra=True)
    store.bundles[reload("2").uri] = other
    metrics = PredictorMetrics()
    swap = HotSwap(store.fetch, metrics)
    swap.apply(reload("1"))
    assert swap.apply(reload("2")) is Outcome.REFUSED
    assert metrics.value("swap_failures_total", {"reason": "schema"}) == 1
    fresh = HotSwap(store.fetch, PredictorMetrics())
    assert fresh.apply(reload("2")) is Outcome.SWAPPED


def test_a_model_that_fails_its_warm_up_is_refused(store: Store, bundle: ModelBundle) -> None:
    # A pipeline with one feature too many: the model cannot predict on its matrix.
    broken_pipeline = replace(bundle.pipeline, features=(*bundle.pipeline.features, FeatureSpec("x9", "numeric")))
    store.bundles[reload("2").uri] = ModelBundle(bundle.booster, broken_pipeline)
    metrics = PredictorMetrics()
    swap = HotSwap(store.fetch, metrics)
    assert swap.apply(reload("2")) is Outcome.REFUSED
    assert swap.current is None and metrics.value("swap_failures_total", {"reason": "warm_up"}) == 1


def test_the_schedule_retries_with_backoff_and_the_newest_offer_wins() -> None:
    now = [0.0]
    schedule = ReloadSchedule(initial=1.0, maximum=4.0, clock=lambda: now[0], jitter=lambda: 0.5)
    assert schedule.due() is None
    first = reload("1")
    schedule.offer(first)
    assert schedule.due() is first
    waits = []
    for _ in range(4):
        schedule.finished(first, Outcome.RETRY)
        waits.append(schedule.not_before - now[0])
        assert schedule.due() is None
        now[0] = schedule.not_before
        assert schedule.due() is first
    assert waits == [1.0, 2.0, 4.0, 4.0]
    second = reload("2")
    schedule.offer(second)  # supersedes, and is due at once
    assert schedule.due() is second
    schedule.finished(first, Outcome.REFUSED)  # the outcome of a superseded load changes nothing
    assert schedule.due() is second
    schedule.finished(second, Outcome.SWAPPED)
    assert schedule.due() is None and schedule.delay == 1.0


class GatedCompiler:
    """Real compiled trees (lleaves), held back until the test opens the gate."""

    def __init__(self, cache: Path) -> None:
        self.cache, self.gate, self.started, self.compiled = cache, threading.Event(), 0, 0

    def __call__(self, booster: lgb.Booster) -> CompiledTrees:
        self.started += 1
        assert self.gate.wait(30), "the test never opened the gate"
        self.compiled += 1
        return compile_trees(booster, self.cache)


def test_with_compiled_trees_a_model_serves_through_lightgbm_then_its_compiled_twin(
    store: Store, bundle: ModelBundle, tmp_path: Path
) -> None:
    pytest.importorskip("lleaves")
    metrics, compiler = PredictorMetrics(), GatedCompiler(tmp_path)
    rows = [features(i) for i in range(50)]
    swap = HotSwap(store.fetch, metrics, sample=lambda: rows, compile=compiler)
    try:
        assert swap.apply(reload("1")) is Outcome.SWAPPED
        first = swap.current
        assert first is not None and first.compiled is None  # serving at once, through LightGBM
        assert metrics.value("serving_compiled") == 0
        compiler.gate.set()
        wait_for(lambda: swap.current is not None and swap.current.compiled is not None, what="compiled trees")
        upgraded = swap.current
        assert upgraded.version == "1" and upgraded.bundle is bundle and metrics.value("serving_compiled") == 1
        matrix = bundle.pipeline.transform(rows)
        np.testing.assert_allclose(upgraded.predict_matrix(matrix), bundle.predict_matrix(matrix), rtol=0, atol=1e-9)
        assert metrics.value("compile_failures_total") == 0
    finally:
        swap.close()


def test_a_model_on_linear_scores_serves_compiled_with_its_scores_appended(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("lleaves")
    df = synthetic_frame(seed=3)
    pipeline = FeaturePipeline.fit(df, "y")
    x, y = pipeline.transform_frame(df), pipeline.encode_labels(df.y.tolist())
    fitted = fit_linear_score(pipeline, x, y, None, seed=1)
    assert fitted is not None
    linear, augmented = fitted
    data = lgb.Dataset(augmented, y, categorical_feature=pipeline.categorical_indices, params={"verbosity": -1})
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, data, 10)
    assert booster.feature_importance()[-1] > 0  # the trees split on the score
    bundle = ModelBundle(booster, pipeline, {"metrics": {"loss": 0.5}}, linear)
    store.bundles[reload("3").uri] = bundle
    rows = [features(i) for i in range(50)]
    swap = HotSwap(store.fetch, PredictorMetrics(), sample=lambda: rows, compile=lambda b: compile_trees(b, tmp_path))
    try:
        assert swap.apply(reload("3")) is Outcome.SWAPPED
        wait_for(lambda: swap.current is not None and swap.current.compiled is not None, what="compiled trees")
        matrix = pipeline.transform(rows)
        assert swap.current is not None
        served = swap.current.predict_matrix(matrix)
        np.testing.assert_allclose(served, bundle.predict_matrix(matrix), rtol=0, atol=1e-9)
    finally:
        swap.close()


def test_a_model_compiled_after_a_newer_one_swapped_in_is_dropped(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("lleaves")
    store.bundles[reload("2").uri] = train(seed=2)
    metrics, compiler = PredictorMetrics(), GatedCompiler(tmp_path)
    swap = HotSwap(store.fetch, metrics, sample=lambda: [features(i) for i in range(8)], compile=compiler)
    try:
        assert swap.apply(reload("1")) is Outcome.SWAPPED
        wait_for(lambda: compiler.started == 1, what="version 1 compiling")
        assert swap.apply(reload("2")) is Outcome.SWAPPED  # while version 1 still compiles
        compiler.gate.set()
        wait_for(lambda: compiler.compiled == 2 and swap.current is not None and swap.current.compiled is not None,
                 what="both compiled")  # fmt: skip
        assert swap.current is not None and swap.current.version == "2"  # never back to version 1
    finally:
        swap.close()


def test_a_compile_that_fails_or_predicts_otherwise_leaves_lightgbm_serving(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("lleaves")
    other = compile_trees(train(seed=7, rounds=30).booster, tmp_path)  # real compiled trees of another model
    for compile, why in (
        (lambda booster: (_ for _ in ()).throw(BundleError("lleaves cannot compile the model: boom")), "boom"),
        (lambda booster: other, "differ from LightGBM's"),
    ):
        metrics = PredictorMetrics()
        swap = HotSwap(store.fetch, metrics, sample=lambda: [features(i) for i in range(50)], compile=compile)
        try:
            assert swap.apply(reload("1")) is Outcome.SWAPPED
            wait_for(lambda m=metrics: m.value("compile_failures_total") == 1, what=f"a refused compile ({why})")
            assert swap.current is not None and swap.current.compiled is None
            assert metrics.value("serving_compiled") == 0
        finally:
            swap.close()
