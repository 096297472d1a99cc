"""The one way a model version becomes the champion: bootstrap, a cycle and a rollback all crown
through ``crown``, so that they keep the same order.

Before it, the bundle is stored (``ModelStore.save_bundle`` returns once the artifact is written)
and the version registered: nothing points at an artifact that is not there. Then:

1. the run that made the version says ``promoting`` (``trainer.recovery`` publishes the reload of
   a run a crash left so, if its version is still the champion);
2. the ``champion`` alias moves;
3. the reload message is sent and acknowledged;
4. the version records when it was crowned, and which champion it replaced.

A predictor therefore never hears of a version that is not the champion in the store, and a crash
between 2 and 3 is finished by the next trainer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from streamfit.common import tags as tag
from streamfit.common.messages import ModelReload
from streamfit.common.model_store import ModelStore


class Tagged(Protocol):
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...


def crown(
    store: ModelStore, version: str, publish: Callable[[ModelReload], None], run: Tagged | None = None
) -> ModelReload:
    """Make ``version`` the champion and publish its reload (through ``publish``); ``run`` is the
    run that made it (none for a rollback). Returns the reload message."""
    previous = store.champion_version()
    if run is not None:
        run.set_tags({tag.VERSION: version, tag.STATE: "promoting"})
    store.set_champion(version)
    message = store.reload_message(version)
    publish(message)
    store.tag_version(version, {tag.PROMOTED_AT: f"{time.time():.3f}", tag.PREVIOUS_CHAMPION: previous or "none"})
    return message
