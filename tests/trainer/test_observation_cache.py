"""The Parquet cache of observations on its own (no broker): write, reload, compact, recover."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streamfit.common.settings import load_settings
from streamfit.trainer import observations
from streamfit.trainer.observations import SCHEMA, ObservationLog


def rows(start: int, count: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for i in range(start, start + count):
        out["partition"].append(i % 2)
        out["offset"].append(i)
        out["request_id"].append(f"r{i}")
        out["observed_at"].append(float(i))
        out["features"].append(orjson.dumps({"x": i, "c": None}).decode())
        out["label"].append(orjson.dumps("yes" if i % 2 else "no").decode())
        out["served_error"].append(float(i % 3 == 0))
    return out


def test_cache_survives_a_restart_and_compacts_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observations, "MAX_PARTS", 3)
    settings = load_settings(home=tmp_path, topic_prefix="cache.")
    log = ObservationLog(settings)
    for i in range(10):
        log._write(rows(10 * i, 10), {0: 10 * i + 5, 1: 10 * i + 5})
    assert len(log.parts) <= 3
    assert sorted(p.name for p in log.directory.glob("part-*.parquet")) == sorted(log.parts)

    again = ObservationLog(settings)
    again.load()
    assert len(again.labels) == 100 and again.request_ids[:2] == ["r0", "r1"]
    assert again.features[3] == {"x": 3, "c": None} and again.labels[:2] == ["no", "yes"]
    assert again.served_error[:4] == [1.0, 0.0, 0.0, 1.0]  # what was served for each, for change detection
    assert again.offsets == {0: 95, 1: 95}


def test_an_unreadable_cache_is_rebuilt_from_the_topic(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, topic_prefix="cache.")
    log = ObservationLog(settings)
    log._write(rows(0, 5), {0: 5})
    (log.directory / log.parts[0]).write_bytes(b"not parquet")
    again = ObservationLog(settings)
    again.load()
    assert again.labels == [] and again.offsets == {}
