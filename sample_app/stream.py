"""The sample app's loop: send requests at a rate, read predictions, send labels later.

One thread does it all (send what is due, send the labels that are due, poll predictions until the
next thing is due), so the only clock is ``time.monotonic`` and the state needs no lock (only the
producer's error callback, which runs on the producer's thread, takes one).

- Predictions are read by a consumer of its own (no group), assigned every partition of
  ``predictions`` and positioned at the end offsets read *before* the first request goes out, so
  no answer to this run can be missed, and answers to other clients are skipped by request id.
- A label is sent ``label_delay`` seconds after its prediction arrives (not after the request was
  sent): the predictor has then certainly served the request it joins the label to. Which requests
  get a label is drawn per request index from ``seed`` (``label_selected``); rows whose target is
  empty never get one.
- Latency is wall time from handing the request to the producer to reading its prediction.
- Ctrl+C (or ``stop``) ends the run between two steps: the producer is flushed, labels not yet
  due are not sent, and the summary so far is returned. A second Ctrl+C interrupts at once.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from rich.console import Console

from streamfit.common.errors import BrokerUnavailable, ConfigError
from streamfit.common.kafka import ensure_topics, make_consumer, make_producer
from streamfit.common.messages import Decoder, Label, Prediction, Rejected, Request
from streamfit.common.settings import Settings
from streamfit.sample_app.drift import DriftPlan, apply_drift, plan_drift
from streamfit.sample_app.progress import ProgressMode, View, make_view
from streamfit.sample_app.source import Source, Value, load_source
from streamfit.sample_app.stats import Snapshot, StreamStats, Summary, score_answer

log = logging.getLogger("sample_app")

SEND_BURST = 500  # most requests sent in one step before predictions are read again
VIEW_EVERY = 0.25  # seconds between two refreshes of the live view
POLL_MAX = 0.1  # longest poll, so that a stop is noticed quickly
CLOSE_TIMEOUT = 5.0  # seconds to flush and close the clients at the end


@dataclass(frozen=True)
class SampleAppOptions:
    """How one run streams; the CLI flags map one to one (``--label-delay`` → ``label_delay``)."""

    file: Path | None = None  # default: settings.test_data_path, else settings.data_path
    rate: float = 100.0  # requests per second; 0: as fast as possible
    count: int = 2000  # requests to send; 0: forever, cycling through the file
    label_delay: float = 1.0  # seconds from a prediction to its label
    label_fraction: float = 1.0  # share of requests that get a label
    drift_at: int | None = None  # request index from which the drift applies
    drift_share: float = 1.0  # share of the drifting segment whose label changes
    drift_segment: str | None = None  # "COLUMN=VALUE" to choose the segment
    drift_feature: str | None = None  # the numeric column to shift
    seed: int = 0  # label sampling and partial drift
    timeout: float = 30.0  # seconds to wait for outstanding predictions at the end
    window: int = 200  # answers behind the rolling metric
    max_in_flight: int = 10_000  # unanswered requests allowed before sending pauses
    plot: Path | None = None
    progress: ProgressMode = "auto"
    handle_sigint: bool = True  # first Ctrl+C stops cleanly (main thread only)
    until_swap: bool = False  # past ``count`` (up to twice it): go on until a swap and ``window`` answers after it

    def check(self) -> None:
        problems = [
            (self.rate < 0 or not math.isfinite(self.rate), f"--rate must be 0 or more, got {self.rate}"),
            (self.count < 0, f"--count must be 0 (forever) or more, got {self.count}"),
            (self.label_delay < 0, f"--label-delay must be 0 or more, got {self.label_delay}"),
            (not 0 <= self.label_fraction <= 1, f"--label-fraction must be between 0 and 1, got {self.label_fraction}"),
            (self.drift_at is not None and self.drift_at < 0, f"--drift-at must be 0 or more, got {self.drift_at}"),
            (not 0 <= self.drift_share <= 1, f"--drift-share must be between 0 and 1, got {self.drift_share}"),
            (self.timeout <= 0, f"--timeout must be more than 0, got {self.timeout}"),
            (self.window < 1, f"--window must be 1 or more, got {self.window}"),
            (self.max_in_flight < 1, f"--max-in-flight must be 1 or more, got {self.max_in_flight}"),
        ]
        for bad, message in problems:
            if bad:
                raise ConfigError(message)
        if self.plot is not None:
            _check_writable(self.plot)


def label_selected(seed: int, index: int, fraction: float) -> bool:
    """Whether request ``index`` gets a label: a seeded draw per index, the same on every run."""
    if fraction >= 1:
        return True
    if fraction <= 0:
        return False
    return random.Random(f"label:{seed}:{index}").random() < fraction


def stream_file(settings: Settings, options: SampleAppOptions) -> Path:
    return options.file or settings.test_data_path or settings.data_path


def request_row(source: Source, drift: DriftPlan | None, index: int) -> tuple[dict[str, Value], Value]:
    """Features and truth of request ``index``: the file's rows in order, cycling, drift applied."""
    features, truth = source.row(index % len(source))
    if drift is not None:
        features, truth = apply_drift(drift, index, features, truth)
    return features, truth


@dataclass(frozen=True, slots=True)
class _Pending:
    index: int
    sent: float  # monotonic
    truth: Value
    labelled: bool


def run_sample_app(
    settings: Settings,
    options: SampleAppOptions,
    *,
    stop: threading.Event | None = None,
    console: Console | None = None,
) -> Summary:
    """Run the sample app until ``count`` requests are answered (or timed out), or until stopped.

    Bad options, a missing file or target are a ``ConfigError`` before anything touches Kafka.
    ``stop`` ends the run early from another thread; the summary then says ``interrupted``.
    """
    options.check()
    path = stream_file(settings, options)
    source = load_source(path, settings.target)
    drift = None
    if options.drift_at is not None:
        drift = plan_drift(
            source.frame,
            settings.target,
            source.task,
            options.drift_at,
            seed=options.seed,
            label_share=options.drift_share,
            segment=options.drift_segment,
            feature=options.drift_feature,
        )
        log.info("drift %s", drift.describe())
    stop = stop or threading.Event()
    with ExitStack() as stack:
        stack.enter_context(_stop_on_sigint(stop, options.handle_sigint))
        try:
            loop = _Loop(settings, options, source, drift, stop, stack, console)
            summary = loop.run()
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"Kafka failed during the run at {settings.bootstrap_servers} ({type(exc).__name__}: {exc})"
            ) from exc
    if options.plot is not None and summary.answered:
        from streamfit.sample_app.plot import save_plot  # matplotlib only when a plot is asked for

        try:
            save_plot(options.plot, loop.stats, summary)
            log.info("plot saved to %s", options.plot)
        except (ConfigError, OSError, ValueError) as exc:  # the run's results matter more than the plot
            log.error("no plot: %s", exc)
            summary = dataclasses.replace(summary, plot=None)
    return summary


class _Loop:
    def __init__(
        self,
        settings: Settings,
        options: SampleAppOptions,
        source: Source,
        drift: DriftPlan | None,
        stop: threading.Event,
        stack: ExitStack,
        console: Console | None,
    ) -> None:
        self.settings, self.options, self.source, self.drift, self.stop = settings, options, source, drift, stop
        self.requests_topic = settings.topic("requests")
        self.labels_topic = settings.topic("labels")
        self.run_id = uuid.uuid4().hex[:10]
        self.stats = StreamStats(source.task, options.window, started_at=time.time())
        self.pending: dict[str, _Pending] = {}
        self.labels: list[tuple[float, int, str, Value]] = []  # heap of (due, index, id, label)
        self.decode = Decoder(Prediction, settings.max_message_bytes)
        self.next_index = 0
        self.first_error: str | None = None
        self._errors_lock = threading.Lock()
        self._closed_view = True  # nothing to close until the view exists

        counts = ensure_topics(settings)
        self.producer: KafkaProducer = make_producer(settings, client_id="streamfit-sample-app")
        stack.callback(self.producer.close, timeout=CLOSE_TIMEOUT)
        self.consumer: KafkaConsumer = make_consumer(settings, group_id=None, client_id="streamfit-sample-app")
        stack.callback(self.consumer.close)
        predictions = settings.topic("predictions")
        partitions = [TopicPartition(predictions, p) for p in range(counts[predictions])]
        self.consumer.assign(partitions)
        for tp, offset in self.consumer.end_offsets(partitions).items():
            self.consumer.seek(tp, offset)  # before the first request: no answer can be missed
        self.start = time.monotonic()
        self.stats.started_at = time.time()
        self.view: View = make_view(options.progress, console)
        self._closed_view = False
        stack.callback(self._close_view)

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> Summary:
        options = self.options
        interrupted = False
        next_view = 0.0
        last_answer = self.start
        sending_ended: float | None = None
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if self._sending():
                    self._send_due(now)
                    if len(self.pending) >= options.max_in_flight and now - last_answer > options.timeout:
                        log.warning(
                            "no prediction for %.0f s with %d requests in flight; giving up",
                            options.timeout,
                            len(self.pending),
                        )
                        break
                else:
                    if sending_ended is None:
                        sending_ended = now
                    if not self.pending or now - sending_ended > options.timeout:
                        break
                self._send_due_labels(now)
                answered = self._read(self._poll_timeout(now))
                if answered:
                    last_answer = time.monotonic()
                if now >= next_view:
                    next_view = now + VIEW_EVERY
                    self.view.update(self._snapshot())
            else:
                interrupted = True
            if not interrupted:
                self._drain_labels()
                interrupted = self.stop.is_set()
        except KeyboardInterrupt:
            interrupted = True
        return self._finish(interrupted)

    def _limit(self) -> int:
        """Requests to send in all (0: forever). With ``until_swap``, a slow retrain extends the run
        until the new version has answered a full window, so that before and after can be compared."""
        count = self.options.count
        if not self.options.until_swap or count == 0:
            return count
        if not self.stats.points:
            return 2 * count
        return min(2 * count, max(count, self.stats.points[0].position + self.options.window))

    def _sending(self) -> bool:
        limit = self._limit()
        return limit == 0 or self.next_index < limit

    def _send_due(self, now: float) -> None:
        options = self.options
        # At a rate: as many as the schedule says by now (the first at once); else a burst.
        due = int((now - self.start) * options.rate) + 1 - self.next_index if options.rate > 0 else SEND_BURST
        due = min(due, SEND_BURST, options.max_in_flight - len(self.pending))
        limit = self._limit()
        if limit:
            due = min(due, limit - self.next_index)
        for _ in range(max(0, due)):
            self._send_request()

    def _send_request(self) -> None:
        index = self.next_index
        request_id = f"{self.run_id}-{index}"
        features, truth = request_row(self.source, self.drift, index)
        if self.drift is not None and index == self.drift.start:
            self.stats.drift_elapsed = time.monotonic() - self.start
        message = Request(request_id=request_id, features=features, sent_at=time.time())
        sent = time.monotonic()
        future = self.producer.send(self.requests_topic, key=request_id.encode(), value=message.encode())
        future.add_errback(self._send_failed)
        labelled = truth is not None and label_selected(self.options.seed, index, self.options.label_fraction)
        self.pending[request_id] = _Pending(index, sent, truth, labelled)
        self.next_index += 1
        self.stats.sent += 1

    def _send_due_labels(self, now: float) -> None:
        while self.labels and self.labels[0][0] <= now:
            _, _, request_id, label = heapq.heappop(self.labels)
            message = Label(request_id=request_id, label=label)
            future = self.producer.send(self.labels_topic, key=request_id.encode(), value=message.encode())
            future.add_errback(self._send_failed)
            self.stats.labels_sent += 1

    def _send_failed(self, exc: BaseException) -> None:
        with self._errors_lock:
            self.stats.send_errors += 1
            first = self.first_error is None
            if first:
                self.first_error = f"{type(exc).__name__}: {exc}"
        if first:
            log.error("a message could not be sent (further failures are only counted): %s", exc)

    def _poll_timeout(self, now: float) -> float:
        wait = POLL_MAX
        if self._sending() and len(self.pending) < self.options.max_in_flight:
            if self.options.rate <= 0:
                return 0.0
            wait = min(wait, self.start + self.next_index / self.options.rate - now)
        if self.labels:
            wait = min(wait, self.labels[0][0] - now)
        return max(0.0, wait)

    def _read(self, timeout: float) -> int:
        batches = self.consumer.poll(timeout_ms=int(timeout * 1000))
        received = time.monotonic()
        answered = 0
        for records in batches.values():
            for record in records:
                answered += self._answer(record.value, received)
        return answered

    def _answer(self, raw: bytes | None, received: float) -> int:
        message = self.decode(raw)
        if isinstance(message, Rejected):
            self.stats.invalid += 1
            return 0
        pending = self.pending.pop(message.request_id, None)
        if pending is None:
            if message.request_id.startswith(f"{self.run_id}-"):
                self.stats.duplicates += 1
            else:
                self.stats.ignored += 1
            return 0
        value = score_answer(self.source.task, message.prediction, pending.truth)
        self.stats.answer(pending.index, message.model_version, received - pending.sent, value, received - self.start)
        if pending.labelled:
            due = received + self.options.label_delay
            heapq.heappush(self.labels, (due, pending.index, message.request_id, pending.truth))
        return 1

    def _drain_labels(self) -> None:
        """After the last answer: send the labels still due, at their time."""
        while self.labels and not self.stop.is_set():
            now = time.monotonic()
            self._send_due_labels(now)
            if self.labels:
                self.stop.wait(min(POLL_MAX, max(0.0, self.labels[0][0] - now)))
                self.view.update(self._snapshot())

    # --- the end -----------------------------------------------------------------------------
    def _finish(self, interrupted: bool) -> Summary:
        try:
            self.producer.flush(timeout=CLOSE_TIMEOUT)
        except KafkaError as exc:
            log.error("could not flush the last messages: %s", exc)
        elapsed = time.monotonic() - self.start
        self._close_view()
        unanswered = len(self.pending)
        if unanswered and not interrupted:
            log.warning(
                "%d of %d requests had no prediction within --timeout %.0f s",
                unanswered,
                self.stats.sent,
                self.options.timeout,
            )
        return self.stats.summary(
            elapsed,
            unanswered,
            len(self.labels),
            drift_at=self.options.drift_at,
            drift=self.drift.describe() if self.drift else None,
            plot=self.options.plot if self.stats.answered else None,
            interrupted=interrupted,
        )

    def _snapshot(self) -> Snapshot:
        return self.stats.snapshot(
            time.monotonic() - self.start,
            self._limit(),
            len(self.pending),
            len(self.labels),
            self.options.drift_at,
        )

    def _close_view(self) -> None:
        if not self._closed_view:
            self._closed_view = True
            self.view.close(self._snapshot())


def _check_writable(path: Path) -> None:
    folder = path.resolve().parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"cannot write the plot to {str(path)!r}: {existing} is not a writable folder; set --plot")


@contextmanager
def _stop_on_sigint(stop: threading.Event, enabled: bool) -> Iterator[None]:
    """The first Ctrl+C sets ``stop``; the handler then steps aside so a second one interrupts."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    restore = previous if previous is not None else signal.SIG_DFL

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signal.SIGINT, restore)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, restore)
