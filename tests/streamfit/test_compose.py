"""docker-compose.yml cannot run here (no Docker engine), so this test runs what it would run: each
service's command with its environment, service names mapped to local addresses, against the test
broker and a real MLflow server started with the compose file's own command."""

from __future__ import annotations

import copy
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfit.cli import build_parser
from streamfit.common.kafka import make_consumer
from streamfit.common.messages import Prediction, decode
from streamfit.common.settings import Settings
from streamfit.kafka_server import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
STREAMFIT_SERVICES = ("bootstrap", "predictor", "trainer", "sample-app")


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def service_problems(name: str, service: dict[str, Any]) -> list[str]:
    """What would make a streamfit service fail at start: a command the CLI rejects, an
    environment variable that is no setting, or a value the settings refuse."""
    problems: list[str] = []
    command = service.get("command", [])
    if isinstance(command, str):
        command = shlex.split(command)
    try:
        build_parser().parse_args(command)
    except SystemExit:
        problems.append(f"{name}: `streamfit {' '.join(command)}` is not a valid command")
    env = service.get("environment", {})
    fields = set(Settings.model_fields)
    for key in env:
        if key == "MLFLOW_TRACKING_URI":
            continue
        if not key.startswith("STREAMFIT_") or key.removeprefix("STREAMFIT_").lower() not in fields:
            problems.append(f"{name}: environment variable {key} is not a streamfit setting")
    result = subprocess.run(
        [sys.executable, "-c", "from streamfit.common.settings import load_settings; load_settings()"],
        env={**_clean_env(), **{k: str(v) for k, v in env.items()}}, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        problems.append(f"{name}: settings refuse the environment: {result.stderr.strip().splitlines()[-1]}")
    return problems


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFIT_", "MLFLOW_"))}


def test_compose_has_the_services_and_start_order_the_design_names() -> None:
    services = load_compose()["services"]
    assert set(services) >= {"kafka", "mlflow", "bootstrap", "predictor", "trainer", "sample-app"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["predictor"]["deploy"]["replicas"] == 2
    assert "--serve-artifacts" in services["mlflow"]["command"]
    assert services["predictor"]["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
    assert services["bootstrap"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("kafka", "mlflow", "predictor"):
        assert "healthcheck" in services[name], name
    dockerfile = (ROOT / "Dockerfile").read_text()
    user_lines = [line for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1] != "USER root", "the image must run as a non-root user"


def test_every_streamfit_service_command_and_environment_is_valid() -> None:
    services = load_compose()["services"]
    problems = [p for name in STREAMFIT_SERVICES for p in service_problems(name, services[name])]
    assert problems == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["predictor"].update(command=["predictor", "--batch-sise", "5"]), "not a valid command"),
        (lambda s: s["trainer"].update(command=["trainr"]), "not a valid command"),
        (lambda s: s["predictor"]["environment"].update(STREAMFIT_BOOTSTRAP_SERVER="kafka:9092"), "not a streamfit"),
        (lambda s: s["trainer"]["environment"].update(STREAMFIT_TRIALS="many"), "settings refuse"),
    ],
)
def test_a_broken_service_is_detected(mutate: Any, expected: str) -> None:
    services = copy.deepcopy(load_compose()["services"])
    mutate(services)
    problems = [p for name in STREAMFIT_SERVICES for p in service_problems(name, services[name])]
    assert any(expected in p for p in problems), problems


# --- running the services ----------------------------------------------------------------------


class Local:
    """Maps compose service names and volumes to this machine and starts the processes."""

    def __init__(self, broker: str, workdir: Path) -> None:
        self.workdir = workdir
        self.ports: dict[int, int] = {}
        self.hosts = {"kafka:9092": broker, "mlflow:5000": f"127.0.0.1:{self.port(5000)}"}
        self.prefix = f"c{uuid.uuid4().hex[:8]}."
        self.processes: list[subprocess.Popen[bytes]] = []

    def port(self, container_port: int) -> int:
        return self.ports.setdefault(container_port, free_port())

    def value(self, text: str) -> str:
        for host, local in self.hosts.items():
            text = text.replace(host, local)
        if text.startswith("/mlflow") or "////mlflow" in text:
            text = text.replace("/mlflow", str(self.workdir / "mlflow"))
        return text

    def env(self, service: dict[str, Any], home: str) -> dict[str, str]:
        env = {k: self.value(str(v)) for k, v in service.get("environment", {}).items()}
        if "STREAMFIT_METRICS_PORT" in env:
            env["STREAMFIT_METRICS_PORT"] = str(self.port(int(env["STREAMFIT_METRICS_PORT"])))
        # test isolation on a shared broker, and a working folder per service (as a container has)
        return {**_clean_env(), **env, "STREAMFIT_TOPIC_PREFIX": self.prefix, "STREAMFIT_HOME": home}

    def command(self, service: dict[str, Any]) -> list[str]:
        command = service["command"]
        args = [self.value(str(a)) for a in (shlex.split(command) if isinstance(command, str) else command)]
        for i, arg in enumerate(args[:-1]):
            if arg == "--port":  # a server's own port, as published by the container
                args[i + 1] = str(self.port(int(args[i + 1])))
        if service.get("entrypoint") == []:
            return [str(Path(sys.executable).parent / args[0]), *args[1:]]
        return [sys.executable, "-m", "streamfit.cli", *args]

    def start(self, name: str, service: dict[str, Any]) -> subprocess.Popen[bytes]:
        home = self.workdir / name
        home.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            self.command(service), env=self.env(service, str(home)), cwd=home,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.processes.append(process)
        return process

    def healthcheck(self, service: dict[str, Any]) -> bool:
        test = service["healthcheck"]["test"]
        argv = [self.value(str(a)) for a in test[1:]]
        for container, local in self.ports.items():
            argv = [a.replace(f"localhost:{container}", f"localhost:{local}") for a in argv]
        if argv[0] == "python":
            argv[0] = sys.executable
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.mark.kafka
@pytest.mark.slow
def test_compose_services_run_against_the_test_broker(broker: str, tmp_path: Path) -> None:
    services = load_compose()["services"]
    local = Local(broker, tmp_path)
    try:
        (tmp_path / "mlflow").mkdir()
        local.start("mlflow", services["mlflow"])
        wait_for(lambda: local.healthcheck(services["mlflow"]), 90, "the MLflow server's health check")

        bootstrap = local.start("bootstrap", services["bootstrap"])
        assert bootstrap.wait(timeout=300) == 0, local.log("bootstrap")

        predictor = local.start("predictor", services["predictor"])
        trainer = local.start("trainer", services["trainer"])
        wait_for(lambda: local.healthcheck(services["predictor"]), 120, "the predictor's health check")
        local.start("sample-app", services["sample-app"])

        settings = Settings(bootstrap_servers=broker, topic_prefix=local.prefix)
        consumer = make_consumer(settings, group_id=None, topics=[settings.topic("predictions")])
        answered: list[Prediction] = []
        try:

            def enough() -> bool:
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        message = decode(Prediction, record.value)
                        assert isinstance(message, Prediction), message
                        answered.append(message)
                return len(answered) >= 100

            wait_for(enough, 120, "100 predictions for the sample app's requests")
        finally:
            consumer.close()
        assert {p.model_version for p in answered} == {"1"}
        assert predictor.poll() is None, local.log("predictor")
        assert trainer.poll() is None, local.log("trainer")
    finally:
        local.stop()
