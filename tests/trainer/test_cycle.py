"""Full cycles on real Kafka, a real MLflow store and real LightGBM."""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import orjson
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from streamfit.common.bundle import BUNDLE_FILE
from streamfit.common.errors import ModelStoreError
from streamfit.common.kafka import ensure_topics, make_producer
from streamfit.common.messages import DeadLetter, ModelReload, Observation, decode
from streamfit.common.model_store import ModelStore
from streamfit.common.pipeline import read_table
from streamfit.common.settings import Settings
from streamfit.trainer.bootstrap import bootstrap
from streamfit.trainer.cycle import CycleResult
from streamfit.trainer.objective import CrossValidation, TrialScore
from streamfit.trainer.observations import ObservationLog
from streamfit.trainer.service import Trainer, group_id
from tests.trainer.conftest import TrainerSettings
from tests.trainer.support import (
    child_runs,
    committed,
    cycle_runs,
    install_champion,
    observation,
    read_topic,
    records,
    send_observations,
    send_retrain,
    wait_for,
)

pytestmark = pytest.mark.kafka


def bad_observations(features: dict[str, object]) -> list[bytes]:
    return [
        observation(features, "maybe", 1.0),  # not a class
        observation({**features, "age": "abc"}, "<=50K", 1.0),  # a numeric feature as text
        observation({"shoe_size": 42}, ">50K", 1.0),  # another schema altogether
        b"{not json",
    ]


def test_a_retrain_request_runs_a_full_cycle_and_publishes_a_verifiable_reload(
    trainer_settings: TrainerSettings, adult: tuple[Path, Path, Path]
) -> None:
    settings = trainer_settings(trials=4)
    base, _, stream = adult
    stream_frame = read_table(stream).iloc[:300]
    with Trainer(settings, progress=False) as trainer:
        ensure_topics(settings)
        champion = install_champion(settings, read_table(base).iloc[:50], rounds=1, strong=False)
        sample = {k: v for k, v in read_table(base).iloc[0].to_dict().items() if k != "income"}
        sent = send_observations(settings, stream_frame, "income", bad_observations(sample))
        send_retrain(settings, reason="count")
        result = trainer.run_once()
    assert result is not None and result.promoted, result
    store = ModelStore(settings)

    # MLflow: one parent run, one child per trial, the tags, the plots, a new version.
    (run,) = cycle_runs(store)
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["streamfit.state"] == "promoted" and tags["streamfit.reason"] == "count"
    assert sum(orjson.loads(tags["streamfit.watermarks"]).values()) == sent == 304
    assert len(tags["streamfit.data_hash"]) == 64 and tags["streamfit.package_version"]
    assert (tags["streamfit.rows_base"], tags["streamfit.rows_observations"]) == ("2000", "240")
    assert (tags["streamfit.rows_observations_holdout"], tags["streamfit.rows_test"]) == ("60", "500")
    assert tags["streamfit.dead_lettered"] == "4" and tags["streamfit.observations_read"] == "304"
    children = child_runs(store, run.info.run_id)
    assert len(children) == 4 == result.trials
    for child in children:
        assert {"cv_loss", "best_iteration"} <= set(child.data.metrics)
        assert {"learning_rate", "num_leaves", "lambda_l1"} <= set(child.data.params)
    assert run.data.params["learning_rate"] == repr(result.best_params["learning_rate"])
    assert {"holdout_loss", "champion_holdout_loss", "best_cv_loss"} <= set(run.data.metrics)
    assert run.data.metrics["holdout_loss"] < run.data.metrics["champion_holdout_loss"]
    artifacts = {a.path for a in store.client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/search_history.png", "plots/feature_importance.png", "plots/drift_report.png"}
    assert 0 <= run.data.metrics["drift_score"] <= 1 and "psi.age" in run.data.metrics
    # The fast refit (the champion's parameters on the new data) beat the weak champion and was
    # crowned first, on a child run of its own; the search's best replaces it only if it beats it too.
    assert result.fast_version is not None, result
    (fast_run,) = child_runs(store, run.info.run_id, "fast-refit")
    fast_version = store.client.get_model_version(store.name, result.fast_version)
    assert fast_version.run_id == fast_run.info.run_id and fast_version.tags["streamfit.candidate"] == "fast refit"
    # The search's best is registered too (promoted or rejected), unless it is the fast refit's point.
    registered = {str(v.version): dict(v.tags) for v in store.versions()}
    assert list(registered)[:2] == [champion, result.fast_version]
    searched = list(registered)[2:]
    assert len(searched) <= 1 and all(registered[v]["streamfit.candidate"] == "search" for v in searched)
    crowned = [champion, result.fast_version] + [v for v in searched if "streamfit.rejected" not in registered[v]]
    assert store.champion_version() == result.version == crowned[-1]
    # Which rows decided: 60 newest observations are fewer than holdout_min, so the base test split joins them.
    assert registered[result.version]["streamfit.holdout"] == "base test split + newest observations"
    assert tags["streamfit.holdout"] == "base test split + newest observations"

    # Kafka: each reload message names the stored bundle by its sha256, the last one the champion's; offsets committed.
    messages = read_topic(settings, "models")
    assert [decode(ModelReload, v).version for _, v in messages] == crowned[1:]  # type: ignore[union-attr]
    key, value = messages[-1]
    reload = decode(ModelReload, value)
    assert isinstance(reload, ModelReload) and key == settings.model_name.encode()
    assert reload == result.reload and reload.version == result.version
    model_run = store.client.get_model_version(store.name, reload.version).run_id  # fast refit child or cycle
    stored = Path(mlflow.artifacts.download_artifacts(
        run_id=model_run, artifact_path=f"bundle/{BUNDLE_FILE}", tracking_uri=settings.tracking_uri,
    )).read_bytes()  # fmt: skip
    assert hashlib.sha256(stored).hexdigest() == reload.sha256
    bundle = store.fetch_bundle(reload.uri, reload.sha256)
    assert bundle.predict([sample])[0][0] in ("<=50K", ">50K")
    assert bundle.profile is not None
    assert bundle.profile.holdout["loss"] == float(registered[reload.version]["streamfit.candidate_loss"])
    assert bundle.profile.rows == 2240  # every training row: 2,000 base and the 240 observations trained on
    assert committed(settings, group_id(settings)) == 1

    # The four bad observations went to the dead letters, with their reasons.
    letters = [decode(DeadLetter, v) for _, v in read_topic(settings, "dead-letters")]
    errors = sorted(letter.error for letter in letters if isinstance(letter, DeadLetter))
    assert len(errors) == 4
    assert any("not a class" in e for e in errors) and any("must be a number" in e for e in errors)
    assert any("no feature of the schema" in e for e in errors) and any("invalid JSON" in e for e in errors)

    # The cache survives the process: a new reader starts from the watermarks.
    cache = ObservationLog(settings)
    cache.load()
    assert len(cache.labels) == 300 and sum(cache.offsets.values()) == 304

    # Same data, settings and seed: the same best parameters; a tie does not promote.
    with Trainer(settings, progress=True) as again:
        second = again.run_cycle()
    assert second.best_params == result.best_params and second.data_hash == result.data_hash
    assert second.state == "rejected" and len(read_topic(settings, "models")) == len(crowned) - 1
    second_run = store.client.get_run(second.run_id)
    assert second_run.data.tags["streamfit.observations_read"] == "0"  # all from the Parquet cache


def test_a_champion_trained_on_the_holdout_cannot_be_beaten(
    trainer_settings: TrainerSettings, adult: tuple[Path, Path, Path]
) -> None:
    settings = trainer_settings(optimizer="random", trials=2)
    with Trainer(settings, progress=False) as trainer:
        ensure_topics(settings)
        champion = install_champion(settings, read_table(adult[1]), rounds=300, strong=True)  # the test split
        send_retrain(settings, reason="manual")
        result = trainer.run_once()
    assert result is not None and result.state == "rejected"
    assert result.champion_metrics is not None and result.champion_metrics["loss"] < 0.05
    assert result.candidate_metrics["loss"] > result.champion_metrics["loss"]
    store = ModelStore(settings)
    assert store.champion_version() == champion
    version = store.client.get_model_version(settings.model_name, result.version)
    assert version.tags["streamfit.rejected"] == "true"
    assert float(version.tags["streamfit.candidate_loss"]) == pytest.approx(result.candidate_metrics["loss"])
    assert float(version.tags["streamfit.champion_loss"]) == pytest.approx(result.champion_metrics["loss"])
    run = store.client.get_run(result.run_id)
    assert run.data.tags["streamfit.state"] == "rejected" and "does not beat" in run.data.tags["streamfit.decision"]
    assert read_topic(settings, "models") == []
    assert committed(settings, group_id(settings)) == 1


def test_too_few_rows_publishes_nothing_and_commits(trainer_settings: TrainerSettings) -> None:
    settings = trainer_settings(min_rows=5000)
    with Trainer(settings, progress=False) as trainer:
        assert trainer.run_once(only_if_requested=True) is None  # nothing pending: no cycle
        send_retrain(settings)
        result = trainer.run_once()
    assert result is not None and result.state == "too_few_rows"
    run = ModelStore(settings).client.get_run(result.run_id)
    assert "min_rows 5000" in run.data.tags["streamfit.note"]
    assert ModelStore(settings).versions() == []
    assert read_topic(settings, "models") == []
    assert committed(settings, group_id(settings)) == 1


def _flipped(label: str) -> str:
    return ">50K" if label == "<=50K" else "<=50K"


def _send_served(
    settings: Settings, rows: list[dict[str, object]], start: float, changed: bool, segment: str | None = None
) -> None:
    """Observations of ``rows`` (Adult, ``income`` included) one second apart from ``start``. After the
    change the rule is flipped (for rows whose ``marital_status`` is ``segment``, when given) and the
    served model, still answering the old rule, is wrong there."""
    producer = make_producer(settings, client_id="test-served")
    try:
        for i, row in enumerate(rows):
            features = {k: v for k, v in row.items() if k != "income"}
            label = str(row["income"])
            flip = changed and (segment is None or row["marital_status"] == segment)
            truth, served = (_flipped(label), label) if flip else (label, label)
            producer.send(settings.topic("observations"), value=Observation(
                request_id=uuid.uuid4().hex, features=features, label=truth, prediction=served, score=0.5,
                model_version="1", observed_at=start + i).encode())  # fmt: skip
        producer.flush(timeout=30)
    finally:
        producer.close()


def test_a_cycle_just_after_a_change_waits_for_rows_of_the_new_world(
    trainer_settings: TrainerSettings, adult: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """150 observations after the change leave 120 to train on, under ``min_rows`` 200: the cycle
    reads again until the new world is enough (instead of publishing nothing)."""
    caplog.set_level(logging.INFO, logger="streamfit.trainer.cycle")
    settings = trainer_settings(trials=1, min_rows=200)
    base, _, stream = adult
    rows = records(read_table(stream))
    more = records(read_table(base).iloc[:200])
    start = time.time() - 1000
    with Trainer(settings, progress=False) as trainer:
        ensure_topics(settings)
        install_champion(settings, read_table(base).iloc[:200], rounds=20, strong=False)
        _send_served(settings, rows[:250], start, changed=False)
        _send_served(settings, rows[250:400], start + 250, changed=True)
        send_retrain(settings, reason="drift")
        with ThreadPoolExecutor(1) as pool:
            cycle = pool.submit(trainer.run_once)
            # The cycle has read the first 400 and found the change: the rest of the new world arrives.
            wait_for(lambda: "waiting up to" in caplog.text, 60, "the cycle to wait for the new world")
            _send_served(settings, more, start + 400, changed=True)
            result = cycle.result(timeout=300)
    assert result is not None and result.state != "too_few_rows", result
    assert result.counts["rows_after_change"] == 350  # 280 to train on: the newest 20% are the holdout
    run = ModelStore(settings).client.get_run(result.run_id)
    assert run.data.tags["streamfit.change_at"] == "250"
    assert run.data.tags["streamfit.holdout"] == "newest observations after the change"
    # Trained twice, with the 2,250 older rows at a quarter of the weight and without them; the
    # holdout chose (the old rows must be better with confidence), and the cycle trained on that.
    old_rows = run.data.tags["streamfit.old_rows"]
    found = re.search(r"holdout loss (\S+) with them at 0.25, (\S+) without", old_rows)
    assert found is not None, old_rows
    with_old, without = float(found[1]), float(found[2])
    kept = old_rows.startswith("kept")
    assert kept or old_rows.startswith("left out"), old_rows
    assert not kept or with_old < without, old_rows  # the old rows stay only if they do better
    expected = (2000 + 250 + 280, 2000) if kept else (280, 0)
    assert (result.counts["rows"], result.counts["rows_base"]) == expected
    assert run.data.tags["streamfit.rows"] == str(expected[0])
    # The new rows alone came first: their fast refit (over a champion that serves the old rule)
    # was crowned before the older rows were tried, so a slow second fit delays no fresh model.
    assert result.fast_version is not None, result.fast_refit
    crowned = re.search(r"version (\S+) \((fast|leaf) refit\) promoted", caplog.text)
    assert crowned is not None and crowned.start() < caplog.text.index("after the change: holdout loss")
    # Before that, the champion's own trees with their leaves refit on the new rows were scored on
    # the same holdout, and the better of the two went on to be offered.
    found = re.search(r"leaf refit: holdout loss (\S+) for version 1's trees .* rows \(\S+\), (\S+) for the fast "
                      r"refit on them: the (leaf refit|fast refit) goes on", caplog.text)  # fmt: skip
    assert found is not None, caplog.text
    leaves, fast = float(found[1]), float(found[2])
    assert found[3] == crowned[2] + " refit" == ("leaf refit" if leaves < fast else "fast refit")
    store = ModelStore(settings)
    bundle, champion = (store.fetch_bundle(m.uri, m.sha256) for m in map(store.reload_message, (crowned[1], "1")))
    if found[3] == "leaf refit":  # the champion's trees, with other leaf values
        assert bundle.meta["refit_of"] == "1" and bundle.booster.num_trees() == champion.booster.num_trees()
        assert bundle.booster.model_to_string() != champion.booster.model_to_string()
    else:
        assert "refit_of" not in bundle.meta


def _drift_cycle(
    settings: Settings,
    adult: tuple[Path, Path, Path],
    caplog: pytest.LogCaptureFixture,
    *,
    changed_first: int,
    waits_for: str,
    details: dict[str, object] | None = None,
) -> tuple[CycleResult | None, str]:
    """250 observations of the old world and ``changed_first`` of a flipped one, a drift request,
    and, once the cycle logs ``waits_for``, 350 more of the new world: the cycle's result, and the
    log as it was while the cycle waited."""
    base, _, stream = adult
    rows = records(read_table(stream)) + records(read_table(base).iloc[:300])
    start, sent = time.time() - 1000, 250 + changed_first
    with Trainer(settings, progress=False) as trainer:
        ensure_topics(settings)
        install_champion(settings, read_table(base).iloc[:200], rounds=20, strong=False)
        _send_served(settings, rows[:250], start, changed=False)
        _send_served(settings, rows[250:sent], start + 250, changed=True)
        send_retrain(settings, reason="drift", details=details)
        with ThreadPoolExecutor(1) as pool:
            cycle = pool.submit(trainer.run_once)
            wait_for(lambda: waits_for in caplog.text, 60, f"the cycle to log {waits_for!r}")
            waiting = caplog.text
            _send_served(settings, rows[sent:600], start + sent, changed=True)
            return cycle.result(timeout=300), waiting


def test_a_drift_request_for_a_rising_error_waits_for_the_change_to_show(
    trainer_settings: TrainerSettings, adult: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A predictor that saw its error rise asks before the trainer's observations show the change:
    the cycle reads again until they do, and trains on the new world (instead of the old one)."""
    caplog.set_level(logging.INFO, logger="streamfit.trainer.cycle")
    settings = trainer_settings(trials=1, min_rows=80)
    result, _ = _drift_cycle(settings, adult, caplog, changed_first=0, waits_for="no change of the world shows",
                             details={"causes": ["metric"]})  # fmt: skip
    assert result is not None and result.state != "too_few_rows", result
    run = ModelStore(settings).client.get_run(result.run_id)
    assert run.data.tags["streamfit.change_at"] == "250"
    assert run.data.tags["streamfit.holdout"] == "newest observations after the change"


def test_a_change_found_on_its_first_few_rows_is_moved_to_where_the_later_rows_put_it(
    trainer_settings: TrainerSettings, adult: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A drift request 20 rows into the new world: the scan, which wants 50 rows after a step, first
    places the change at the last split it may (30 rows early, in the old world). Once more rows have
    come it is moved to the real one, and the cycle trains on the new world alone."""
    caplog.set_level(logging.INFO, logger="streamfit.trainer.cycle")
    settings = trainer_settings(trials=1, min_rows=80)
    result, waiting = _drift_cycle(settings, adult, caplog, changed_first=20, waits_for="waiting up to")
    assert "at observation 220 of 270" in waiting, waiting  # pinned 50 rows before the end
    assert result is not None and result.state != "too_few_rows", result
    run = ModelStore(settings).client.get_run(result.run_id)
    assert run.data.tags["streamfit.change_at"] == "250"


def test_after_a_segment_flips_the_champions_trees_with_leaves_refit_on_the_new_rows_are_crowned(
    trainer_settings: TrainerSettings, adult: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The sample app's drift without its unit change: married people's labels flip. The champion's
    trees already split on marital status; re-estimating their leaves on the new rows beats a model
    grown from those rows alone, and that model is the one crowned."""
    caplog.set_level(logging.INFO, logger="streamfit.trainer.cycle")
    settings = trainer_settings(trials=1, min_rows=200)
    base, _, stream = adult
    rows = records(read_table(stream)) + records(read_table(base).iloc[:500])
    start = time.time() - 1000
    champion = bootstrap(settings, publish=False).version
    with Trainer(settings, progress=False) as trainer:
        ensure_topics(settings)
        _send_served(settings, rows[:250], start, changed=False)
        _send_served(settings, rows[250:900], start + 250, changed=True, segment="Married-civ-spouse")
        send_retrain(settings, reason="drift")
        result = trainer.run_once()
    assert result is not None and result.state == "promoted", result
    found = re.search(r"leaf refit: holdout loss (\S+) for version (\S+)'s trees .* (\S+) for the fast refit on "
                      r"them: the (leaf refit|fast refit) goes on", caplog.text)  # fmt: skip
    assert found is not None, caplog.text
    assert found[2] == champion and found[4] == "leaf refit" and float(found[1]) < float(found[3]), found[0]
    assert result.fast_version is not None and f"version {result.fast_version} (leaf refit) promoted" in caplog.text
    store = ModelStore(settings)
    crowned, first = (store.fetch_bundle(m.uri, m.sha256) for m in map(store.reload_message, (result.fast_version,
                                                                                             champion)))  # fmt: skip
    assert crowned.meta["refit_of"] == champion and crowned.booster.num_trees() == first.booster.num_trees()
    assert crowned.meta["run_id"] == result.run_id and crowned.meta["candidate"] == "leaf refit"  # this cycle's
    assert crowned.booster.model_to_string() != first.booster.model_to_string()  # same trees, new leaf values


def test_an_unreachable_mlflow_store_fails_the_cycle_and_leaves_the_offset(
    trainer_settings: TrainerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    settings = trainer_settings(mlflow_tracking_uri="http://127.0.0.1:9")
    with Trainer(settings, progress=False) as trainer:
        ensure_topics(settings)
        send_retrain(settings)
        with pytest.raises(ModelStoreError, match=r"MLflow store at http://127.0.0.1:9 failed.*MLFLOW_TRACKING_URI"):
            trainer.run_once()
    assert committed(settings, group_id(settings)) is None
    assert read_topic(settings, "models") == []


def test_a_cycle_starts_its_search_from_the_best_points_of_the_cycles_before_it(
    trainer_settings: TrainerSettings, adult: tuple[Path, Path, Path]
) -> None:
    settings = trainer_settings(trials=3)
    base, _, stream = adult
    with Trainer(settings, progress=False) as trainer:
        ensure_topics(settings)
        install_champion(settings, read_table(base).iloc[:50], rounds=1, strong=False)
        send_observations(settings, read_table(stream).iloc[:200], "income")
        first = trainer.run_cycle()
        second = trainer.run_cycle()
    store = ModelStore(settings)
    run = store.client.get_run(second.run_id)
    assert orjson.loads(run.data.tags["streamfit.warm_start_from"]) == [first.run_id]
    assert "streamfit.warm_start_from" not in store.client.get_run(first.run_id).data.tags
    trials = {int(c.data.tags["streamfit.trial"]): c.data.params for c in child_runs(store, second.run_id)}
    # Trial 1 is the champion's point (the fast refit's), then the first cycle's best unless that
    # is the same point (the order itself: tests/trainer/test_search.py).
    best = {k: float(v) for k, v in first.best_params.items()}
    assert any({k: float(trials[n][k]) for k in best} == pytest.approx(best) for n in (1, 2)), (best, trials)


def test_a_cycle_runs_blas_on_one_thread_and_gives_the_threads_back(
    trainer_settings: TrainerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenBLAS's idle workers spin and take cores from the LightGBM trials (trainer.cycle.run)."""

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    seen: list[set[int]] = []
    score = CrossValidation.__call__

    def recording(self: CrossValidation, params: dict[str, Any]) -> TrialScore:
        seen.append(blas_threads())
        return score(self, params)

    monkeypatch.setattr(CrossValidation, "__call__", recording)
    settings = trainer_settings(trials=2)
    with threadpool_limits(limits=2, user_api="blas"), Trainer(settings, progress=False) as trainer:
        result = trainer.run_cycle()
        after = blas_threads()
    assert result.trials == 2
    assert seen and all(threads == {1} for threads in seen), seen
    assert after == {2}
