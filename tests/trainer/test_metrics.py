"""The trainer's Prometheus endpoint and probes."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from streamfit.common.settings import load_settings
from streamfit.kafka_server import free_port
from streamfit.trainer.metrics import CYCLES, serve


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_metrics_and_readiness_are_served_when_a_port_is_set(tmp_path: Path) -> None:
    assert serve(load_settings(home=tmp_path, metrics_port=0)) is None
    port = free_port()
    state = {"error": None}
    server = serve(load_settings(home=tmp_path, metrics_port=port),
                   ready=lambda: (state["error"] is None, state["error"] or "ok"))  # fmt: skip
    assert server is not None
    try:
        CYCLES.labels("promoted").inc()
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        expected = [
            'streamfit_trainer_cycles_total{outcome="promoted"}', 'streamfit_trainer_cycles_total{outcome="rejected"}',
            "streamfit_trainer_trials_total", "streamfit_trainer_cycle_seconds_bucket",
        ]  # fmt: skip
        assert all(name in body for name in expected)
        assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ok\n")
        state["error"] = "last cycle failed"
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 503
    finally:
        server.close()
