"""The live part: the real loop on a real broker, fed one labelled stream by a client in this process.

``streamfit bootstrap`` trains version 1 on the base rows; ``streamfit predictor`` and
``streamfit trainer`` run as child processes with ``STREAMFIT_*`` settings, logging to files in
the output folder; the client sends the other rows on ``requests`` at a fixed rate, reads
``predictions`` and sends each row's true label on ``labels`` a fixed delay after its prediction
arrived. Only the public topics are used. The children are always stopped at the end (SIGTERM,
then SIGKILL), also on Ctrl+C, and die with this process if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.recovery.streams import LabelledStream
from benchmarks.services import environment
from streamfit.common import tags as tag
from streamfit.common.kafka import ensure_topics, make_consumer, make_producer
from streamfit.common.lifecycle import stop_process
from streamfit.common.messages import Decoder, Label, Prediction, Rejected, Request
from streamfit.common.settings import Settings, load_settings
from streamfit.kafka_server import free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "recovery"
PROBLEM_MARKERS = (" ERROR ", " CRITICAL ", "Traceback")
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RunOptions:
    base_rows: int = 5000
    rate: float = 100.0
    label_delay: float = 0.0
    retrain_every: int = 2000
    trials: int = 8
    extra: Mapping[str, str] = field(default_factory=dict)  # more settings: name (lower case) → value
    answer_timeout: float = 120.0  # most seconds without a new answer before the rest count as unanswered
    start_timeout: float = 300.0  # bootstrap, and each service becoming ready

    def settings_env(self) -> dict[str, str]:
        """The settings this run gives the services, as they are passed (``STREAMFIT_*``)."""
        values = {"STREAMFIT_RETRAIN_EVERY": str(self.retrain_every), "STREAMFIT_TRIALS": str(self.trials)}
        values.update({f"STREAMFIT_{k.upper()}": v for k, v in self.extra.items()})
        return values


@dataclass
class LiveRun:
    """What the service did with the stream, per request (index = row - base rows)."""

    predictions: list[Any]
    versions: list[str | None]
    started_at: float  # wall clock of the first request
    seconds: float  # from the first request to the last answer
    settings: Settings
    cycles: list[dict[str, Any]]
    problems: dict[str, list[str]]  # service → log lines that look like trouble (first few)
    problem_counts: dict[str, int]
    duplicates: int = 0
    log_dir: Path = Path()
    frozen: list[Any] = field(default_factory=list)  # version 1's prediction for every request
    load: list[float] = field(default_factory=list)  # the 1-minute load average, once a second during the replay

    @property
    def unanswered(self) -> int:
        return sum(1 for v in self.versions if v is None)


# --- child processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One ``streamfit`` command as a child process with its own log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.args, self.env, self.log_path = name, args, env, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        log.info("starting %s (log %s)", self.name, self.log_path)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamfit.cli", *self.args],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def check(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.process.returncode}; last lines of {self.log_path}:\n{self.tail()}"
            )

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"{self.name} did not finish within {timeout:.0f}s; see {self.log_path}") from exc

    def stop(self) -> None:
        stop_process(self.process, 20, self.name)


def wait_ready(child: Child, port: int, timeout: float) -> None:
    """Poll the service's /readyz until it says 200, or fail with its log."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/readyz"
    why = "no answer"
    while time.monotonic() < deadline:
        child.check()
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    log.info("%s is ready", child.name)
                    return
        except OSError as exc:  # connection refused, or HTTP 503 (HTTPError is an OSError)
            why = str(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{child.name} not ready within {timeout:.0f}s ({why}); last lines:\n{child.tail()}")


@contextlib.contextmanager
def broker(kind: str, bootstrap_servers: str | None) -> Iterator[str]:
    """The given broker, or a private Apache Kafka from the Maven jars, or Tansu (``streamfit broker``)."""
    if bootstrap_servers:
        yield bootstrap_servers
    elif kind == "tansu":
        from streamfit.broker import EmbeddedBroker

        with EmbeddedBroker(free_port()) as tansu:
            log.info("Tansu at %s", tansu.bootstrap)
            yield tansu.bootstrap
    else:
        from benchmarks.environment import broker as kafka_broker

        with kafka_broker(None) as address:
            log.info("Apache Kafka at %s", address)
            yield address


# --- the run --------------------------------------------------------------------------------------


def clear_logs(log_dir: Path) -> None:
    """``log_dir`` made, without the services' logs of an earlier run of the same stream (the
    children append: a service restarted within one run keeps one log)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for earlier in log_dir.glob("*.log"):
        earlier.unlink()


def replay(stream: LabelledStream, options: RunOptions, bootstrap_servers: str, log_dir: Path) -> LiveRun:
    """Bootstrap on the base rows, start the services, replay the rest; returns the answers. The
    services' logs in ``log_dir`` start empty, so that the report's trouble is this run's alone."""
    clear_logs(log_dir)
    work = Path(tempfile.mkdtemp(prefix="streamfit-recovery-"))
    base = work / "base.csv"
    stream.frame.iloc[: options.base_rows].to_csv(base, index=False)
    settings = load_settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"recovery-{uuid.uuid4().hex[:8]}.",
        model_name=MODEL_NAME,
        home=work / "home",
        data=base,
        target=stream.target,
        retrain_every=options.retrain_every,
        trials=options.trials,
        broker_timeout=30.0,
        **options.extra,
    )
    ensure_topics(settings)
    env = environment(settings)
    env.update(options.settings_env())
    env.pop("STREAMFIT_METRICS_PORT", None)
    log.info("MLflow home %s, topics %s*", settings.home, settings.topic_prefix)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_sigterm_as_interrupt())
        bootstrap = Child(
            "bootstrap", ["bootstrap", "--data", str(base), "--target", stream.target], env, log_dir / "bootstrap.log"
        ).start()
        stack.callback(bootstrap.stop)
        code = bootstrap.wait(options.start_timeout)
        if code != 0:
            raise RuntimeError(f"streamfit bootstrap exited with {code}:\n{bootstrap.tail()}")
        services = []
        for name in ("predictor", "trainer"):
            port = free_port()
            args = [name, "--replica-id", "recovery"] if name == "predictor" else [name, "--no-progress"]
            child = Child(name, args, {**env, "STREAMFIT_METRICS_PORT": str(port)}, log_dir / f"{name}.log").start()
            stack.callback(child.stop)
            services.append((child, port))
        for child, port in services:
            wait_ready(child, port, options.start_timeout)
        client = Client(settings, stream, options, [child for child, _ in services])
        run = client.run()
        run.cycles = read_cycles(settings, run.started_at)
    run.problems, run.problem_counts = scan_logs(log_dir)
    run.log_dir = log_dir
    run.frozen = frozen_predictions(settings, stream, options.base_rows)
    shutil.rmtree(work, ignore_errors=True)
    return run


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run the way Ctrl+C does: through ``finally``, which stops the children."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Client:
    """Sends the requests at the rate, reads the answers, sends each label ``label_delay`` s after."""

    def __init__(self, settings: Settings, stream: LabelledStream, options: RunOptions, children: list[Child]):
        self.settings, self.options, self.children = settings, options, children
        self.features = stream.features(options.base_rows)
        self.truth = stream.labels(options.base_rows)
        n = len(self.truth)
        self.tag = uuid.uuid4().hex[:8]
        self.predictions: list[Any] = [None] * n
        self.versions: list[str | None] = [None] * n
        self.decode = Decoder(Prediction, settings.max_message_bytes)
        self.duplicates = 0
        self.serving = "-"
        self.load: list[float] = []

    def _index(self, request_id: str) -> int | None:
        tag, _, number = request_id.partition("-")
        return int(number) if tag == self.tag and number.isdigit() and int(number) < len(self.truth) else None

    def run(self) -> LiveRun:
        settings, options = self.settings, self.options
        n = len(self.truth)
        producer = make_producer(settings, client_id="recovery-client")
        consumer = make_consumer(settings, group_id=None, client_id="recovery-answers")
        topic = settings.topic("predictions")
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        for tp, offset in consumer.end_offsets(partitions).items():
            consumer.seek(tp, offset)  # before the first request: no answer can be missed
        requests_topic, labels_topic = settings.topic("requests"), settings.topic("labels")
        labels: list[tuple[float, int]] = []
        sent = answered = 0
        last_answer = started = time.monotonic()
        started_wall = time.time()
        next_check = 0.0
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            transient=True,
            console=Console(stderr=True),
            redirect_stdout=False,
        )
        try:
            with progress:
                task = progress.add_task("answered", total=n, info="")
                while answered < n:
                    now = time.monotonic()
                    due = min(n, int((now - started) * options.rate) + 1)
                    for i in range(sent, due):
                        message = Request(request_id=f"{self.tag}-{i}", features=self.features[i], sent_at=time.time())
                        producer.send(requests_topic, key=message.request_id.encode(), value=message.encode())
                    sent = max(sent, due)
                    while labels and labels[0][0] <= now:
                        _, i = heapq.heappop(labels)
                        label = Label(request_id=f"{self.tag}-{i}", label=self.truth[i])
                        producer.send(labels_topic, key=label.request_id.encode(), value=label.encode())
                    wait = 0.05 if sent >= n else max(0.0, min(0.05, started + sent / options.rate - now))
                    got = 0
                    for records in consumer.poll(timeout_ms=int(wait * 1000), max_records=5000).values():
                        received = time.monotonic()
                        for record in records:
                            got += self._answer(record.value, received, labels)
                    if got:
                        answered += got
                        last_answer = time.monotonic()
                        progress.update(task, completed=answered, info=f"sent {sent:,}, serving v{self.serving}")
                    if now >= next_check:
                        next_check = now + 1.0
                        self.load.append(os.getloadavg()[0])
                        for child in self.children:
                            child.check()
                    if time.monotonic() - last_answer > options.answer_timeout:
                        log.error(
                            "no answer for %.0f s: %d of %d requests stay unanswered",
                            options.answer_timeout,
                            n - answered,
                            n,
                        )
                        break
            seconds = last_answer - started
            self._drain_labels(producer, labels)
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=10)
            consumer.close()
        log.info("%d requests answered of %d in %.0f s (%.0f/s)", answered, n, seconds, answered / max(seconds, 1e-9))
        run = LiveRun(self.predictions, self.versions, started_wall, seconds, settings, [], {}, {}, self.duplicates)
        run.load = self.load
        return run

    def _answer(self, raw: bytes | None, received: float, labels: list[tuple[float, int]]) -> int:
        message = self.decode(raw)
        if isinstance(message, Rejected):
            log.warning("unreadable prediction: %s", message.reason)
            return 0
        i = self._index(message.request_id)
        if i is None:
            return 0
        if self.versions[i] is not None:
            self.duplicates += 1
            return 0
        self.predictions[i] = message.prediction
        self.versions[i] = message.model_version
        self.serving = message.model_version
        heapq.heappush(labels, (received + self.options.label_delay, i))
        return 1

    def _drain_labels(self, producer: Any, labels: list[tuple[float, int]]) -> None:
        """The labels still due after the last answer, at their time: the service sees every one."""
        topic = self.settings.topic("labels")
        while labels:
            delay = labels[0][0] - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.5))
                continue
            _, i = heapq.heappop(labels)
            label = Label(request_id=f"{self.tag}-{i}", label=self.truth[i])
            producer.send(topic, key=label.request_id.encode(), value=label.encode())


# --- what the services did ------------------------------------------------------------------------


def read_cycles(settings: Settings, started_at: float) -> list[dict[str, Any]]:
    """The trainer's cycles from MLflow (runs tagged as cycles): reason, outcome, version, timing."""
    from streamfit.common.model_store import ModelStore

    try:
        store = ModelStore(settings)
        runs = store.client.search_runs([store.experiment_id()], max_results=1000)
    except Exception as exc:  # noqa: BLE001 - the report says so instead of failing the run
        log.warning("could not read the trainer's cycles from MLflow: %s", exc)
        return []
    cycles = []
    for run in runs:
        tags = run.data.tags
        if tags.get(tag.KIND) != "cycle":
            continue
        start = run.info.start_time / 1000
        end = (run.info.end_time or 0) / 1000 or None
        cycles.append(
            {
                "reason": tags.get(tag.REASON, "?"),
                "state": tags.get(tag.STATE, "?"),
                "version": tags.get(tag.VERSION),
                "decision": tags.get(tag.DECISION, ""),
                "started_s": round(start - started_at, 1),
                "seconds": round(end - start, 1) if end else None,
                "rows_observations": tags.get(tag.ROWS_OBSERVATIONS),
            }
        )
    return sorted(cycles, key=lambda c: c["started_s"])


def frozen_predictions(settings: Settings, stream: LabelledStream, base_rows: int, chunk: int = 5000) -> list[Any]:
    """Version 1 (the bootstrap model, never retrained) on every request, loaded from the MLflow store
    with the project's own code, predicted in batches."""
    from streamfit.common.model_store import ModelStore

    store = ModelStore(settings)
    first = store.reload_message("1")
    bundle = store.fetch_bundle(first.uri, first.sha256)
    rows = stream.features(base_rows)
    out: list[Any] = []
    for start in range(0, len(rows), chunk):
        predictions, _ = bundle.predict(rows[start : start + chunk])
        out.extend(predictions)
    return out


def scan_logs(log_dir: Path, keep: int = 5) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Lines of each service's log that look like trouble: errors and tracebacks (first few kept)."""
    found: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for path in sorted(log_dir.glob("*.log")):
        lines = [
            line for line in path.read_text(errors="replace").splitlines() if any(m in line for m in PROBLEM_MARKERS)
        ]
        counts[path.stem] = len(lines)
        found[path.stem] = list(dict.fromkeys(line[:300] for line in lines))[:keep]
    return found, counts


def environment_names(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("STREAMFIT_")}


def os_name() -> str:
    return f"{os.uname().sysname} {os.uname().release}"
