"""A small HTTP server for a long-running service: ``/metrics`` (Prometheus text format),
``/healthz`` (the process works) and ``/readyz`` (it can do its job now), on one port.

Probes answer 200 or 503 with a one-line body that says why, so an operator reading
``curl :PORT/readyz`` needs no log to know what the service waits for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamfit.common.errors import ConfigError

log = logging.getLogger(__name__)

# A probe: (ok, why). The text is the response body.
Probe = Callable[[], tuple[bool, str]]


def always_ok() -> tuple[bool, str]:
    return True, "ok"


class HealthServer:
    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        ready: Probe = always_ok,
        live: Probe = always_ok,
        host: str = "0.0.0.0",
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.live = live
        self._requested = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def port(self) -> int:
        """The port it listens on (the real one when started on port 0)."""
        if self._server is None:
            raise RuntimeError("the health server is not started")
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        if self._closed:
            raise RuntimeError("the health server was closed; create a new one")
        if self._server is not None:
            return self
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    try:
                        ok, why = (owner.live if path == "/healthz" else owner.ready)()
                    except Exception as exc:  # noqa: BLE001 - a probe that fails says so
                        ok, why = False, f"probe failed: {type(exc).__name__}: {exc}"
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        try:
            self._server = ThreadingHTTPServer(self._requested, Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on port {self._requested[1]}: {exc.strerror or exc}; "
                "set another --metrics-port / STREAMFIT_METRICS_PORT"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="streamfit-health", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, probes on /healthz and /readyz", self._requested[0], self.port)
        return self

    def close(self) -> None:
        """Stop serving; safe to call twice."""
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
