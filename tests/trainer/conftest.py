"""Fixtures of the trainer tests: small data files and lean trainer settings.

Every test gets its own topics and model name (``settings_factory``), but they share one MLflow
SQLite store: creating a store costs seconds, and experiments are per model name anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamfit.common.settings import Settings
from tests.conftest import SettingsFactory
from tests.trainer.support import adult_files

TrainerSettings = Callable[..., Settings]


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainer-home")


@pytest.fixture(scope="session")
def adult(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return adult_files(tmp_path_factory.mktemp("adult"))


@pytest.fixture
def trainer_settings(
    settings_factory: SettingsFactory, shared_home: Path, adult: tuple[Path, Path, Path]
) -> TrainerSettings:
    """Settings for a quick cycle on 2,000 Adult rows; keyword arguments override."""

    def make(**overrides: Any) -> Settings:
        base, test, _ = adult
        values: dict[str, Any] = {
            "home": shared_home, "data": base, "test_data": test, "target": "income", "trials": 3,
            "max_rounds": 100, "early_stopping": 15, "cv_folds": 3, "num_threads": 1, "time_budget": 120.0,
            "min_rows": 100,
        }  # fmt: skip
        values.update(overrides)
        return settings_factory(**values)

    return make
