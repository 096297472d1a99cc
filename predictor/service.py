"""The predictor service: one consumer group over ``requests`` and ``labels``, micro-batches in,
predictions, observations, retrain signals and dead letters out, offsets committed only after the
broker acknowledged every output of the batch (at-least-once; Kafka transactions for exactly-once).

Per batch: poll (bounded by ``batch_size`` and ``batch_timeout_ms``), read and validate every
record, build one feature matrix, one ``predict`` call, one prediction per request, the label
joins, then deliver and commit. The model is read once per batch from the hot swap, which loads
new models in a background thread; the first batch waits until a model is loaded (the group is
joined only then, so a replica without a model holds no partitions).

At-least-once on librdkafka, two batches overlap: while batch N's outputs are on their way (a
helper thread waits for the broker's acknowledgements), batch N+1 is polled, read and predicted,
the steps that change no state. Only then is N settled (acknowledged: its offsets committed;
refused: the label join and counters rolled back, and N and N+1 both rewound), and N+1's label
joins, signals and outputs follow. Exactly-once keeps one batch at a time (a transaction's answers
are visible only once it commits), and so does kafka-python, whose network thread is Python and
competes for the interpreter with the next batch's work (measured slower, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import __version__ as kafka_version
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import CommitFailedError, KafkaError, ProducerFencedError

from streamfit.common import confluent
from streamfit.common.bundle import ModelBundle
from streamfit.common.compiled import compile_trees, require_compiler
from streamfit.common.errors import BrokerUnavailable, ModelStoreError
from streamfit.common.health import HealthServer
from streamfit.common.kafka import (
    CO_PARTITIONED,
    await_partitions,
    ensure_topics,
    make_consumer,
    make_producer,
    producer_broken,
)
from streamfit.common.messages import FeatureDrift, Retrain, dead_letter
from streamfit.common.model_store import ModelStore
from streamfit.common.settings import Settings
from streamfit.predictor.batching import PolledBatch, collect
from streamfit.predictor.drift import Alarm, DriftMonitor
from streamfit.predictor.encoding import observation_json, prediction_json
from streamfit.predictor.hot_swap import HotSwap, LoadedModel
from streamfit.predictor.intake import Intake, Reader
from streamfit.predictor.interim import LIFETIME as INTERIM_LIFETIME
from streamfit.predictor.interim import InterimModel, learn
from streamfit.predictor.label_join import NO_LABEL, LabelJoin
from streamfit.predictor.metrics import PredictorMetrics
from streamfit.predictor.model_follower import ModelFollower
from streamfit.predictor.retrain_signal import RetrainCounter
from streamfit.predictor.served_sample import ServedSample
from streamfit.predictor.throttled_log import ThrottledLog

log = logging.getLogger(__name__)

POLL_WAIT_MS: Final = 100  # longest wait for a first record: how quickly stop() is noticed
WAITING_LOG_EVERY: Final = 5.0  # seconds between "no model yet" lines
WARM_UP_ROWS: Final = 8  # recent request rows a new model is warmed up on
PARALLEL_PREDICT_ROWS: Final = 5000  # smaller batches predict on one thread (no OpenMP spin)
ASSIGNMENT_EVERY: Final = 0.5  # seconds between reads of the assignment while batches come (2% of the loop)
LIVE_AFTER: Final = 180.0  # /healthz fails when the loop has not turned for this long
RETRY_PAUSE: Final = 1.0
# The consumer leaves its group and joins again after this many offset commits refused in a row,
# over at least this many seconds (longer than a rebalance takes, so as not to start another).
REJOIN_AFTER_REFUSALS: Final = 3
REJOIN_AFTER_SECONDS: Final = 15.0
PRODUCER_LINGER_MS: Final = 1000  # seconds before a batch the broker refused is retried

TOPICS: Final = ("requests", "labels", "predictions", "observations", "retrain", "models", "dead-letters")

Output = tuple[str, bytes | None, bytes, int | None]  # (topic, key, value, partition or None: by key)


@dataclasses.dataclass(slots=True)
class Scored:
    """A batch read and predicted, nothing in the service's state changed yet."""

    batch: PolledBatch
    model: LoadedModel
    intake: Intake
    matrix: np.ndarray | None = None  # None: no request in the batch
    raw: np.ndarray | None = None


@dataclasses.dataclass(slots=True)
class Sent:
    """A batch answered: its outputs on their way, its offsets not committed yet."""

    batch: PolledBatch
    intake: Intake
    observations: int
    states: tuple[Any, Any]  # the retrain counter's and drift monitor's, to roll back to
    answers: list[Any] = dataclasses.field(default_factory=list)  # what send answered, one per output
    acked: Future[None] | None = None  # the flush, in the helper thread


class Predictor:
    """The service, runnable in-process (tests, the demo) or from ``streamfit predictor``.

    ::

        predictor = Predictor(settings)
        thread = threading.Thread(target=predictor.run)
        thread.start()
        predictor.wait_ready(timeout=30)
        ...
        predictor.stop()  # the batch in hand is finished, delivered and committed
        thread.join()

    ``run`` owns every connection: it opens them, serves, and closes them when it returns; a
    predictor runs once. ``stop`` only sets a flag, so it is safe from a signal handler.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str | None = None,
        replica_id: str | None = None,
        metrics: PredictorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.group_id = group_id or settings.group_id("predictor")
        self.replica_id = replica_id or socket.gethostname()
        self._client_id = f"streamfit-predictor-{self.replica_id}"  # its consumer's and its producer's
        self.transactional = settings.processing_guarantee == "exactly-once"
        self.overlap = not self.transactional and settings.kafka_client == "confluent"  # see the module's doc
        self.metrics = metrics or PredictorMetrics()
        self.join = LabelJoin(settings.pending_max, settings.pending_max_age)
        self.metrics.watch(self.join)
        self.retrain = RetrainCounter(settings.retrain_every)
        self.drift = DriftMonitor(settings.drift_window, settings.drift_psi_threshold, settings.drift_metric_drop,
                                  settings.drift_cooldown)  # fmt: skip
        self.metrics.watch_drift(self.drift)
        self.served_sample = ServedSample()
        if settings.compiled_trees:
            require_compiler()
        compile = compile_trees if settings.compiled_trees else None
        self.swap = HotSwap(self._fetch, self.metrics, sample=lambda: self._recent, compile=compile)
        self.topics = {name: settings.topic(name) for name in TOPICS}
        self._store: ModelStore | None = None
        self._recent: Sequence[Mapping[str, Any]] = ()
        self._stopping = False
        self._state = "new"
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._assignment_read = -ASSIGNMENT_EVERY  # monotonic seconds
        self._heartbeat = time.monotonic()
        self._follower: ModelFollower | None = None
        self._same_partition = False  # answers go to their request's partition number (see _predict)
        self._counts: dict[str, int] = {}  # partitions of each topic, from ensure_topics
        self._dead_log = ThrottledLog(log, logging.WARNING, 10.0)
        self._interim: InterimModel | None = None  # the interim answer after a drift alarm (predictor.interim)
        self._interim_for: LoadedModel | None = None  # the model it stands in for
        self._interim_seen = 0  # the drift monitor's observations when its life was last extended
        self._learning: tuple[LoadedModel, Future[InterimModel | None]] | None = None  # a fit running, and for whom
        self._learner = ThreadPoolExecutor(1, thread_name_prefix="streamfit-interim")
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="streamfit-flush")  # waits for a batch's acks
        self._producer: KafkaProducer | None = None  # opened by run; replaced after a refusal it cannot survive
        self._consumer: KafkaConsumer | None = None  # opened by run
        self._refused = 0  # offset commits refused in a row (kafka-python: see _rejoin)
        self._refused_since = 0.0  # monotonic seconds, the first of them
        self._last_refusal = ""
        self.metrics.ready.set_function(lambda: 1.0 if self.ready else 0.0)

    # --- public surface ---------------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel | None:
        return self.swap.current

    @property
    def model_version(self) -> str | None:
        model = self.swap.current
        return model.version if model else None

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        return self._assigned

    @property
    def ready(self) -> bool:
        return self.swap.current is not None and bool(self._assigned)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready:
            if time.monotonic() > deadline or self._state == "closed":
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        """Finish the batch in hand, deliver, commit, close. Only sets a flag (signal-safe)."""
        self._stopping = True

    def run(self, timeout: float | None = None, count: int | None = None) -> int:
        """Serve until ``stop()``, ``timeout`` seconds, or ``count`` records read (whole batches);
        returns the number of records read (requests, labels and rejected messages)."""
        if self._state != "new":
            raise RuntimeError("a Predictor runs once; create a new one")
        self._state = "running"
        try:
            with contextlib.ExitStack() as stack:
                counts = self._counts = ensure_topics(self.settings)
                self._same_partition = len({counts[self.topics[name]] for name in CO_PARTITIONED}) == 1
                if self.settings.metrics_port:
                    health = HealthServer(self.settings.metrics_port, self.metrics.registry,
                                          ready=self.readiness, live=self._live_probe)  # fmt: skip
                    stack.enter_context(health)
                self._follower = ModelFollower(self.settings, self.swap, self.metrics).start()
                stack.callback(self._follower.stop)
                stack.callback(self.swap.close)
                stack.callback(self._learner.shutdown, wait=False, cancel_futures=True)
                self._producer = self._open_producer()
                stack.callback(lambda: self._producer and self._producer.close(timeout=5))
                stack.callback(self._flusher.shutdown, wait=True)  # a flush in flight ends before the close
                consumer = self._consumer = self._open_consumer()
                stack.callback(consumer.close, autocommit=False)
                stack.callback(self._dead_log.flush)
                log.info(
                    "predictor for model %s: group %s, %s, batches of up to %d records / %d ms, on %s",
                    self.settings.model_name, self.group_id, self.settings.processing_guarantee,
                    self.settings.batch_size, self.settings.batch_timeout_ms, self._client_name(),
                )  # fmt: skip
                return self._serve(consumer, timeout, count)
        finally:
            self._state = "closed"
            self._assigned = frozenset()
            log.info("predictor stopped")

    # --- the loop ---------------------------------------------------------------------------------
    def _serve(self, consumer: KafkaConsumer, timeout: float | None, count: int | None) -> int:
        settings, topics = self.settings, self.topics
        deadline = None if timeout is None else time.monotonic() + timeout
        read = 0
        subscribed = False
        last_waiting_line = -WAITING_LOG_EVERY
        reader: Reader | None = None
        sent: Sent | None = None  # the previous batch, until settled
        while not self._stopping:
            now = self._heartbeat = time.monotonic()
            if (deadline is not None and now >= deadline) or (count is not None and read >= count):
                break
            if self.swap.current is None:
                if now - last_waiting_line >= WAITING_LOG_EVERY:
                    last_waiting_line = now
                    log.info(
                        "no model to serve yet: waiting for model %s on %s (requests are not consumed until one "
                        "loads; `streamfit bootstrap` publishes a first one)", settings.model_name, topics["models"],
                    )  # fmt: skip
                time.sleep(0.05)
                continue
            if not subscribed:
                # The group's leader assigns from its own metadata: it must know both topics first.
                names = (topics["requests"], topics["labels"])
                await_partitions(consumer, settings, {name: self._counts.get(name, 1) for name in names})
                consumer.subscribe([topics["requests"], topics["labels"]])
                subscribed = True
            batch = collect(
                lambda ms, n: consumer.poll(timeout_ms=ms, max_records=n),
                settings.batch_size, POLL_WAIT_MS, settings.batch_timeout_ms,
            )  # fmt: skip
            # Read on an empty poll, on records from a partition not known to be held (a new
            # assignment: `ready` must not lag it), and every ASSIGNMENT_EVERY (a revocation).
            if (
                not batch.records
                or not batch.first.keys() <= self._assigned
                or now - self._assignment_read >= ASSIGNMENT_EVERY
            ):
                self._track_assignment(consumer)
            model = self.swap.current  # read once per batch, after the poll: a swap falls between batches
            assert model is not None  # models are only ever replaced, never removed
            scored = None
            if batch.records:
                if reader is None or reader.pipeline is not model.pipeline:
                    reader = Reader(model.pipeline, topics["requests"], topics["labels"],
                                    settings.missing_features == "reject", settings.max_message_bytes)  # fmt: skip
                scored = self._score(batch, model, reader)  # while the previous batch's acks are on their way
            if sent is not None:
                settled, sent = self._settle(sent, consumer, batch), None
                if not settled:
                    continue  # this batch was rewound with it
            if self.settings.interim_answers:
                self._interim_answer(model)
            refused_long = self._refused >= REJOIN_AFTER_REFUSALS and now - self._refused_since >= REJOIN_AFTER_SECONDS
            if refused_long and sent is None:
                self._rejoin(consumer)
                continue
            if scored is None:
                continue
            sent = self._answer(scored, consumer)
            read += len(batch.records)
            if sent is not None and not self.overlap:
                self._settle(sent, consumer)
                sent = None
        if sent is not None:
            self._settle(sent, consumer)
        return read

    def _score(self, batch: PolledBatch, model: LoadedModel, reader: Reader) -> Scored:
        """Read every record, one matrix, one predict call: nothing here changes the service's state."""
        scored = Scored(batch, model, reader.read(batch.records))
        if scored.intake.ids:
            started = time.perf_counter()
            scored.matrix = model.pipeline.transform(scored.intake.features)
            rows = len(scored.intake.ids)
            scored.raw = model.predict_matrix(scored.matrix, 1 if rows <= PARALLEL_PREDICT_ROWS else 0)
            self.metrics.predict_seconds.observe(time.perf_counter() - started)
        return scored

    def _answer(self, scored: Scored, consumer: KafkaConsumer) -> Sent | None:
        """The batch's label joins, signals and outputs, sent. At-least-once: answers the batch in
        flight, settled later (``_settle``); exactly-once: settled here, in one transaction."""
        batch, intake = scored.batch, scored.intake
        self.join.begin()
        states = self.retrain.snapshot(), self.drift.snapshot()
        outputs: list[Output] = []
        observations = self._predict(scored, outputs)
        observations += self._join_labels(intake, outputs)
        self._dead_letters(intake, outputs)
        if due := self.retrain.add(observations):
            self._signal(due, outputs)
        if alarm := self.drift.check():
            self._signal_drift(alarm, outputs)
            self.retrain.drifted()
        sent = Sent(batch, intake, observations, states)
        if self.transactional:
            self._settled(sent, self._transact(outputs, batch, consumer))
            return None
        producer = self._producer
        assert producer is not None
        send = producer.send
        try:
            sent.answers = [send(topic, key=k, value=v, partition=p) for topic, k, v, p in outputs]
        except KafkaError as exc:
            self._rewind(batch, consumer, exc)
            self._settled(sent, False)
            return None
        sent.acked = self._flusher.submit(producer.flush, self.settings.broker_timeout)
        return sent

    def _settle(self, sent: Sent, consumer: KafkaConsumer, ahead: PolledBatch | None = None) -> bool:
        """Wait for the acknowledgements of a batch sent, then commit its offsets. Returns False when
        the broker refused any output: the batch (and ``ahead``, the one polled since, not answered
        yet) is rewound and will be read again (never skipped). A commit refused after the output was
        acknowledged (a rebalance) only means the batch may be answered twice, by this replica or
        the next owner."""
        assert sent.acked is not None
        try:
            sent.acked.result()
            for answer in sent.answers:
                if answer.failed():
                    raise answer.exception
        except KafkaError as exc:
            self._rewind(sent.batch, consumer, exc, ahead)
            self._settled(sent, False)
            return False
        try:
            consumer.commit(sent.batch.offsets())
            self._refused = 0  # (librdkafka: the commit is only sent; a refusal comes to _commit_refused)
        except KafkaError as exc:
            self._commit_refused(str(exc))
            self._note_refusal(exc)
        self._settled(sent, True)
        return True

    def _settled(self, sent: Sent, delivered: bool) -> None:
        """Keep the batch's label joins and counts (delivered), or roll them back (rewound)."""
        if not delivered:
            self.join.rollback()
            self.retrain.restore(sent.states[0])
            self.drift.restore(sent.states[1])
            return
        batch, intake = sent.batch, sent.intake
        self.join.commit()
        self.join.expire(time.monotonic())
        m = self.metrics
        m.requests.inc(intake.requests_read)
        m.labels.inc(intake.labels_read)
        m.predictions.inc(len(intake.ids))
        m.observations.inc(sent.observations)
        m.batch_size.observe(len(batch.records))
        m.batch_seconds.observe(time.monotonic() - batch.started)

    def _predict(self, scored: Scored, outputs: list[Output]) -> int:
        """One prediction per request (the interim model's correction, when one serves); returns
        the observations made."""
        intake, model, matrix, raw = scored.intake, scored.model, scored.matrix, scored.raw
        ids = intake.ids
        if matrix is None or raw is None:
            return 0
        pipeline, bundle = model.pipeline, model.bundle
        if self._interim is not None and self._interim.active(model.version):
            raw = self._interim.predict(matrix, raw)
        predictions, scores = pipeline.decode(raw)
        self.drift.requests(model.version, bundle, matrix)
        self.served_sample.sample(ids[0], matrix)
        outcome, take_served = self.drift.outcomes.append, self.served_sample.waiting.pop
        self._recent = intake.features[:WARM_UP_ROWS]
        at, mono, version = time.time(), time.monotonic(), model.version
        topic, observations_topic = self.topics["predictions"], self.topics["observations"]
        served, append, features = self.join.served, outputs.append, intake.features
        partitions = intake.partitions if self._same_partition else [None] * len(ids)
        observations = 0
        for i, (request_id, label, prediction, score, partition) in enumerate(
            zip(ids, intake.carried, predictions, scores, partitions, strict=True)
        ):
            key = request_id.encode()
            append((topic, key, prediction_json(request_id, prediction, score, version, at), partition))
            if label is NO_LABEL:
                label = served(request_id, features[i], prediction, score, version, mono)
                if label is NO_LABEL:
                    continue
            observation = observation_json(
                request_id, features[i], label, prediction, score, version, at, take_served(request_id, None)
            )
            append((observations_topic, key, observation, partition))
            outcome((version, prediction, label, features[i]))
            observations += 1
        return observations

    def _join_labels(self, intake: Intake, outputs: list[Output]) -> int:
        if not intake.labels:
            return 0
        topic, at, mono, label_of = self.topics["observations"], time.time(), time.monotonic(), self.join.label
        joined = 0
        same_partition = self._same_partition
        outcome, take_served = self.drift.outcomes.append, self.served_sample.waiting.pop
        for request_id, label, partition in intake.labels:
            entry = label_of(request_id, label, mono)
            if entry is None:
                continue
            value = observation_json(
                request_id, entry.features, label, entry.prediction, entry.score, entry.model_version, at,
                take_served(request_id, None),
            )  # fmt: skip
            outputs.append((topic, request_id.encode(), value, partition if same_partition else None))
            outcome((entry.model_version, entry.prediction, label, entry.features))
            joined += 1
        return joined

    def _dead_letters(self, intake: Intake, outputs: list[Output]) -> None:
        topic = self.topics["dead-letters"]
        for rejection in intake.rejected:
            record = rejection.record
            letter = dead_letter(record.topic, record.partition, record.offset, rejection.reason, record.value)
            outputs.append((topic, record.key, letter.encode(), None))
            self.metrics.dead_letters.labels(rejection.kind).inc()
            self._dead_log(
                "dead-lettered %s[%d]@%d (%s): %s", record.topic, record.partition, record.offset, rejection.kind,
                rejection.reason[:300],
            )  # fmt: skip

    def _signal(self, due: list[int], outputs: list[Output]) -> None:
        key = self.settings.model_name.encode()
        for step in due:
            message = Retrain(reason="count", observations=step, requested_at=time.time())
            outputs.append((self.topics["retrain"], key, message.encode(), None))
        self.metrics.retrain_signals.inc(len(due))
        log.info(
            "retrain signal for model %s: %d more observations (%d in all from this replica)",
            self.settings.model_name, sum(due), self.retrain.total,
        )  # fmt: skip

    def _signal_drift(self, alarm: Alarm, outputs: list[Output]) -> None:
        top = [FeatureDrift(feature=name, psi=max(0.0, psi)) for name, psi in alarm.top_features]
        message = Retrain(reason="drift", observations=alarm.observations, requested_at=time.time(),
                          details=alarm.details(), top_features=top or None)  # fmt: skip
        outputs.append((self.topics["retrain"], self.settings.model_name.encode(), message.encode(), None))
        self.metrics.retrain_signals.inc()
        self.metrics.drift_signals.labels(",".join(alarm.causes)).inc()
        log.warning("drift under model %s version %s: %s; retrain requested", self.settings.model_name,
                    alarm.model_version, alarm.describe())  # fmt: skip

    def _interim_answer(self, model: LoadedModel) -> None:
        """Between two batches: take the interim model fitted since the last one (if it is for the
        serving version), and hand the drift monitor's newest rows since a change to the fitting
        thread when it is idle. The fit (a few LightGBM models on a few hundred rows, tens of
        milliseconds) never holds up a batch."""
        if self._interim is not None and self._interim_for is not model:
            self._interim = None  # another model serves (a rollback to the same version is another model too)
        if self._learning is not None:
            fitted_for, job = self._learning
            if not job.done():
                return
            self._learning = None
            try:
                fitted = job.result()
            except Exception:  # a fit that fails leaves the old answers served
                log.exception("fitting an interim model failed; version %s serves as it is", model.version)
                fitted = None
            if fitted is not None and fitted_for is model:
                self._adopt_interim(fitted, model)
        rows = self.drift.interim()
        serving = self._interim is not None and self._interim.active(model.version)
        if self._interim is not None and serving and self.drift.observed != self._interim_seen:
            # labels still come to check it against: it lives on while they do
            self._interim = dataclasses.replace(self._interim, until=time.monotonic() + INTERIM_LIFETIME)
            self._interim_seen = self.drift.observed
        if rows is None or rows.version != model.version:
            return
        if not serving and not rows.since_change:
            return  # the change has left the window: no new interim model from rows that may not hold it
        predict = functools.partial(model.predict_matrix, num_threads=1)
        self._learning = (model, self._learner.submit(learn, model.pipeline, predict, rows, serving=serving))

    def _adopt_interim(self, fitted: InterimModel, model: LoadedModel) -> None:
        first = self._interim is None
        self._interim, self._interim_for = fitted, model
        if first:
            self.metrics.interim_corrections.inc()
            log.warning("until a model trained after the change swaps in (or %.0fs after labels stop), version %s "
                        "answers through a model learnt from the labels since the change: %s", INTERIM_LIFETIME,
                        fitted.version, fitted.verdict.describe())  # fmt: skip
        else:
            log.info("interim model for version %s fitted again: %s", fitted.version, fitted.verdict.describe())

    def _transact(self, outputs: list[Output], batch: PolledBatch, consumer: KafkaConsumer) -> bool:
        """Every output and the batch's offsets in one transaction. Returns False when the broker
        refused it: the batch is rewound and will be read again (never skipped)."""
        producer = self._producer
        assert producer is not None
        send = producer.send
        try:
            producer.begin_transaction()
            for topic, key, value, partition in outputs:
                send(topic, key=key, value=value, partition=partition)
            producer.send_offsets_to_transaction(batch.offsets(), consumer.group_metadata())
            producer.commit_transaction()
            self._refused = 0
            return True
        except ProducerFencedError as exc:
            raise BrokerUnavailable(
                f"another predictor took this one's transactional id ({self.group_id}.{self.replica_id}): {exc}; "
                "give each replica its own --replica-id"
            ) from exc
        except KafkaError as exc:
            if isinstance(exc, CommitFailedError):  # the offsets, for the group membership they came with
                self._note_refusal(exc)
            self._rewind(batch, consumer, exc)
            return False

    def _note_refusal(self, exc: Exception) -> None:
        if not self._refused:
            self._refused_since = time.monotonic()
        self._refused += 1
        self._last_refusal = f"{type(exc).__name__}: {exc}"

    def _rejoin(self, consumer: KafkaConsumer) -> None:
        """Leave the group and join it again, after offset commits refused in a row (``REJOIN_AFTER_*``).

        kafka-python 3.0.12 can lose its group membership without knowing it: the consumer stays
        "rebalancing" with its heartbeats off and a finished join never taken up, still fetching
        from its old partitions, while the broker expires it from the group (read in a stuck
        process; its code reads as if a join started when its metadata briefly changed is
        abandoned once ``need_rejoin`` turns false again).
        Every commit is then refused (``RebalanceInProgressError``; in a transaction "consumer group
        metadata mismatch: UnknownMemberIdError") and nothing in the client ever rejoins: an
        exactly-once predictor served nothing for ten minutes (docs/benchmarks.md). A new
        subscription makes it join again; the offsets not committed are read again from the last
        committed ones, as after any rebalance."""
        self.metrics.group_rejoins.inc()
        log.warning(
            "%d offset commits in a row were refused over %.0fs (the last: %s): leaving group %s and joining it again",
            self._refused, time.monotonic() - self._refused_since, self._last_refusal, self.group_id,
        )  # fmt: skip
        self._refused = 0
        consumer.unsubscribe()
        consumer.subscribe([self.topics["requests"], self.topics["labels"]])

    def _commit_refused(self, why: str) -> None:
        self.metrics.commit_failures.inc()
        log.warning("offsets of a delivered batch were not committed (%s); it may be answered again", why)

    def _rewind(
        self, batch: PolledBatch, consumer: KafkaConsumer, exc: Exception, ahead: PolledBatch | None = None
    ) -> None:
        """Seek back to the batch's first records (and to those of ``ahead``, polled after it, on
        partitions the batch did not read)."""
        producer = self._producer
        assert producer is not None
        if self.transactional:
            with contextlib.suppress(KafkaError):
                producer.abort_transaction()
        assigned = consumer.assignment()
        first = batch.first if ahead is None else {**ahead.first, **batch.first}
        for tp, offset in first.items():
            if tp in assigned:
                consumer.seek(tp, offset)
        self.metrics.batch_retries.inc()
        renew = producer_broken(producer)
        log.error(
            "the broker did not take a batch's output (%s: %s); retrying it in %.0fs%s",
            type(exc).__name__, exc, RETRY_PAUSE, " with a new producer" if renew else "",
        )  # fmt: skip
        if renew:
            producer.close(timeout=1)
            self._producer = self._open_producer()
        time.sleep(RETRY_PAUSE)

    # --- wiring -----------------------------------------------------------------------------------
    def _client_name(self) -> str:
        if self.settings.kafka_client == "confluent":
            return confluent.describe()
        return f"kafka-python {kafka_version}"

    def _open_consumer(self) -> KafkaConsumer:
        if self.settings.kafka_client == "confluent":  # partition i of both topics together, as below
            # At-least-once commits do not wait for the broker (still after the acks): a refused one
            # means what a refused wait would, the batch may be answered again.
            refused = None if self.transactional else self._commit_refused
            return confluent.Consumer(self.settings, self.group_id, self._client_id, range_assignment=True,
                                      on_commit_failure=refused)  # fmt: skip
        return make_consumer(
            self.settings, self.group_id, client_id=self._client_id,
            partition_assignment_strategy=(RangePartitionAssignor,),  # partition i of both topics together
        )  # fmt: skip

    def _open_producer(self) -> KafkaProducer:
        transactional_id = f"{self.group_id}.{self.replica_id}" if self.transactional else None
        if self.settings.kafka_client == "confluent":
            producer = confluent.Producer(self.settings, self._client_id, transactional_id=transactional_id)
        else:
            # Every batch ends with a flush (or a transaction commit): a long linger keeps the sender
            # thread asleep while the batch's outputs are appended, then sends them in one request.
            extra = {"transactional_id": transactional_id} if transactional_id else {}
            producer = make_producer(self.settings, client_id=self._client_id, linger_ms=PRODUCER_LINGER_MS, **extra)
        if transactional_id is None:
            return producer
        try:
            producer.init_transactions()  # fences and aborts what a previous run of this replica left open
        except Exception:
            producer.close(timeout=5)
            raise
        return producer

    def _fetch(self, uri: str, sha256: str) -> ModelBundle:
        if self._store is None:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in a service log
            try:
                self._store = ModelStore(self.settings)
            except ModelStoreError:
                raise
            except Exception as exc:
                raise ModelStoreError(f"cannot open the MLflow store at {self.settings.tracking_uri}: {exc}") from exc
        return self._store.fetch_bundle(uri, sha256)

    def _track_assignment(self, consumer: KafkaConsumer) -> None:
        self._assignment_read = time.monotonic()
        assigned = frozenset(consumer.assignment())
        if assigned != self._assigned:
            self._assigned = assigned
            by_topic: dict[str, list[int]] = {}
            for tp in sorted(assigned):
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            log.info("partitions assigned to this replica: %s", by_topic or "none")

    def readiness(self) -> tuple[bool, str]:
        """Whether the predictor serves, and what it waits for if it does not (the /readyz answer)."""
        model = self.swap.current
        if model is None:
            return (
                False,
                f"no model loaded yet (waiting for model {self.settings.model_name} on {self.topics['models']})",
            )
        if not self._assigned:
            return False, f"model version {model.version} loaded; no partitions assigned yet in group {self.group_id}"
        return True, f"serving version {model.version} on {len(self._assigned)} partitions"

    def _live_probe(self) -> tuple[bool, str]:
        idle = time.monotonic() - self._heartbeat
        if idle > LIVE_AFTER:
            return False, f"the serving loop has not turned for {idle:.0f}s"
        if self._follower is not None and not self._follower.alive and not self._stopping:
            return False, "the thread that follows the models topic died (see the log)"
        return True, "ok"
