"""Reloads that must not take: a corrupted bundle, a partial (truncated) upload, a sha256 mismatch,
another feature schema, and a model store that is down. Under a steady stream the old version keeps
answering every request, each failure is counted by reason, and a later good reload still swaps
(the one the store could not serve is retried with backoff until the store is back)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamfit.common.bundle import BUNDLE_FILE, sha256_hex
from streamfit.common.model_store import bundle_uri
from streamfit.common.settings import Settings
from streamfit.predictor.service import Predictor
from tests.conftest import SettingsFactory
from tests.faults.conftest import Ledger, Stream, settings_on
from tests.predictor.conftest import Models, TopicReader, running, train, wait_for
from tests.support.mlflow_server import MlflowServer

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.slow]


def store_raw(models: Models, data: bytes) -> tuple[str, str]:
    """Stores ``data`` where a bundle goes, as a trainer would: (uri, sha256 of those bytes)."""
    run_id = models.store.client.create_run(models.experiment).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / BUNDLE_FILE
        path.write_bytes(data)
        models.store.client.log_artifact(run_id, str(path), artifact_path="bundle")
    models.store.client.set_terminated(run_id)
    return bundle_uri(run_id), sha256_hex(data)


def check_answers(ledger: Ledger, predictions: TopicReader) -> None:
    acknowledged = ledger.acknowledged
    values = predictions.until(lambda v: {p["request_id"] for p in v} >= acknowledged, 60, "every answer")
    ledger.read(values)
    assert not ledger.missing


def test_corrupt_partial_forged_and_incompatible_reloads_are_refused_then_a_good_one_swaps(
    make_settings: SettingsFactory,
    models_factory: Callable[[Settings], Models],
    reader: Callable[..., TopicReader],
) -> None:
    settings = make_settings()
    models = models_factory(settings)
    models.release("1")
    predictor = Predictor(settings)
    metrics = predictor.metrics
    predictions = reader(settings, "predictions")
    ledger = Ledger("bad-reloads")
    good = train(seed=5).to_bytes()
    cases = [  # (version, reason counted, (uri, sha256))
        ("2", "corrupt", store_raw(models, b"\x00garbage, not a zip\xff" * 100)),
        ("3", "corrupt", store_raw(models, good[: len(good) // 2])),  # an upload cut in the middle
        ("4", "sha256", (store_raw(models, good)[0], "0" * 64)),
        ("5", "schema", models.store_bundle(train(seed=8, extra=True))),
    ]
    with running(predictor), Stream(settings, ledger) as stream:
        predictions.count(200)
        for version, reason, (uri, sha) in cases:
            before = metrics.value("swap_failures_total", {"reason": reason})
            models.publish(version, uri, sha)
            wait_for(lambda r=reason, b=before: metrics.value("swap_failures_total", {"reason": r}) > b,
                     what=f"version {version} refused ({reason})")  # fmt: skip
            assert predictor.model_version == "1"
        refused_at = stream.sent()
        models.release("6", seed=6)
        wait_for(lambda: predictor.model_version == "6", what="the good version 6 to swap in")
        swapped_at = stream.sent()
        wait_for(lambda: stream.sent() >= swapped_at + 200, what="requests after the swap")
    check_answers(ledger, predictions)
    versions = {p["request_id"]: p["model_version"] for p in predictions.values}
    assert {versions[f"bad-reloads-{i}"] for i in range(refused_at)} == {"1"}
    assert {versions[f"bad-reloads-{i}"] for i in range(swapped_at + 1, len(ledger.sent))} == {"6"}
    failures = {r: metrics.value("swap_failures_total", {"reason": r}) for r in ("corrupt", "sha256", "schema")}
    ledger.report(refused=failures, swaps=metrics.value("swaps_total"))
    assert failures == {"corrupt": 2, "sha256": 1, "schema": 1}
    assert metrics.value("swaps_total") == 2


def test_a_model_store_down_during_a_reload_is_retried_with_backoff_until_it_is_back(
    tmp_path: Path,
    broker: str,
    models_factory: Callable[[Settings], Models],
    reader: Callable[..., TopicReader],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MLflow's client retries an unreachable server itself (3 times, backoff 2 s, by the service's
    # defaults: about 45 s under load) before the predictor sees the failure; one quick retry keeps
    # the test short while the predictor's own backoff, the behaviour under test, is unchanged.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        settings = settings_on(broker, tmp_path / "home", mlflow_tracking_uri=server.uri)
        models = models_factory(settings)
        models.release("1")
        uri, sha = models.store_bundle(train(seed=3))  # stored while the store is up
        predictor = Predictor(settings)
        metrics = predictor.metrics
        predictions = reader(settings, "predictions")
        ledger = Ledger("store-down")
        with running(predictor), Stream(settings, ledger):
            predictions.count(200)
            server.stop()
            down = time.monotonic()
            models.publish("2", uri, sha)
            wait_for(lambda: metrics.value("model_store_errors_total") >= 1, 120, "a failed fetch")
            assert predictor.model_version == "1"
            predictions.count(len(predictions.values) + 200)  # the old version keeps answering meanwhile
            server.start()  # the follower keeps retrying, with backoff, while the server starts
            back = time.monotonic()
            wait_for(lambda: predictor.model_version == "2", 120, "the retried reload to swap in")
            swap_after = time.monotonic() - back
            assert metrics.value("model_store_errors_total") >= 2, "the reload was not retried"
        check_answers(ledger, predictions)
        ledger.report(
            store_errors=metrics.value("model_store_errors_total"), store_down_s=f"{back - down:.1f}",
            swapped_s_after_store_back=f"{swap_after:.1f}", swaps=metrics.value("swaps_total"),
        )  # fmt: skip
        assert metrics.value("swaps_total") == 2
        assert sum(metrics.value("swap_failures_total", {"reason": r}) for r in ("corrupt", "sha256", "load")) == 0
    finally:
        server.stop()
