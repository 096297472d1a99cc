"""The trainer as a service: coalescing, crash safety (SIGKILL, a lost acknowledgement),
and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from streamfit.common.errors import BrokerUnavailable, ConfigError
from streamfit.common.kafka import ensure_topics
from streamfit.common.messages import ModelReload, decode
from streamfit.common.model_store import ModelStore
from streamfit.common.settings import Settings
from streamfit.trainer.publisher import Publisher
from streamfit.trainer.service import Trainer, group_id
from tests.trainer.conftest import TrainerSettings
from tests.trainer.processes import TrainerProcess, processes, sigkill_in_the_search
from tests.trainer.support import child_runs, committed, cycle_runs, read_topic, send_retrain, wait_for

pytestmark = pytest.mark.kafka
__all__ = ["processes"]  # a fixture used here


def test_retrain_requests_are_coalesced_into_one_cycle_per_drain(trainer_settings: TrainerSettings) -> None:
    """Ten requests at once: one cycle. Ten more while it trains: one more cycle."""
    settings = trainer_settings(trials=5)
    ensure_topics(settings)
    send_retrain(settings, count=10)
    store = ModelStore(settings)
    with Trainer(settings, progress=False) as trainer:
        worker = threading.Thread(target=trainer.run, kwargs={"timeout": 120}, daemon=True)
        worker.start()
        try:
            wait_for(lambda: cycle_runs(store), 60, "the first cycle to start", every=0.05)
            send_retrain(settings, count=10, reason="count")  # while the first cycle trains
            wait_for(lambda: committed(settings, group_id(settings)) == 20, 90, "all 20 requests committed")
        finally:
            trainer.stop()
            worker.join(30)
        assert not worker.is_alive()
        assert trainer.cycles == 2
    runs = sorted(cycle_runs(store), key=lambda r: r.info.start_time)
    assert [r.data.tags["streamfit.requests"] for r in runs] == ["10", "10"]
    assert [r.data.tags["streamfit.reason"] for r in runs] == ["count", "count"]


@contextmanager
def searching(settings: Settings, store: ModelStore, timeout: float) -> Iterator[Trainer]:
    """A trainer running in a thread, handed over once its first cycle has logged a trial; on the
    way out it is stopped, and its thread must have ended within 30 s."""
    with Trainer(settings, progress=False) as trainer:
        worker = threading.Thread(target=trainer.run, kwargs={"timeout": timeout}, daemon=True)
        worker.start()
        try:
            runs = wait_for(lambda: cycle_runs(store), 60, "the cycle to start", every=0.05)
            wait_for(lambda: child_runs(store, runs[0].info.run_id), 30, "a first trial", every=0.05)
            yield trainer
        finally:
            trainer.stop()
            worker.join(30)
        assert not worker.is_alive()


@pytest.mark.parametrize("first", ["count", "drift"])
def test_a_drift_request_preempts_a_count_cycle_and_is_served_first(
    trainer_settings: TrainerSettings, first: str
) -> None:
    """A count cycle in a long search gives way to a drift request: it stops within its running
    trial, unpublished and uncommitted, and one drift cycle then answers both requests. So does a
    drift cycle that found no change of the world (there are no observations here): the next drift
    request may be about a change after its alarm."""
    settings = trainer_settings(trials=500, time_budget=20.0)
    ensure_topics(settings)
    send_retrain(settings, reason=first)
    store = ModelStore(settings)
    with searching(settings, store, timeout=150) as trainer:
        send_retrain(settings, reason="drift")
        wait_for(lambda: committed(settings, group_id(settings)) == 2, 120, "both requests committed")
    assert trainer.cycles == 1
    preempted, second = sorted(cycle_runs(store), key=lambda r: r.info.start_time)
    assert preempted.info.status == "KILLED" and preempted.data.tags["streamfit.state"] == "preempted"
    assert preempted.data.tags["streamfit.reason"] == first
    assert len(child_runs(store, preempted.info.run_id)) < 500  # it did not finish its search
    assert second.data.tags["streamfit.reason"] == "drift" and second.data.tags["streamfit.requests"] == "2"
    assert second.data.tags["streamfit.state"] in ("promoted", "rejected")


def test_stop_during_the_search_leaves_the_cycle_to_run_again(trainer_settings: TrainerSettings) -> None:
    settings = trainer_settings(trials=500, time_budget=60.0)
    ensure_topics(settings)
    send_retrain(settings)
    store = ModelStore(settings)
    with searching(settings, store, timeout=90) as trainer:
        pass
    assert trainer.cycles == 0
    (run,) = cycle_runs(store)
    assert run.info.status == "KILLED" and run.data.tags["streamfit.state"] == "stopped"
    assert committed(settings, group_id(settings)) is None and read_topic(settings, "models") == []


class LostAckPublisher(Publisher):
    """The broker goes away just when the reload message is sent."""

    def publish_reload(self, message: ModelReload) -> None:
        raise BrokerUnavailable("simulated: no acknowledgement for the reload message")


def test_a_reload_that_was_never_acknowledged_is_published_once_on_the_next_run(
    trainer_settings: TrainerSettings,
) -> None:
    settings = trainer_settings(optimizer="random", trials=2)
    ensure_topics(settings)
    send_retrain(settings)
    with Trainer(settings, progress=False) as trainer:
        trainer.publisher = LostAckPublisher(settings)
        with pytest.raises(BrokerUnavailable):
            trainer.run_once()
    store = ModelStore(settings)
    (run,) = cycle_runs(store)
    assert run.data.tags["streamfit.state"] == "promoting" and store.champion_version() == "1"
    assert read_topic(settings, "models") == [] and committed(settings, group_id(settings)) is None

    with Trainer(settings, progress=False) as trainer:
        assert trainer.run_once() is None  # recovery publishes; the batch is already answered
        assert trainer.cycles == 0
    messages = [decode(ModelReload, v) for _, v in read_topic(settings, "models")]
    assert [m.version for m in messages if isinstance(m, ModelReload)] == ["1"]
    assert committed(settings, group_id(settings)) == 1
    (run,) = cycle_runs(store)
    assert run.data.tags["streamfit.state"] == "promoted" and run.data.tags["streamfit.recovered"] == "true"


@pytest.mark.slow
def test_sigkill_during_a_cycle_reruns_it_and_publishes_exactly_one_reload(
    trainer_settings: TrainerSettings, processes: list[TrainerProcess]
) -> None:
    settings = trainer_settings(trials=200, time_budget=3.0)
    ensure_topics(settings)
    send_retrain(settings)

    sigkill_in_the_search(settings, processes)

    second = TrainerProcess(settings)
    processes.append(second)
    wait_for(lambda: committed(settings, group_id(settings)) == 1, 120, f"the cycle to run again\n{second.log()}")
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(30) == 0, second.log()
    assert second.saw("trainer stopped after 1 cycle(s)"), second.log()

    messages = [decode(ModelReload, v) for _, v in read_topic(settings, "models")]
    assert len(messages) == 1 and isinstance(messages[0], ModelReload)
    store = ModelStore(settings)
    states = sorted(r.data.tags["streamfit.state"] for r in cycle_runs(store))
    assert states == ["failed", "promoted"]  # the killed cycle's run was closed by the next trainer
    assert messages[0].version == store.champion_version()


def test_gp_on_spark_is_refused_at_start_up_naming_the_settings(trainer_settings: TrainerSettings) -> None:
    with pytest.raises(ConfigError, match=r"--optimizer gp .* cannot run on Spark"):
        Trainer(trainer_settings(optimizer="gp", spark_parallelism=2))


def test_gp_with_parallel_trials_is_refused_at_start_up_naming_the_settings(
    trainer_settings: TrainerSettings,
) -> None:
    with pytest.raises(ConfigError, match=r"--optimizer gp .* cannot run 2 trials at once.*--parallel-trials"):
        Trainer(trainer_settings(optimizer="gp", parallel_trials=2))
    Trainer(trainer_settings(optimizer="gp", parallel_trials=0)).close()  # auto: gp runs one at a time
