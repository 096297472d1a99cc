"""Training-side drift (adversarial validation) and the train/serve skew check: the pure parts on
real Adult rows through the real pipeline, then the skew check on real Kafka and MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamfit.common.errors import StreamfitError, TrainServeSkew
from streamfit.common.kafka import ensure_topics, make_producer
from streamfit.common.messages import DeadLetter, Observation, decode
from streamfit.common.model_store import ModelStore
from streamfit.common.pipeline import FeaturePipeline, read_table
from streamfit.common.settings import ADULT_TEST, ADULT_TRAIN
from streamfit.sample_app.drift import apply_drift, plan_drift
from streamfit.trainer.drift import adversarial_validation, drift_score, reference_rows, skew
from streamfit.trainer.metrics import SKEW_MISMATCHES
from streamfit.trainer.service import Trainer
from tests.trainer.conftest import TrainerSettings
from tests.trainer.support import cycle_runs, read_topic, records


def test_reference_rows_are_the_newest_observations_topped_up_with_base_rows() -> None:
    assert reference_rows(100, 0, seed=1, limit=10).tolist() == sorted(reference_rows(100, 0, seed=1, limit=10))
    assert len(reference_rows(100, 0, seed=1, limit=10)) == 10 and reference_rows(100, 0, 1, 10).max() < 100
    mixed = reference_rows(100, 4, seed=1, limit=10)
    assert mixed[-4:].tolist() == [100, 101, 102, 103] and len(mixed) == 10 and mixed[:6].max() < 100
    assert reference_rows(100, 50, seed=1, limit=10).tolist() == list(range(140, 150))
    assert reference_rows(3, 0, seed=1, limit=10).tolist() == [0, 1, 2]


def test_drift_score_is_symmetric_and_spans_zero_to_one() -> None:
    assert drift_score(0.5) == 0 and drift_score(1.0) == 1 and drift_score(0.0) == 1
    assert drift_score(0.7) == pytest.approx(drift_score(0.3)) == pytest.approx(0.4)


@pytest.fixture(scope="module")
def adult_matrices() -> tuple[FeaturePipeline, np.ndarray, np.ndarray, np.ndarray]:
    """(pipeline, 4,000 base rows, 1,500 later test rows as served, the same rows drifted)."""
    base, test = read_table(ADULT_TRAIN), read_table(ADULT_TEST).iloc[:1500]
    pipeline = FeaturePipeline.fit(base, "income")
    plan = plan_drift(base, "income", "binary", 0)
    rows = [{k: v for k, v in row.items() if k != "income"} for row in records(test)]
    drifted = [apply_drift(plan, i, row, None)[0] for i, row in enumerate(rows)]
    return pipeline, pipeline.transform_frame(base.iloc[:4000]), pipeline.transform(rows), pipeline.transform(drifted)


def test_adversarial_validation_tells_drifted_rows_apart_and_not_undrifted_ones(
    adult_matrices: tuple[FeaturePipeline, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    pipeline, base, same, drifted = adult_matrices
    calm = adversarial_validation(pipeline, base, same, seed=1)
    moved = adversarial_validation(pipeline, base, drifted, seed=1)
    assert calm is not None and moved is not None
    assert calm.drift < 0.15, calm  # the test split is the same population
    assert moved.drift > 0.5, moved  # hours_per_week ×4.33 for 45% of the rows
    assert moved.new_rows == 1500 and moved.reference_rows == 2000
    assert adversarial_validation(pipeline, base, same[:50], seed=1) is None  # too few to say


def test_skew_names_the_feature_served_otherwise() -> None:
    frame = read_table(ADULT_TRAIN).iloc[:500]
    pipeline = FeaturePipeline.fit(frame, "income")
    row = {k: v for k, v in records(frame.iloc[:1])[0].items() if k != "income"}
    served = [None if math.isnan(v) else v for v in pipeline.transform([row])[0].tolist()]
    assert skew(pipeline, row, served) is None
    assert skew(pipeline, {**row, "age": None}, [None, *served[1:]]) is None  # missing on both sides
    wrong = list(served)
    j = pipeline.feature_names.index("workclass")
    wrong[j] = (served[j] or 0) + 1  # another category code
    found = skew(pipeline, row, wrong)
    assert found is not None and found.feature == "workclass" and "workclass" in found.describe()
    assert skew(pipeline, row, served[:-1]) is not None  # another number of features


def _vector(pipeline: FeaturePipeline, row: dict[str, object]) -> list[float | None]:
    """What the predictor writes in ``served``: NaN as null."""
    return [None if math.isnan(v) else v for v in pipeline.transform([row])[0].tolist()]


@pytest.mark.kafka
def test_a_served_vector_the_trainer_encodes_otherwise_fails_the_cycle_loudly(
    trainer_settings: TrainerSettings, tmp_path: Path
) -> None:
    """The predictor served with a pipeline fitted on other base data (category codes in another
    order): the trainer's cycle fails with the feature named, and the skewed rows are dead-lettered."""
    settings = trainer_settings()
    ensure_topics(settings)
    trainer_pipeline = FeaturePipeline.fit(read_table(settings.data_path), "income")
    spec = trainer_pipeline.to_dict()
    for feature in spec["features"]:
        feature["categories"] = feature["categories"][::-1]  # the same categories, coded in another order
    served_pipeline = FeaturePipeline.from_dict(spec)
    rows = records(read_table(ADULT_TEST).iloc[:40])
    producer = make_producer(settings, client_id="test-skew")
    for i, row in enumerate(rows):
        label = row.pop("income")
        served = None if i % 5 else _vector(trainer_pipeline, row)
        if i == 7:  # one observation served otherwise
            served = _vector(served_pipeline, row)
        message = Observation(request_id=f"r{i}", features=row, label=label, prediction=label, score=0.5,
                              model_version="1", observed_at=1000.0 + i, served=served)  # fmt: skip
        producer.send(settings.topic("observations"), key=f"r{i}".encode(), value=message.encode())
    producer.flush()
    producer.close()
    before = SKEW_MISMATCHES._value.get()
    with Trainer(settings, progress=False) as trainer, pytest.raises(TrainServeSkew) as failure:
        trainer.run_cycle()
    assert isinstance(failure.value, StreamfitError)
    assert "1 of 9 observations" in str(failure.value) and "request r7" in str(failure.value)
    assert SKEW_MISMATCHES._value.get() == before + 1
    letters = [decode(DeadLetter, v) for _, v in read_topic(settings, "dead-letters")]
    assert [orjson.loads(d.payload)["request_id"] for d in letters if isinstance(d, DeadLetter)] == ["r7"]
    assert cycle_runs(ModelStore(settings)) == []  # nothing trained
