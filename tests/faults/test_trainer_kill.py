"""``streamfit trainer`` SIGKILLed twice during one cycle (in the search, then as soon as the cycle
registers its model version, on the way to publishing): the cycle runs again, exactly one reload is
published for it, its bundle is complete and verifiable, and a running predictor swaps exactly once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from streamfit.common.kafka import ensure_topics
from streamfit.common.messages import ModelReload, decode
from streamfit.common.model_store import ModelStore
from streamfit.predictor.service import Predictor
from streamfit.trainer.service import group_id
from tests.predictor.conftest import running
from tests.predictor.conftest import wait_for as wait_until
from tests.trainer.conftest import TrainerSettings
from tests.trainer.processes import TrainerProcess, processes, sigkill_in_the_search
from tests.trainer.support import committed, cycle_runs, read_topic, send_retrain, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.slow]
__all__ = ["processes"]  # a fixture used here


def test_trainer_sigkilled_twice_during_a_cycle_publishes_exactly_one_complete_reload(
    trainer_settings: TrainerSettings, processes: list[TrainerProcess], tmp_path: Path
) -> None:
    settings = trainer_settings(trials=200, time_budget=3.0)
    ensure_topics(settings)
    send_retrain(settings)
    store = ModelStore(settings)
    predictor = Predictor(settings)
    with running(predictor, ready=False):
        # Kill 1: in the middle of the search.
        sigkill_in_the_search(settings, processes)

        # Kill 2: the moment the cycle's version is registered (bundle stored), before it is published.
        second = TrainerProcess(settings)
        processes.append(second)
        wait_for(lambda: store.versions() or second.process.poll() is not None, 120, "a registered version", 0.02)
        second.process.send_signal(signal.SIGKILL)
        second.process.wait(10)
        registered_at_kill = [v.version for v in store.versions()]
        published_at_kill = len(read_topic(settings, "models"))

        # The third run finishes (or recovers) the cycle.
        third = TrainerProcess(settings)
        processes.append(third)
        wait_for(lambda: committed(settings, group_id(settings)) == 1, 120, f"the cycle to finish\n{third.log()}")
        third.process.send_signal(signal.SIGTERM)
        assert third.process.wait(30) == 0, third.log()

        messages = [decode(ModelReload, v) for _, v in read_topic(settings, "models")]
        assert len(messages) == 1, f"{len(messages)} reload messages for one cycle"
        (reload,) = messages
        assert isinstance(reload, ModelReload)
        assert reload.version == store.champion_version()
        bundle = store.fetch_bundle(reload.uri, reload.sha256)  # complete: downloads, sha256 matches, loads
        bundle.warm_up()
        wait_until(lambda: predictor.model_version == reload.version, 60, "the predictor to swap to the reload")
        swaps = predictor.metrics.value("swaps_total")
        reasons = ("sha256", "uri", "corrupt", "schema", "load", "warm_up", "invalid_message")
        failures = sum(predictor.metrics.value("swap_failures_total", {"reason": r}) for r in reasons)
    states = sorted(r.data.tags["streamfit.state"] for r in cycle_runs(store))
    print(
        f"\n[fault] trainer-kill: kills=2 cycle_runs={len(states)} states={states} "
        f"versions_registered={[v.version for v in store.versions()]} registered_at_kill={registered_at_kill} "
        f"published_at_kill={published_at_kill} reloads={len(messages)} version={reload.version} "
        f"predictor_swaps={swaps:.0f} swap_failures={failures:.0f} store_errors="
        f"{predictor.metrics.value('model_store_errors_total'):.0f} recovered={third.saw('publishing it now')}"
    )
    assert swaps == 1 and failures == 0
    assert states == ["failed", "failed", "promoted"]  # the killed cycles' runs are closed, not left running
    undecided = [v for v in store.versions() if str(v.version) != reload.version]
    assert undecided and all(v.tags.get("streamfit.decision", "").startswith("interrupted") for v in undecided)
    assert committed(settings, group_id(settings)) == 1
