"""common.health: /metrics, /healthz and /readyz on one port (tested here, its first user)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from streamfit.common.errors import ConfigError
from streamfit.common.health import HealthServer


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_metrics_and_probes() -> None:
    registry = CollectorRegistry()
    Counter("things", "Things done.", registry=registry).inc(3)
    state = {"ready": False}

    def ready() -> tuple[bool, str]:
        return state["ready"], "ready" if state["ready"] else "no model loaded yet"

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    with HealthServer(0, registry, ready=ready, live=broken, host="127.0.0.1") as server:
        status, content_type, body = get(server.port, "/metrics")
        assert status == 200 and "things_total 3.0" in body and content_type.startswith("text/plain")
        assert get(server.port, "/readyz")[::2] == (503, "no model loaded yet\n")
        state["ready"] = True
        assert get(server.port, "/readyz?verbose=1")[::2] == (200, "ready\n")
        assert get(server.port, "/healthz")[::2] == (503, "probe failed: RuntimeError: boom\n")
        assert get(server.port, "/nope")[0] == 404
    server.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        server.start()


def test_a_port_in_use_is_a_config_error_that_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="STREAMFIT_METRICS_PORT"):
            HealthServer(port, CollectorRegistry(), host="127.0.0.1").start()
