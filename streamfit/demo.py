"""``streamfit demo``: the whole loop on one machine, in one command.

It starts the embedded broker, keeps a local MLflow store in the working folder, bootstraps the
first model, starts a predictor and a trainer as child processes (their logs go to files in the
working folder), streams the Adult test split through the sample app with a drift part-way, and
ends with a report. Ctrl+C at any moment stops every child process: they are started here, and
stopped here whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from streamfit.common.errors import StreamfitError
from streamfit.common.settings import Group, Settings, load_settings

GROUPS: tuple[Group, ...] = ("model", "predictor", "trainer", "general")

log = logging.getLogger("streamfit.demo")

# What the demo changes from the service defaults so that the loop turns several times in about
# two minutes on two cores; a flag or STREAMFIT_* variable the user sets wins.
DEMO_DEFAULTS: dict[str, Any] = {
    "retrain_every": 500,
    "trials": 6,
    "time_budget": 30.0,
    "max_rounds": 300,
    "early_stopping": 20,
    "num_threads": 1,
    "half_life": 1000.0,
    "partitions": 2,
    # A swap restarts the drift windows, and the demo swaps every few hundred labels: smaller windows.
    "drift_window": 300,
    "drift_cooldown": 1000,
}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--workdir", type=Path, default=Path("demo-run"), help="folder for the store, logs and plot (wiped first)"
    )
    parser.add_argument(
        "--requests", type=int, default=3000,
        help="requests the sample app sends (up to twice as many while no retrained model has answered yet)",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--drift-at", type=int, default=1000, help="request from which the stream drifts (0: no drift)")
    parser.add_argument("--label-delay", type=float, default=1.0, help="seconds from a prediction to its label")
    parser.add_argument("--port", type=int, default=0, help="broker port (0: 9092 if free, else any free port)")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


def free_port(preferred: int = 0) -> int:
    from streamfit.broker import port_in_use

    if preferred and not port_in_use("127.0.0.1", preferred):
        return preferred
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as environment variables, so that child services see exactly these."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env["MLFLOW_TRACKING_URI" if name == "mlflow_tracking_uri" else f"STREAMFIT_{name.upper()}"] = str(value)
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    return env


def demo_settings(settings: Settings, args: argparse.Namespace, bootstrap: str, home: Path) -> Settings:
    given = {k.removeprefix("setting_") for k in vars(args) if k.startswith("setting_")}
    given |= {k.removeprefix("STREAMFIT_").lower() for k in os.environ if k.startswith("STREAMFIT_")}
    values = settings.model_dump(exclude_none=True)
    values.update({k: v for k, v in DEMO_DEFAULTS.items() if k not in given})
    values.update(bootstrap_servers=bootstrap, home=home, mlflow_tracking_uri=None)
    return load_settings(**values)


class Demo:
    def __init__(self, settings: Settings, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.workdir: Path = args.workdir.resolve()
        self.children: list[Child] = []
        self.broker: Any = None
        self.base = settings
        self.settings = settings

    # --- processes --------------------------------------------------------------------------
    def spawn(self, name: str, *argv: str, metrics_port: int) -> Child:
        env = {**os.environ, **settings_env(self.settings), "STREAMFIT_METRICS_PORT": str(metrics_port)}
        log_path = self.workdir / f"{name}.log"
        out = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "streamfit.cli", name, *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Ctrl+C reaches the demo alone (it stops the children in order); a child dies with the demo.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def stop_children(self) -> None:
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()
        if self.broker is not None:
            self.broker.stop()

    def wait_ready(self, child: Child, port: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        why = "no answer"
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise StreamfitError(
                    f"the {child.name} exited with code {child.process.returncode}; see {child.log_path}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except Exception as exc:  # noqa: BLE001 - not ready yet, whatever the reason
                why = str(exc)
            time.sleep(0.25)
        raise StreamfitError(f"the {child.name} was not ready after {timeout:.0f}s ({why}); see {child.log_path}")

    # --- the run --------------------------------------------------------------------------------
    def run(self) -> int:
        from streamfit.broker import EmbeddedBroker
        from streamfit.sample_app import SampleAppOptions, run_sample_app
        from streamfit.trainer.bootstrap import bootstrap

        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self._log_to_file(self.workdir / "demo.log")
        started = time.monotonic()
        console = self.console

        port = free_port(self.args.port or 9092)
        with console.status("starting the embedded broker (Tansu)…"):
            self.broker = EmbeddedBroker(port, log_file=self.workdir / "broker.log").start()
        self.settings = demo_settings(self.base, self.args, self.broker.bootstrap, self.workdir / ".streamfit")
        console.print(f"[green]✓[/] broker at {self.broker.bootstrap}; working folder {self.workdir}")

        with console.status("training the first model from the Adult training split…"):
            first = bootstrap(self.settings)
        console.print(
            f"[green]✓[/] version {first.version} is the champion "
            f"(holdout accuracy {first.metrics.get('accuracy', 0):.3f})"
        )

        predictor_port, trainer_port = free_port(), free_port()
        predictor = self.spawn("predictor", metrics_port=predictor_port)
        trainer = self.spawn("trainer", metrics_port=trainer_port)
        with console.status("starting the predictor and the trainer…"):
            self.wait_ready(predictor, predictor_port)
        console.print(
            f"[green]✓[/] predictor and trainer running (logs: {predictor.log_path.name}, {trainer.log_path.name}; "
            f"metrics on :{predictor_port} and :{trainer_port})"
        )
        console.print(
            f"streaming {self.args.requests} requests at {self.args.rate:g}/s, a retrain every "
            f"{self.settings.retrain_every} labels"
            + (f", drift from request {self.args.drift_at}" if self.args.drift_at else "")
        )
        plot = self.workdir / "demo.png"
        options = SampleAppOptions(
            count=self.args.requests, rate=self.args.rate, label_delay=self.args.label_delay,
            drift_at=self.args.drift_at or None, plot=plot, handle_sigint=False, timeout=60.0,
            until_swap=True,  # a slow machine still shows a swap: up to twice --requests
        )  # fmt: skip
        summary = run_sample_app(self.settings, options, console=console)
        if summary.interrupted:  # Ctrl+C while streaming: the sample app caught it and closed its clients
            raise KeyboardInterrupt
        self.report(summary, time.monotonic() - started)
        return 0 if summary.unanswered == 0 else 1

    def _log_to_file(self, path: Path) -> None:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]

    # --- the report ---------------------------------------------------------------------------------
    def report(self, summary: Any, elapsed: float) -> None:
        from streamfit.common.model_store import ModelStore

        console = self.console
        store = ModelStore(self.settings)
        champion = store.champion_version()
        table = Table(title="model versions")
        for column in ("version", "made by", "holdout loss", "champion's loss then", "decision"):
            table.add_column(column)
        promoted = rejected = 0
        for record in store.records():
            trainer = f"trainer ({record.reason} retrain)" if record.reason else "trainer"
            if record.candidate_loss is None:
                made, decision = "bootstrap", "first champion"
            elif record.rejected:
                made, decision = trainer, "[red]rejected[/]"
                rejected += 1
            else:
                made, decision = trainer, "[green]promoted[/]"
                promoted += 1
            loss = record.candidate_loss if record.candidate_loss is not None else record.metrics.get("loss")
            table.add_row(
                record.version + (" ★" if record.version == champion else ""), made, _fmt(loss),
                _fmt(record.champion_loss), decision,
            )  # fmt: skip
        console.print(table)
        self.report_drift()

        swaps = Table(title=f"{summary.metric} around each model swap (window {summary.window} answers)")
        for column in ("swap", "at request", "before", "after"):
            swaps.add_column(column)
        for swap in summary.swaps:
            swaps.add_row(
                f"{swap.from_version} → {swap.to_version}", str(swap.request_index),
                _fmt(swap.before), _fmt(swap.after),
            )  # fmt: skip
        if not summary.swaps:
            swaps.add_row("none", "-", "-", "-")
        console.print(swaps)
        db = self.settings.home.resolve() / "mlflow.db"
        console.print(
            f"requests {summary.sent}, answered {summary.answered}, unanswered {summary.unanswered}; "
            f"latency p50 {summary.latency_p50_ms:.1f} ms, p99 {summary.latency_p99_ms:.1f} ms; "
            f"{summary.metric} overall {summary.overall:.3f}"
        )
        console.print(f"versions promoted by the trainer: {promoted}, rejected: {rejected}; demo took {elapsed:.0f} s")
        console.print(f"plot: {summary.plot or 'not written'}")
        console.print(f"logs: {self.workdir}/{{predictor,trainer,broker,demo}}.log")
        console.print(
            f"MLflow runs: {db}\n  see them with: mlflow ui --backend-store-uri sqlite:///{db} "
            f"--default-artifact-root {self.settings.artifact_root.as_uri()}",
            soft_wrap=True,  # one line, to copy and paste
        )

    def report_drift(self) -> None:
        """The drift retrains the predictor asked for, and what it saw."""
        from streamfit.operations import drift_requests

        drifts = drift_requests(self.settings)
        if not drifts:
            self.console.print("drift retrain requests: none")
            return
        first = drifts[0]
        top = ", ".join(f"{f.feature} (PSI {f.psi:.2f})" for f in first.top_features or [])
        details = first.details or {}
        live = (
            f"; live {details['metric']} {details['live']:.3f} vs holdout {details['holdout']:.3f}"
            if "live" in details else ""
        )  # fmt: skip
        self.console.print(
            f"drift retrain requests: {len(drifts)}; the first, under version {details.get('model_version', '?')}, "
            f"for {', '.join(details.get('causes', [])) or 'drift'}: top features {top or '-'}{live}"
        )


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the demo dies, however it dies."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _fmt(value: Any) -> str:
    if value in (None, "", "none"):
        return "-"
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to the demo stops it like Ctrl+C: children are stopped on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
    else:
        yield


def run(settings: Settings, args: argparse.Namespace) -> int:
    console = Console()
    demo = Demo(settings, args, console)
    with _sigterm_as_interrupt():
        try:
            return demo.run()
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopping the predictor, the trainer and the broker…[/]")
            return 130
        finally:
            demo.stop_children()
