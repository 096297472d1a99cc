"""What a trainer checks before a cycle, so that a crash never leaves a reload half-done.

Two windows are left by "commit the retrain offset only after the reload is acknowledged":

1. The trainer died after moving the ``champion`` alias and before the broker acknowledged the
   reload message: predictors were never told. The cycle's run is still in state ``promoting``;
   if its version is still the champion and is not the last message on ``models``, the reload is
   published now.
2. The trainer died after the acknowledgement (or after recording a rejection) and before
   committing: the retrain requests come back. A finished run that answered exactly those
   offsets already exists, so they are committed without training again.

3. The trainer died anywhere before that (in the search, or after registering its version but
   before moving the alias): the run is left ``training`` and RUNNING. It is closed as failed and
   a version it registered is marked as never decided (it was never published), so that MLflow and
   ``streamfit status`` do not show a cycle that is still running; the cycle itself runs again.

Together: a cycle killed at any point runs again or is finished, and exactly one reload message
is published for it. The check assumes one trainer per model name (the retrain topic has one
partition, so one member of the group gets it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson

from streamfit.common import tags as tag
from streamfit.common.kafka import read_last
from streamfit.common.messages import ModelReload, Rejected, decode
from streamfit.common.model_store import ModelStore
from streamfit.common.settings import Settings
from streamfit.trainer.coalesce import RetrainBatch, offsets_cover
from streamfit.trainer.tracking import DONE_STATES, CycleRun, store_call

log = logging.getLogger(__name__)


def last_published_version(settings: Settings) -> str | None:
    last = read_last(settings, settings.topic("models"))
    if last is None:
        return None
    key, value = last
    message = decode(ModelReload, value)
    if isinstance(message, Rejected) or (key is not None and key != settings.model_name.encode()):
        return None
    return message.version


def finish_interrupted_promotions(
    store: ModelStore, experiment_id: str, settings: Settings, publish: Callable[[ModelReload], None]
) -> list[str]:
    """Publish the reload of a promotion a crash interrupted; returns the versions published."""
    runs = store_call(store, "look for interrupted promotions", lambda: store.client.search_runs(
        [experiment_id], filter_string=f"tags.`{tag.STATE}` = 'promoting'", max_results=50,
    ))  # fmt: skip
    if not runs:
        return []
    champion = store.champion_version()
    published: list[str] = []
    last = last_published_version(settings)
    for run in runs:
        cycle = CycleRun(store, experiment_id, run.info.run_id)
        version = run.data.tags.get(tag.VERSION)
        if version is not None and version == champion:
            if last != version:
                log.warning("run %s crowned version %s but its reload was never acknowledged: publishing it now",
                            run.info.run_id, version)  # fmt: skip
                publish(store.reload_message(version))
                published.append(version)
                last = version
            cycle.set_tags({tag.STATE: "promoted", tag.RECOVERED: "true"})
            cycle.finish("FINISHED")
        else:
            log.warning("run %s stopped before crowning version %s: marking it failed", run.info.run_id, version)
            cycle.set_tags({tag.STATE: "failed", tag.ERROR: "interrupted before the champion alias moved"})
            cycle.finish("FAILED")
    return published


def close_interrupted_cycles(store: ModelStore, experiment_id: str) -> list[str]:
    """Mark the cycles a dead trainer left ``training`` as failed; returns their run ids."""
    runs = store_call(store, "look for interrupted cycles", lambda: store.client.search_runs(
        [experiment_id], filter_string=f"tags.`{tag.STATE}` = 'training' and attributes.status = 'RUNNING'",
        max_results=50,
    ))  # fmt: skip
    closed: list[str] = []
    for run in runs:
        run_id = run.info.run_id
        log.warning("run %s was interrupted during its cycle (the trainer stopped or died): marking it failed", run_id)
        cycle = CycleRun(store, experiment_id, run_id)
        cycle.set_tags({tag.STATE: "failed", tag.ERROR: "interrupted: the trainer died during the cycle"})
        cycle.finish("FAILED")
        _mark_undecided_versions(store, run_id)
        closed.append(run_id)
    return closed


def _mark_undecided_versions(store: ModelStore, run_id: str) -> None:
    def mark() -> None:
        for version in store.client.search_model_versions(f"name='{store.name}' and run_id='{run_id}'"):
            if tag.PROMOTED_AT in (version.tags or {}):  # a fast refit crowned before the crash
                continue
            store.tag_version(version.version, {tag.DECISION: "interrupted before the decision; never published"})

    store_call(store, "mark the versions of an interrupted cycle", mark)


def completed_run_for(store: ModelStore, experiment_id: str, batch: RetrainBatch) -> str | None:
    """The finished cycle that already answered every request of ``batch``, if any."""
    if not batch.next_offsets:
        return None
    runs = store_call(store, "look for a finished cycle", lambda: store.client.search_runs(
        [experiment_id], filter_string=f"tags.`{tag.RETRAIN_TOPIC}` = '{batch.topic}'",
        order_by=["attributes.start_time DESC"], max_results=20,
    ))  # fmt: skip
    for run in runs:
        tags = run.data.tags
        if tags.get(tag.STATE) not in DONE_STATES or tag.RETRAIN_FIRST not in tags or tag.RETRAIN_NEXT not in tags:
            continue
        first = {int(p): int(o) for p, o in orjson.loads(tags[tag.RETRAIN_FIRST]).items()}
        nxt = {int(p): int(o) for p, o in orjson.loads(tags[tag.RETRAIN_NEXT]).items()}
        if offsets_cover(first, nxt, batch):
            return str(run.info.run_id)
    return None
