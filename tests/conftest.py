"""Fixtures shared by the whole suite.

The broker: ``STREAMFIT_TEST_BROKER=kafka`` (default) starts Apache Kafka from the official jars
(streamfit/kafka_server.py), ``tansu`` starts the embedded broker, ``HOST:PORT`` uses a running
one. Every test gets fresh topic names and group ids through ``settings_factory``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamfit.common.settings import Settings, load_settings


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    choice = os.environ.get("STREAMFIT_TEST_BROKER", "kafka")
    if choice == "kafka":
        from streamfit.kafka_server import KafkaServer

        server = KafkaServer()
        try:
            yield server.start().bootstrap
        finally:
            server.cleanup()
    elif choice == "tansu":
        from streamfit.broker import EmbeddedBroker
        from streamfit.kafka_server import free_port

        with EmbeddedBroker(free_port()) as tansu:
            yield tansu.bootstrap
    else:
        yield choice


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory(broker: str, tmp_path: Path) -> SettingsFactory:
    """Settings on the test broker with a unique topic prefix, model name and working folder."""

    def make(**overrides: Any) -> Settings:
        unique = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "bootstrap_servers": broker,
            "topic_prefix": f"t{unique}.",
            "model_name": f"m{unique}",
            "home": tmp_path / "home",
            "broker_timeout": 20.0,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def settings(settings_factory: SettingsFactory) -> Settings:
    return settings_factory()


@pytest.fixture(autouse=True)
def _no_stray_streamfit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly; a developer's shell must not leak into them."""
    for key in list(os.environ):
        if key.startswith("STREAMFIT_") and key not in ("STREAMFIT_TEST_BROKER", "STREAMFIT_CACHE"):
            monkeypatch.delenv(key)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def unique_group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the broker talks to Kafka: it carries the ``kafka`` marker whether its module
    says so or not, so that ``-m "not kafka"`` runs exactly the tests that need no broker."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()) and item.get_closest_marker("kafka") is None:
            item.add_marker(pytest.mark.kafka)
