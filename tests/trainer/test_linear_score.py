"""A cycle on a slanted boundary: its trees read a linear model's score, and serve it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from streamfit.common.kafka import ensure_topics
from streamfit.common.model_store import ModelStore
from streamfit.trainer.bootstrap import bootstrap
from streamfit.trainer.service import Trainer
from tests.support.frames import slanted
from tests.trainer.conftest import TrainerSettings
from tests.trainer.support import records, send_observations, send_retrain

pytestmark = pytest.mark.kafka


def test_a_cycle_on_a_slanted_boundary_keeps_the_linear_score_and_its_model_serves_it(
    trainer_settings: TrainerSettings, tmp_path: Path
) -> None:
    frame = slanted(1400, 0)
    base = tmp_path / "slanted.csv"
    frame.iloc[:600].to_csv(base, index=False)
    settings = trainer_settings(data=base, test_data=None, target="y", trials=2)
    champion = bootstrap(settings, publish=False).version
    with Trainer(settings, progress=False) as trainer:
        ensure_topics(settings)
        send_observations(settings, frame.iloc[600:], "y")
        send_retrain(settings, reason="count")
        result = trainer.run_once()
    assert result is not None and result.promoted and result.version != champion, result
    store = ModelStore(settings)
    verdict = store.client.get_run(result.run_id).data.tags["streamfit.linear_score"]
    pattern = (r"kept \(cross-validated binary_logloss (\S+) with 1 linear score\(s\), (\S+) without, "
               r"standard error (\S+)\)")  # fmt: skip
    found = re.fullmatch(pattern, verdict)
    assert found is not None and float(found[1]) + float(found[3]) < float(found[2]), verdict
    assert float(found[3]) > 0, verdict  # five folds: a spread to clear
    message = store.reload_message(result.version)
    bundle = store.fetch_bundle(message.uri, message.sha256)
    assert bundle.linear is not None and bundle.feature_names == ["x1", "x2", "x3", "colour", "linear_score"]
    fresh = slanted(2000, 9)
    predictions, _ = bundle.predict(records(fresh.drop(columns="y")))
    assert np.mean(np.asarray(predictions) == fresh.y.to_numpy()) > 0.98

    # Turned off, the cycle offers the trees no score at all.
    plain = settings.model_copy(update={"linear_score": False})
    with Trainer(plain, progress=False) as trainer:
        again = trainer.run_cycle()
    assert "streamfit.linear_score" not in store.client.get_run(again.run_id).data.tags
    if again.promoted:
        message = store.reload_message(again.version)
        assert store.fetch_bundle(message.uri, message.sha256).linear is None
