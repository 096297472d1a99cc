"""``streamfit trainer`` as a real process, for the tests that SIGKILL it (tests/trainer, tests/faults)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamfit.common.settings import Settings
from streamfit.trainer.service import group_id
from tests.trainer.support import committed, read_topic, wait_for


def trainer_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFIT_", "MLFLOW_"))}
    values = {
        "BOOTSTRAP_SERVERS": settings.bootstrap_servers, "TOPIC_PREFIX": settings.topic_prefix,
        "MODEL_NAME": settings.model_name, "HOME": str(settings.home), "DATA": str(settings.data),
        "TEST_DATA": str(settings.test_data), "TARGET": settings.target, "TRIALS": str(settings.trials),
        "TIME_BUDGET": str(settings.time_budget), "MAX_ROUNDS": str(settings.max_rounds),
        "NUM_THREADS": "1", "BROKER_TIMEOUT": "20", "LOG_LEVEL": "INFO",
    }  # fmt: skip
    env.update({f"STREAMFIT_{k}": v for k, v in values.items()})
    return env


class TrainerProcess:
    """``streamfit trainer`` in a subprocess, its log lines collected as they come."""

    def __init__(self, settings: Settings, *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamfit.cli", "trainer", *args], env=trainer_env(settings),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def log(self) -> str:
        return "".join(self.lines[-60:])


@pytest.fixture
def processes() -> Iterator[list[TrainerProcess]]:
    started: list[TrainerProcess] = []
    yield started
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait(10)


def sigkill_in_the_search(settings: Settings, processes: list[TrainerProcess]) -> None:
    """Start a trainer and SIGKILL it once its search is under way (trial 2): nothing is published
    and the retrain request's offset is not committed, so the cycle is still owed."""
    first = TrainerProcess(settings)
    processes.append(first)
    trial = f"trial 2/{settings.trials}"
    wait_for(lambda: first.saw(trial) or first.process.poll() is not None, 90, "the search to start")
    assert first.process.poll() is None, first.log()
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    assert read_topic(settings, "models") == [] and committed(settings, group_id(settings)) is None
