"""The trainer on data sets it has never seen: a binary CSV with other columns, a multiclass and
a regression Parquet file; each with its own optimizer, observations and a bad label."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamfit.common.kafka import ensure_topics
from streamfit.common.messages import DeadLetter, ModelReload, decode
from streamfit.common.model_store import ModelStore
from streamfit.trainer.service import Trainer
from tests.trainer.conftest import TrainerSettings
from tests.trainer.support import observation, read_topic, records, send_observations, synthetic

pytestmark = pytest.mark.kafka

CASES = [
    # task, target, file, optimizer, a label that is not valid for the task
    ("binary", "bought", "shop.csv", "gp", "perhaps"),
    ("multiclass", "species", "trees.parquet", "tpe", "oak"),
    ("regression", "price", "prices.parquet", "random", "expensive"),
]


@pytest.mark.parametrize(("task", "target", "name", "optimizer", "bad_label"), CASES, ids=[c[0] for c in CASES])
def test_an_unseen_data_set_trains_promotes_and_serves(
    trainer_settings: TrainerSettings, tmp_path: Path, task: str, target: str, name: str, optimizer: str,
    bad_label: str,
) -> None:  # fmt: skip
    frame = synthetic(task, 900, seed=5)
    base, stream = frame.iloc[:700], frame.iloc[700:]
    path = tmp_path / name
    base.to_parquet(path) if path.suffix == ".parquet" else base.to_csv(path, index=False)
    settings = trainer_settings(data=path, test_data=None, target=target, optimizer=optimizer, trials=3)
    ensure_topics(settings)
    features = {k: v for k, v in records(stream.iloc[:1])[0].items() if k != target}
    send_observations(settings, stream, target, [observation(features, bad_label, 1.0)])

    with Trainer(settings, progress=False) as trainer:
        result = trainer.run_cycle()
    assert result.promoted and result.trials == 3
    assert result.counts["rows_observations"] == 160 and result.counts["rows_observations_holdout"] == 40
    assert result.counts["rows_test"] == 0 and result.counts["rows_holdout"] == 40

    ((_, value),) = read_topic(settings, "models")
    reload = decode(ModelReload, value)
    assert isinstance(reload, ModelReload) and reload.version == result.version
    bundle = ModelStore(settings).fetch_bundle(reload.uri, reload.sha256)
    assert bundle.pipeline.task == task and bundle.pipeline.target == target
    (prediction,), (score,) = bundle.predict([features])
    if task == "regression":
        assert isinstance(prediction, float) and 50 < prediction < 200
    else:
        assert prediction in set(frame[target]) and 0 <= score <= 1

    ((_, letter),) = read_topic(settings, "dead-letters")
    dead = decode(DeadLetter, letter)
    assert isinstance(dead, DeadLetter) and bad_label in dead.error
