"""The hot swap and its schedule, without a broker: real bundles, a fetch that can fail."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from common.bundle import ModelBundle
from common.errors import BundleError, ModelStoreError
from common.messages import ModelReload
from common.pipeline import FeatureSpec
from predictor.hot_swap import HotSwap, Outcome
from predictor.metrics import PredictorMetrics
from predictor.model_follower import ReloadSchedule
from tests.predictor.conftest import features, train


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
