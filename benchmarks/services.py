"""The systems under test as child processes: ``streamfit predictor``, or a baseline loop.

A child process, not a thread, so that the load generator in this process does not share an
interpreter lock with the system it measures, and so that the predictor's resident memory is its
own (read from ``/proc``: the benchmark runs on Linux).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

from streamfit.common.lifecycle import stop_process
from streamfit.common.settings import Settings

System = Literal["predictor", "echo", "seed"]
ROOT = Path(__file__).resolve().parent.parent


def environment(settings: Settings) -> dict[str, str]:
    """The settings as ``STREAMFIT_*`` variables, as a deployment would pass them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFIT_") and k != "MLFLOW_TRACKING_URI"}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[f"STREAMFIT_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return env


class Service:
    """One system under test, started on ``__enter__`` and stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, system: System, settings: Settings, log_dir: Path) -> None:
        self.system = system
        self.settings = settings
        self.log_path = log_dir / f"{system}-{settings.topic_prefix.strip('.')}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.system == "predictor":
            return [sys.executable, "-m", "streamfit.cli", "predictor", "--replica-id", "bench"]
        return [sys.executable, "-m", "benchmarks.baselines", self.system]

    def __enter__(self) -> Service:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(), env=environment(self.settings), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.system} exited with {self.process.returncode}; log tail:\n{tail}")

    def stop(self) -> None:
        stop_process(self.process, 20, self.system)

    @property
    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (from /proc): unlike wall time, barely moved
        by other work on a shared machine."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def rss_mb(self) -> float:
        """Resident set size of the process now, in MiB (VmRSS from /proc)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc: the memory figure needs Linux")


def wait_until(condition: object, timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    assert callable(condition)
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        time.sleep(poll)
