"""The trainer service: retrain requests in, cycles run, offsets committed after the outcome.

One consumer group reads ``retrain``. When a request arrives, everything pending on the topic
(up to its end offsets at that moment) is drained and coalesced into one cycle; requests that
arrive while the cycle trains wait in the topic and become the next cycle. The offsets are
committed only after the cycle's outcome is durable: the reload message acknowledged by the
broker, or the rejection recorded in MLflow. A failed cycle rewinds the consumer to the batch's
first offset and is retried after a back-off; ``stop()`` (SIGTERM, SIGINT) ends the search at the
next trial boundary and leaves the offsets uncommitted, so the cycle runs again on restart.

In-process use (the demo, tests)::

    with Trainer(settings) as trainer:
        trainer.run(timeout=60)     # serve retrain requests for a minute (or count=N cycles)
        trainer.run_once()          # what `streamfit trainer --once` does
        trainer.run_cycle()         # one manual cycle now, ignoring the retrain topic
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from streamfit.common.errors import BrokerUnavailable, ConfigError, StreamfitError
from streamfit.common.kafka import ensure_topics, make_consumer
from streamfit.common.messages import dead_letter
from streamfit.common.model_store import ModelStore
from streamfit.common.settings import Settings
from streamfit.trainer.coalesce import RetrainBatch, coalesce
from streamfit.trainer.cycle import CycleAborted, CyclePreempted, CycleResult, CycleRunner
from streamfit.trainer.metrics import CYCLES, RETRAIN_REQUESTS
from streamfit.trainer.publisher import Publisher
from streamfit.trainer.recovery import close_interrupted_cycles, completed_run_for, finish_interrupted_promotions

log = logging.getLogger(__name__)

BACKOFF_FIRST = 5.0
PREEMPT_CHECK_EVERY = 0.25  # seconds between two looks for a drift request behind a running count cycle
BACKOFF_MAX = 300.0


def group_id(settings: Settings) -> str:
    """The trainer's consumer group (the same spelling as ``Settings.group_id("trainer")``)."""
    return f"{settings.topic_prefix}{settings.model_name}.trainer"


def max_poll_interval_ms(settings: Settings) -> int:
    """The consumer does not poll while a cycle runs: allow the whole search, the final fit and
    the evaluation, so that the group does not hand the partition away mid-cycle."""
    return int(max(300.0, 2 * settings.time_budget + 600.0) * 1000)


class Trainer:
    def __init__(
        self,
        settings: Settings,
        *,
        progress: bool | None = None,
        group: str | None = None,
    ) -> None:
        if settings.optimizer == "gp" and settings.spark_parallelism:
            raise ConfigError(
                "--optimizer gp (STREAMFIT_OPTIMIZER) cannot run on Spark: scikit-optimize's search is sequential; "
                "use --optimizer tpe or random with --spark-parallelism, or --spark-parallelism 0"
            )
        if settings.optimizer == "gp" and settings.parallel_trials > 1:
            raise ConfigError(
                f"--optimizer gp (STREAMFIT_OPTIMIZER) cannot run {settings.parallel_trials} trials at once: "
                "scikit-optimize proposes one point at a time; use --optimizer tpe or random with "
                "--parallel-trials (STREAMFIT_PARALLEL_TRIALS), or --parallel-trials 1"
            )
        self.settings = settings
        self.group_id = group or group_id(settings)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.publisher = Publisher(settings)
        self.cycles = 0  # cycles run by this instance (not counting batches found already done)
        self.last_result: CycleResult | None = None
        self.last_error: str | None = None  # why the last cycle failed, until one succeeds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._store: ModelStore | None = None
        self._runner: CycleRunner | None = None
        self._consumer: Any = None
        self._peek: Any = None  # reads the retrain topic behind a running cycle, for drift requests
        self._topics_ready = False

    # --- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def stop(self) -> None:
        """Ask ``run`` to return: between polls at once, during a search after the current trial.
        Safe from a signal handler or another thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def readiness(self) -> tuple[bool, str]:
        """The /readyz probe: not ready while the last cycle failed (it is being retried)."""
        if self._closed:
            return False, "closed"
        if self.last_error is not None:
            return False, f"last cycle failed, retrying: {self.last_error}"
        return True, f"ok: {self.cycles} cycle(s)"

    def close(self) -> None:
        """Release the consumer and producer; safe to call twice. Nothing is committed here."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:  # noqa: BLE001 - closing must not mask the real error
                log.debug("closing the retrain consumer: %s", exc)
            self._consumer = None
        if self._peek is not None:
            try:
                self._peek.close()
            except Exception as exc:  # noqa: BLE001 - closing must not mask the real error
                log.debug("closing the retrain peek consumer: %s", exc)
            self._peek = None
        self.publisher.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Trainer is closed; create a new one")

    # --- the pieces, created on first use ---------------------------------------------------------
    def _ready(self) -> tuple[ModelStore, CycleRunner]:
        if not self._topics_ready:
            ensure_topics(self.settings)
            self._topics_ready = True
        if self._store is None:
            self._store = ModelStore(self.settings)
        if self._runner is None:
            self._runner = CycleRunner(
                self.settings, self._store, self.publisher, progress=self.progress,
                should_stop=self._stop.is_set,
            )  # fmt: skip
        return self._store, self._runner

    def _retrain_consumer(self) -> Any:
        if self._consumer is None:
            self._ready()
            self._consumer = make_consumer(
                self.settings, self.group_id, [self.settings.topic("retrain")], client_id="streamfit-trainer",
                max_poll_interval_ms=max_poll_interval_ms(self.settings), max_poll_records=500,
            )  # fmt: skip
        return self._consumer

    # --- public entry points --------------------------------------------------------------------
    def start(self) -> Trainer:
        """Make the topics, the model store and the cycle runner now rather than in the first cycle
        (``run`` and ``run_cycle`` do it on first use): a service pays it once, at start."""
        self._check_open()
        self._ready()
        return self

    def run_cycle(self, batch: RetrainBatch | None = None) -> CycleResult:
        """One cycle now, for ``batch`` (default: a manual one); commits nothing."""
        self._check_open()
        with self._lock:
            result = self._process(batch or RetrainBatch())
        if result is None:
            raise RuntimeError("this batch was already answered by a finished cycle")
        return result

    def run_once(self, only_if_requested: bool = False) -> CycleResult | None:
        """Join the group, take every pending retrain request, run one cycle for them (a manual
        one if none is pending, unless ``only_if_requested``) and commit. ``--once``."""
        self._check_open()
        consumer = self._retrain_consumer()
        with self._lock:
            records = self._wait_for_assignment(consumer)
            batch = coalesce(self._drain(consumer, records), self.settings.model_name, self.settings.max_message_bytes)
            if not batch.requests and only_if_requested:
                self._dead_letter(batch)
                self._commit(consumer, batch, "no request")
                log.info("no retrain request pending: no cycle")
                return None
            return self._handle(consumer, batch, force=True)

    def run(self, timeout: float | None = None, count: int | None = None) -> int:
        """Serve retrain requests until ``stop()``, ``timeout`` seconds, or ``count`` cycles;
        returns the number of batches handled (cycles run, or found already done)."""
        self._check_open()
        consumer = self._retrain_consumer()
        deadline = None if timeout is None else time.monotonic() + timeout
        handled = 0
        backoff = 0.0
        log.info("trainer for %s waiting for retrain requests on %s (group %s)",
                 self.settings.model_name, self.settings.topic("retrain"), self.group_id)  # fmt: skip
        while not self._stop.is_set():
            if count is not None and handled >= count:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            polled = consumer.poll(timeout_ms=int(1000 * min(1.0, left if left is not None else 1.0)))
            records = [r for batch in polled.values() for r in batch]
            if not records:
                continue
            with self._lock:
                batch = coalesce(self._drain(consumer, records), self.settings.model_name,
                                 self.settings.max_message_bytes)  # fmt: skip
                try:
                    self._handle(consumer, batch, force=False)
                    handled += 1 if batch.requests else 0  # bad records only, or another model's: no cycle
                    backoff = 0.0
                    self.last_error = None
                except CyclePreempted as exc:
                    self._rewind(consumer, batch)
                    log.info("%s: the drift request and this batch's requests run as one cycle next", exc)
                    continue
                except CycleAborted:
                    self._rewind(consumer, batch)
                    log.info("stopped during a cycle: its retrain offsets stay uncommitted and it runs again")
                    break
                except Exception as exc:
                    self._rewind(consumer, batch)
                    self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, 2 * backoff))
                    log.error("cycle failed, offsets not committed; retrying in %.0fs: %s", backoff, exc,
                              exc_info=not isinstance(exc, StreamfitError))  # fmt: skip
                    self._stop.wait(backoff if left is None else max(0.0, min(backoff, left)))
        return handled

    # --- steps ----------------------------------------------------------------------------------
    def _handle(self, consumer: Any, batch: RetrainBatch, force: bool) -> CycleResult | None:
        RETRAIN_REQUESTS.inc(len(batch.requests))
        self._dead_letter(batch)
        if not batch.requests and not force:
            self._commit(consumer, batch, "no request")
            return None
        if batch.requests:
            log.info("%d retrain request(s) coalesced into one cycle (%s)", len(batch.requests), batch.reasons)
        result = self._process(batch)
        self._commit(consumer, batch, result.run_id if result else "already done")
        return result

    def _process(self, batch: RetrainBatch) -> CycleResult | None:
        store, runner = self._ready()
        experiment_id = store.experiment_id()
        finish_interrupted_promotions(store, experiment_id, self.settings, self.publisher.publish_reload)
        close_interrupted_cycles(store, experiment_id)
        done = completed_run_for(store, experiment_id, batch)
        if done is not None:
            log.warning("retrain offsets %s were already answered by run %s (stopped before its commit): "
                        "committing without training again", dict(batch.next_offsets), done)  # fmt: skip
            CYCLES.labels("skipped").inc()
            return None
        runner.preempt = self._drift_watch(batch)
        try:
            result = runner.run(batch, experiment_id)
        finally:
            runner.preempt = lambda: False
        self.cycles += 1
        self.last_result = result
        return result

    def _drift_watch(self, batch: RetrainBatch) -> Callable[[], bool]:
        """For a cycle answering retrain offsets: a check, at most every ``PREEMPT_CHECK_EVERY``
        seconds, of whether a drift request has arrived behind the batch (each look reads only the
        requests that arrived since the last). The runner asks it in a count (or manual) cycle, and
        in a drift cycle that found no change of the world (a false alarm, or a drift of the inputs
        alone); never in one that trains on the rows after a change."""
        if not batch.next_offsets:
            return lambda: False
        last = 0.0  # the first look is at once: the request may be there already
        seen = dict(batch.next_offsets)  # per partition: the first offset not looked at yet
        found = False

        def waiting() -> bool:
            nonlocal last, found
            if found or time.monotonic() - last < PREEMPT_CHECK_EVERY:
                return found
            last = time.monotonic()
            try:
                found = self._drift_pending(batch.topic, seen)
                return found
            except Exception as exc:  # noqa: BLE001 - a failed peek only means no preemption
                log.debug("could not look for drift requests behind the cycle: %s", exc)
                return False

        return waiting

    def _drift_pending(self, topic: str, seen: dict[int, int]) -> bool:
        """Whether a drift request for this model is among the retrain requests from ``seen`` on
        (which moves past what was read)."""
        from kafka import TopicPartition

        if self._peek is None:
            self._peek = make_consumer(self.settings, None, client_id="streamfit-trainer-peek")
        peek = self._peek
        tps = [TopicPartition(topic, p) for p in seen]
        ends = peek.end_offsets(tps)
        behind = [tp for tp in tps if ends[tp] > seen[tp.partition]]
        if not behind:
            return False
        peek.assign(behind)
        for tp in behind:
            peek.seek(tp, seen[tp.partition])
        records: list[Any] = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(peek.position(tp) < ends[tp] for tp in behind):
            for polled in peek.poll(timeout_ms=200).values():
                records.extend(polled)
        for tp in behind:
            seen[tp.partition] = peek.position(tp)
        waiting = coalesce(records, self.settings.model_name, self.settings.max_message_bytes)
        return any(request.reason == "drift" for request in waiting.requests)

    def _dead_letter(self, batch: RetrainBatch) -> None:
        for bad in batch.bad:
            letter = dead_letter(bad.topic, bad.partition, bad.offset, bad.error, bad.value)
            self.publisher.dead_letter(bad.key, letter)
        if batch.bad:
            self.publisher.flush()

    def _wait_for_assignment(self, consumer: Any) -> list[Any]:
        """Poll until the group assigns the retrain partition; returns what those polls read."""
        records: list[Any] = []
        deadline = time.monotonic() + self.settings.broker_timeout + 10.0  # a restart waits out a dead member
        while not consumer.assignment():
            if time.monotonic() > deadline or self._stop.is_set():
                raise BrokerUnavailable(
                    f"group {self.group_id} assigned no partition of {self.settings.topic('retrain')} within "
                    f"{self.settings.broker_timeout + 10:.0f}s; is another trainer for "
                    f"{self.settings.model_name} running?"
                )
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records

    def _drain(self, consumer: Any, records: Iterable[Any]) -> list[Any]:
        """Everything on the assigned partitions up to their end offsets as of now."""
        out = list(records)
        assigned = list(consumer.assignment())
        if not assigned:
            return out
        ends = consumer.end_offsets(assigned)
        deadline = time.monotonic() + self.settings.broker_timeout
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            if time.monotonic() > deadline:
                log.warning("draining %s did not reach its end offsets in time; taking what was read",
                            self.settings.topic("retrain"))  # fmt: skip
                break
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend(batch)
        return out

    def _rewind(self, consumer: Any, batch: RetrainBatch) -> None:
        from kafka import TopicPartition

        for partition, offset in batch.first_offsets.items():
            try:
                consumer.seek(TopicPartition(batch.topic, partition), offset)
            except Exception as exc:  # noqa: BLE001 - no longer assigned: its next owner re-reads it
                log.debug("cannot rewind %s[%d]: %s", batch.topic, partition, exc)

    def _commit(self, consumer: Any, batch: RetrainBatch, note: str) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        if not batch.next_offsets:
            return
        offsets = {TopicPartition(batch.topic, p): OffsetAndMetadata(o, note[:200], -1)
                   for p, o in batch.next_offsets.items()}  # fmt: skip
        try:
            consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - e.g. the group rebalanced during a long cycle
            log.warning("could not commit retrain offsets %s (%s); the next owner finds the finished run "
                        "and commits without training again", dict(batch.next_offsets), exc)  # fmt: skip
            return
        log.debug("committed retrain offsets %s", dict(batch.next_offsets))
