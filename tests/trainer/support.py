"""Helpers of the trainer tests: small data sets, messages on real topics, MLflow look-ups."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from streamfit.common.bundle import ModelBundle
from streamfit.common.kafka import make_consumer, make_producer
from streamfit.common.messages import Observation, Retrain
from streamfit.common.model_store import ModelStore
from streamfit.common.pipeline import FeaturePipeline, read_table
from streamfit.common.settings import ADULT_TEST, ADULT_TRAIN, Settings


def adult_slice(path: Path, source: Path = ADULT_TRAIN, start: int = 0, rows: int = 2000) -> Path:
    frame = read_table(source).iloc[start : start + rows]
    frame.to_csv(path, index=False)
    return path


def adult_files(directory: Path) -> tuple[Path, Path, Path]:
    """(base 2,000 rows, test split 500 rows, 400 later rows to stream as observations)."""
    directory.mkdir(parents=True, exist_ok=True)
    return (
        adult_slice(directory / "adult_base.csv", ADULT_TRAIN, 0, 2000),
        adult_slice(directory / "adult_test.csv", ADULT_TEST, 0, 500),
        adult_slice(directory / "adult_stream.csv", ADULT_TRAIN, 5000, 400),
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return out


def observation(features: dict[str, Any], label: Any, observed_at: float, request_id: str | None = None) -> bytes:
    return Observation(
        request_id=request_id or uuid.uuid4().hex, features=features, label=label, prediction=label,
        score=0.5, model_version="1", observed_at=observed_at,
    ).encode()  # fmt: skip


def send_observations(settings: Settings, frame: pd.DataFrame, target: str, extra: Iterable[bytes] = ()) -> int:
    """Every row of ``frame`` as an observation (in time order), then the ``extra`` raw values."""
    producer = make_producer(settings, client_id="test-observations")
    topic = settings.topic("observations")
    start = time.time() - len(frame)
    sent = 0
    try:
        for i, row in enumerate(records(frame)):
            label = row.pop(target)
            request_id = f"r{i:06d}"
            producer.send(topic, key=request_id.encode(), value=observation(row, label, start + i, request_id))
            sent += 1
        for i, raw in enumerate(extra):
            producer.send(topic, key=f"bad{i}".encode(), value=raw)
            sent += 1
        producer.flush(timeout=30)
    finally:
        producer.close()
    return sent


def send_retrain(
    settings: Settings, count: int = 1, reason: str = "count", details: dict[str, Any] | None = None
) -> None:
    """``count`` retrain requests sent at once (one flush), all acknowledged on return."""
    producer = make_producer(settings, client_id="test-retrain")
    try:
        futures = [
            producer.send(settings.topic("retrain"), key=settings.model_name.encode(), value=Retrain(
                reason=reason, observations=100, requested_at=time.time(),  # type: ignore[arg-type]
                details=details).encode())
            for _ in range(count)
        ]  # fmt: skip
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def read_topic(settings: Settings, name: str, timeout: float = 15.0) -> list[tuple[bytes | None, bytes]]:
    from kafka import TopicPartition

    topic = settings.topic(name)
    consumer = make_consumer(settings, None, client_id="test-reader")
    try:
        deadline = time.monotonic() + timeout
        while not consumer.partitions_for_topic(topic):
            assert time.monotonic() < deadline, f"no metadata for {topic}"
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[tuple[bytes | None, bytes]] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"reading {topic} timed out"
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend((r.key, r.value) for r in batch)
        return out
    finally:
        consumer.close()


def committed(settings: Settings, group: str) -> int | None:
    """The group's committed offset on the retrain topic (partition 0), or None."""
    from kafka import TopicPartition

    consumer = make_consumer(settings, group, client_id="test-committed")  # never subscribes: no join
    try:
        offset = consumer.committed(TopicPartition(settings.topic("retrain"), 0))
        return None if offset is None else int(offset)
    finally:
        consumer.close()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def cycle_runs(store: ModelStore) -> list[Any]:
    return list(store.client.search_runs([store.experiment_id()], "tags.`streamfit.kind` = 'cycle'"))


def child_runs(store: ModelStore, parent: str, kind: str = "trial") -> list[Any]:
    """The child runs of a cycle of one kind: "trial" (one per trial) or "fast-refit"."""
    found = store.client.search_runs([store.experiment_id()], f"tags.`mlflow.parentRunId` = '{parent}'",
                                     max_results=1000)  # fmt: skip
    return [run for run in found if run.data.tags.get("streamfit.kind") == kind]


def install_champion(settings: Settings, frame: pd.DataFrame, rounds: int, strong: bool) -> str:
    """Register ``rounds`` of LightGBM fitted on ``frame`` (through the base data's pipeline) as the
    champion. ``strong`` memorises ``frame``: trained on the holdout itself, it cannot be beaten."""
    pipeline = FeaturePipeline.fit(read_table(settings.data_path), settings.target)
    frame = frame[frame[settings.target].notna()]
    x, y = pipeline.transform_frame(frame), pipeline.encode_labels(frame[settings.target].tolist())
    params: dict[str, Any] = {"objective": pipeline.task if pipeline.task != "multiclass" else "multiclass",
                              "verbosity": -1, "num_threads": 1, "seed": 1}  # fmt: skip
    if pipeline.task == "multiclass":
        params["num_class"] = len(pipeline.classes)
    if strong:
        params |= {"num_leaves": 255, "min_data_in_leaf": 2, "min_sum_hessian_in_leaf": 1e-5, "learning_rate": 0.3}
    else:
        params |= {"learning_rate": 0.01, "num_leaves": 2}
    dataset = lgb.Dataset(x, label=y, categorical_feature=pipeline.categorical_indices, free_raw_data=False)
    bundle = ModelBundle(lgb.train(params, dataset, num_boost_round=rounds), pipeline, {"metrics": {"loss": 0.0}})
    store = ModelStore(settings)
    run = store.client.create_run(store.experiment_id(), run_name="test-champion")
    uri, sha = store.save_bundle(run.info.run_id, bundle)
    store.client.set_terminated(run.info.run_id)
    version = store.register(run.info.run_id, uri, sha, {"loss": 0.0})
    store.set_champion(version)
    return version


def synthetic(task: str, rows: int, seed: int = 0) -> pd.DataFrame:
    """A small data set with mixed column kinds and missing values, for each task."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "temperature": rng.normal(20, 5, rows).round(1),
        "visits": rng.integers(0, 30, rows),
        "region": rng.choice(["north", "south", "east", "west"], rows),
        "member": rng.choice(["yes", "no"], rows),
    })  # fmt: skip
    signal = (frame.temperature - 20) / 5 + (frame.region == "north") * 1.5 + frame.visits / 15
    if task == "binary":
        frame["bought"] = np.where(signal + rng.normal(0, 0.5, rows) > 1.0, "yes", "no")
    elif task == "multiclass":
        frame["species"] = np.select([signal < 0.3, signal < 1.5], ["ash", "birch"], "cedar")
    else:
        frame["price"] = (100 + 20 * signal + rng.normal(0, 3, rows)).round(2)
    frame.loc[rng.random(rows) < 0.05, "temperature"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "region"] = None
    return frame
