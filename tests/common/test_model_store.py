"""The model store in a process that opens more than one (the recovery benchmark, a test session)."""

from __future__ import annotations

import os
from pathlib import Path

from common.model_store import ModelStore
from common.settings import load_settings


def test_opening_a_store_does_not_point_later_settings_at_it(tmp_path: Path) -> None:
    first = ModelStore(load_settings(home=tmp_path / "first"))
    assert "first" in first.uri
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow exports it; the settings would read it
    second = load_settings(home=tmp_path / "second")
    assert "second" in second.tracking_uri and "first" not in second.tracking_uri
    assert "second" in ModelStore(second).uri
