"""`streamfit demo` as a user runs it: the whole loop on the embedded broker, and Ctrl+C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamfit.kafka_server import free_port
from tests.support.processes import ignore_sigint

pytestmark = [pytest.mark.slow, pytest.mark.kafka]  # the demo's embedded broker


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier}
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def demo(workdir: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFIT_", "MLFLOW_"))}
    # SIGINT ignored at the start, as a shell's `&` or a CI runner hands it down: Ctrl+C must work anyway.
    return subprocess.Popen(
        [sys.executable, "-m", "streamfit.cli", "demo", "--workdir", str(workdir), "--port", str(free_port()), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, "COLUMNS": "120"},
        start_new_session=True, preexec_fn=ignore_sigint,
    )  # fmt: skip


def test_demo_promotes_a_retrained_model_and_reports_it(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    process = demo(workdir, "--requests", "4000", "--rate", "50", "--drift-at", "500")
    out, _ = process.communicate(timeout=420)
    assert process.returncode == 0, out[-4000:]
    promoted = [line for line in out.splitlines() if line.startswith("versions promoted by the trainer:")]
    assert promoted, out[-3000:]
    assert int(promoted[0].split(":")[1].split(",")[0]) >= 1, out[-3000:]
    assert "→" in out.split("around each model swap")[1], "the answering version never changed"
    assert "unanswered 0" in out
    drift = [line for line in out.splitlines() if line.startswith("drift retrain requests:")]
    assert drift and "none" not in drift[0], out[-3000:]  # the demo's drift made the predictor ask for a retrain
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    plot = workdir / "demo.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("predictor", "trainer", "broker", "demo"):
        assert (workdir / f"{name}.log").exists()


def test_ctrl_c_stops_every_child_process(tmp_path: Path) -> None:
    """Ctrl+C while the requests stream (where a user presses it): exit 130, no child left."""
    workdir = tmp_path / "run"
    process = demo(workdir, "--requests", "100000", "--rate", "50")
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        children: set[int] = set()
        while time.monotonic() < deadline:
            children |= descendants(process.pid)
            if any(line.startswith("streaming") for line in lines) and len(children) >= 3:
                break
            assert process.poll() is None, "".join(lines)[-3000:]
            time.sleep(0.5)
        children |= descendants(process.pid)
        assert any(line.startswith("streaming") for line in lines), "".join(lines)[-3000:]
        assert len(children) >= 3, f"expected broker, predictor and trainer below the demo, found {children}"
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl+C in a terminal does
        process.wait(timeout=60)
        reader.join(10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    out = "".join(lines)
    assert process.returncode == 130, out[-3000:]
    assert "interrupted: stopping" in out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.2)
    assert [pid for pid in children if alive(pid)] == []
