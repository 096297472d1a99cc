"""A single-node KRaft Apache Kafka started from the official jars, for tests and benchmarks.

The jars come from Maven Central through ``streamfit/kafka/pom.xml`` and are cached outside the repo
(``$STREAMFIT_CACHE`` or ``~/.cache/streamfit``), so only the first run downloads anything.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamfit.common.lifecycle import stop_process

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"


def kafka_version() -> str:
    """The pinned Kafka version, read from the pom so that there is one place to change it."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    assert node is not None and node.text, f"kafka.version missing in {POM}"
    return node.text


def cache_dir() -> Path:
    return Path(os.environ.get("STREAMFIT_CACHE", Path.home() / ".cache" / "streamfit"))


def resolve_jars() -> Path:
    """Resolve the broker's classpath with Maven once; later calls reuse the cached folder."""
    target = cache_dir() / f"kafka-{kafka_version()}"
    marker = target / ".complete"
    if marker.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    marker.touch()
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


LOG4J2 = """<Configuration status="WARN">
  <Appenders><Console name="STDOUT" target="SYSTEM_OUT">
    <PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="STDOUT"/></Root></Loggers>
</Configuration>
"""


@dataclass
class KafkaServer:
    """One broker+controller process. ``start()``/``stop()`` may be repeated (for fault tests)."""

    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="streamfit-kafka-")))
    extra_config: dict[str, str] = field(default_factory=dict)
    listeners: str | None = None
    advertised_listeners: str | None = None
    protocol_map: str | None = None
    jvm_opts: tuple[str, ...] = ()
    format_args: tuple[str, ...] = ()  # e.g. ("--add-scram", "SCRAM-SHA-512=[name=u,password=p]")
    client_config: dict[str, Any] | None = None  # kafka-python settings that reach secured listeners
    cluster_id: str = field(default_factory=lambda: base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    process: subprocess.Popen[bytes] | None = None
    _formatted: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": self.listeners
            or f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": self.advertised_listeners or f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": self.protocol_map or "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.flush.interval.messages": "9223372036854775807",
        }
        config.update(self.extra_config)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        (self.workdir / "log4j2.xml").write_text(LOG4J2)
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        jars = resolve_jars()
        return [
            shutil.which("java") or "java",
            "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.xml'}",
            *self.jvm_opts,
            "-cp", f"{jars}/*", main, *args,
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> KafkaServer:
        config = self._write_config()
        if not self._formatted:
            # A base64 id starts with '-' once in 64; as a separate argument the tool would read it as
            # an option and refuse to format (seen in CI), so the id is joined to its option.
            done = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}", "-c", str(config),
                           *self.format_args),
                capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"kafka-storage format failed ({done.returncode}): {done.stdout}{done.stderr}")
            self._formatted = True
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=log, stderr=subprocess.STDOUT)
        if not wait_for_port("127.0.0.1", self.port, timeout) or not self._metadata_ready(timeout):
            self.stop()
            tail = (self.workdir / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"Kafka did not start within {timeout:.0f}s; log tail:\n{tail}")
        return self

    def _metadata_ready(self, timeout: float) -> bool:
        """The port opens before the broker has joined the quorum; wait for a real answer."""
        if self.listeners is not None and self.client_config is None:  # callers check readiness themselves
            return True
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap, request_timeout_ms=5000, **(self.client_config or {})
                )
                try:
                    admin.list_topics()
                    return True
                finally:
                    admin.close()
            except Exception:  # noqa: BLE001 - not up yet, whatever the reason
                time.sleep(0.3)
        return False

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
            self.process.wait()
        stop_process(self.process, 30)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def running_kafka(**kwargs: object) -> Iterator[KafkaServer]:
    server = KafkaServer(**kwargs)  # type: ignore[arg-type]
    try:
        yield server.start()
    finally:
        server.cleanup()


if __name__ == "__main__":  # `python -m streamfit.kafka_server`: a broker for local work
    import signal

    srv = KafkaServer(port=int(os.environ.get("PORT", "0")) or free_port()).start()
    print(srv.bootstrap, flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    srv.cleanup()
