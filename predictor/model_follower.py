"""Following the ``models`` topic: every replica reads every message (no consumer group), from the
beginning, so that a new replica starts on the current champion, the topic's last message.

A background thread reads the topic and hands the newest message for this model to the hot swap.
Messages that arrive while a model loads are coalesced (only the newest matters: the topic is a
history of champions, and a rollback is just a newer message naming an older version). A store that
is down is retried with exponential backoff until it answers or a newer message supersedes it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streamfit.common.kafka import make_consumer
from streamfit.common.messages import Decoder, ModelReload, Rejected
from streamfit.common.settings import Settings
from streamfit.predictor.hot_swap import HotSwap, Outcome
from streamfit.predictor.metrics import PredictorMetrics
from streamfit.predictor.throttled_log import ThrottledLog

log = logging.getLogger(__name__)

POLL_MS = 200


class ReloadSchedule:
    """Which reload to try next, and when. The newest offer wins and is tried at once; a retry
    waits ``initial`` seconds, doubling up to ``maximum`` (with jitter, so replicas spread out)."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.clock = clock
        self.jitter = jitter
        self.pending: ModelReload | None = None
        self.not_before = 0.0
        self.delay = initial

    def offer(self, reload: ModelReload) -> None:
        self.pending = reload
        self.not_before = 0.0
        self.delay = self.initial

    def due(self) -> ModelReload | None:
        if self.pending is not None and self.clock() >= self.not_before:
            return self.pending
        return None

    def finished(self, reload: ModelReload, outcome: Outcome) -> None:
        if reload is not self.pending:  # superseded while it loaded: the newer one is due now
            return
        if outcome is Outcome.RETRY:
            self.not_before = self.clock() + self.delay * (0.75 + 0.5 * self.jitter())
            self.delay = min(self.delay * 2, self.maximum)
        else:
            self.pending = None
            self.delay = self.initial


class ModelFollower:
    def __init__(self, settings: Settings, swap: HotSwap, metrics: PredictorMetrics) -> None:
        self.settings = settings
        self.swap = swap
        self.metrics = metrics
        self.topic = settings.topic("models")
        self.schedule = ReloadSchedule()
        self.caught_up = threading.Event()  # the topic was read to its end once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamfit-model-follower", daemon=True)
        self._decode = Decoder(ModelReload)
        self._bad = ThrottledLog(log, logging.WARNING, 60.0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> ModelFollower:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end; a model load in progress is abandoned (the thread is a daemon)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                consumer = make_consumer(self.settings, group_id=None, client_id="streamfit-predictor-models")
            except Exception as exc:  # noqa: BLE001 - keep trying: the serving loop reports a dead broker
                log.warning("cannot read %s yet (retry in %.0fs): %s", self.topic, delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            try:
                self._follow(consumer)
                return
            except Exception:
                log.exception("following %s failed; starting over in %.0fs", self.topic, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
            finally:
                consumer.close(autocommit=False)

    def _follow(self, consumer: KafkaConsumer) -> None:
        tp = TopicPartition(self.topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        caught_up = False
        schedule = self.schedule
        while not self._stop.is_set():
            wait = schedule.not_before - time.monotonic() if schedule.pending is not None else POLL_MS / 1000
            polled = consumer.poll(timeout_ms=int(min(max(wait, 0.0), POLL_MS / 1000) * 1000))
            newest = self._newest(polled.get(tp, ()))
            if newest is not None:
                schedule.offer(newest)
            if not caught_up:
                # The history is read before anything loads: loading every old champion would be pointless.
                if polled and consumer.position(tp) < end:
                    continue
                caught_up = True
                self.caught_up.set()
                if schedule.pending is None:
                    log.info("no model published on %s for %s yet", self.topic, self.settings.model_name)
            reload = schedule.due()
            if reload is not None:
                schedule.finished(reload, self.swap.apply(reload))

    def _newest(self, records: Sequence[Any]) -> ModelReload | None:
        newest = None
        for record in records:
            message = self._decode(record.value)
            if isinstance(message, Rejected):
                self.metrics.swap_failures.labels("invalid_message").inc()
                self._bad("ignored a bad message on %s at offset %d: %s", self.topic, record.offset, message.reason)
                continue
            if message.model_name == self.settings.model_name:
                newest = message
        return newest
