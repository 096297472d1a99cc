"""The search on Spark (hyperopt SparkTrials, pyspark local[2]): child runs are still logged.
Skipped when pyspark is not installed (it is an optional extra)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from streamfit.common.model_store import ModelStore
from streamfit.trainer.service import Trainer
from tests.trainer.conftest import TrainerSettings
from tests.trainer.support import child_runs, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]").appName("streamfit-trainer-test")
        .config("spark.ui.enabled", "false").config("spark.driver.memory", "512m")
        .config("spark.sql.shuffle.partitions", "2").getOrCreate()
    )  # fmt: skip
    try:
        yield session
    finally:
        session.stop()
        if previous is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = previous


def test_spark_trials_run_the_search_and_every_trial_is_a_child_run(
    spark: Any, trainer_settings: TrainerSettings
) -> None:
    settings = trainer_settings(trials=4, spark_parallelism=2)
    with Trainer(settings, progress=False) as trainer:
        result = trainer.run_cycle()
    assert result.promoted and result.trials == 4
    store = ModelStore(settings)
    children = child_runs(store, result.run_id)
    assert len(children) == 4
    assert all("cv_loss" in c.data.metrics and "learning_rate" in c.data.params for c in children)
    assert store.client.get_run(result.run_id).data.tags["streamfit.spark_parallelism"] == "2"
    assert len(read_topic(settings, "models")) == 1
