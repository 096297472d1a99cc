"""The model store in a process that opens more than one (the recovery benchmark, a test session)."""

from __future__ import annotations

import os
from pathlib import Path

from streamfit.common.model_store import ModelStore
from streamfit.common.settings import load_settings


def test_opening_a_store_does_not_point_later_settings_at_it(tmp_path: Path) -> None:
    first = ModelStore(load_settings(home=tmp_path / "first"))
    assert "first" in first.uri
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow exports it; the settings would read it
    second = load_settings(home=tmp_path / "second")
    assert "second" in second.tracking_uri and "first" not in second.tracking_uri
    assert "second" in ModelStore(second).uri


def test_a_version_record_types_what_the_trainer_tagged() -> None:
    from types import SimpleNamespace

    from streamfit.common import tags as tag
    from streamfit.common.model_store import VersionRecord

    tagged = {"sha256": "ab", "metric.loss": "0.25", "metric.accuracy": "0.9", tag.REASON: "drift",
              tag.CANDIDATE: "fast refit", tag.CANDIDATE_LOSS: "0.25", tag.CHAMPION_LOSS: "0.4",
              tag.DECISION: "candidate loss 0.25 < champion 0.4", tag.HOLDOUT: "newest observations",
              tag.PROMOTED_AT: "1700000000.500"}  # fmt: skip
    record = VersionRecord.of(SimpleNamespace(version=7, creation_timestamp=1_700_000_000_000, tags=tagged))
    assert record.version == "7" and record.created == 1_700_000_000.0
    assert record.metrics == {"loss": 0.25, "accuracy": 0.9}
    assert (record.reason, record.candidate, record.holdout) == ("drift", "fast refit", "newest observations")
    assert record.candidate_loss == 0.25 and record.champion_loss == 0.4 and record.promoted_at == 1_700_000_000.5
    assert not record.rejected
    bootstrap = VersionRecord.of(SimpleNamespace(version="1", creation_timestamp=0, tags={"metric.loss": "0.3"}))
    assert bootstrap.candidate_loss is None and bootstrap.reason == "" and bootstrap.metrics == {"loss": 0.3}
    rejected = VersionRecord.of(SimpleNamespace(version="2", creation_timestamp=0, tags={tag.REJECTED: "true"}))
    assert rejected.rejected
