"""``streamfit bootstrap``: the first model, from the base data set, with default parameters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np

from streamfit.common import tags as tag
from streamfit.common.bundle import ModelBundle
from streamfit.common.errors import ConfigError
from streamfit.common.kafka import ensure_topics, make_producer, send_and_wait
from streamfit.common.messages import ModelReload
from streamfit.common.model_store import ModelStore
from streamfit.common.pipeline import FeaturePipeline, read_table
from streamfit.common.profile import ReferenceProfile
from streamfit.common.settings import Settings
from streamfit.trainer.crown import crown
from streamfit.trainer.drift import reference_rows
from streamfit.trainer.fit import DEFAULT_PARAMS, evaluate, make_dataset, task_params, train_bundle
from streamfit.trainer.tracking import CycleRun

log = logging.getLogger(__name__)

VALIDATION_SHARE = 0.2


def bootstrap(settings: Settings, publish: bool = True) -> ModelReload:
    """Train, store, register, crown and publish the first model; returns the reload message."""
    if publish:  # fail fast on an unreachable broker, before minutes of training
        ensure_topics(settings)
    frame = read_table(settings.data_path)
    pipeline = FeaturePipeline.fit(frame, settings.target)
    frame = frame[frame[settings.target].notna()]
    x = pipeline.transform_frame(frame)
    y = pipeline.encode_labels(frame[settings.target].tolist())
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(y) < settings.min_rows:
        raise ConfigError(
            f"{settings.data_path} has {len(y)} labelled rows; at least {settings.min_rows} are needed (--min-rows)"
        )
    log.info("bootstrap: %d rows, %d features, task %s", len(y), len(pipeline.features), pipeline.task)

    # Early stopping on a seeded random split finds the number of rounds; the final model sees all rows.
    rng = np.random.default_rng(settings.seed)
    valid = rng.random(len(y)) < VALIDATION_SHARE
    params = {**task_params(pipeline, settings, len(y)), **DEFAULT_PARAMS}
    train_set = make_dataset(pipeline, x[~valid], y[~valid])
    valid_set = train_set.create_valid(x[valid], label=y[valid])
    probe = lgb.train(params, train_set, num_boost_round=settings.max_rounds, valid_sets=[valid_set],
                      callbacks=[lgb.early_stopping(settings.early_stopping, verbose=False)])  # fmt: skip
    rounds = probe.best_iteration or settings.max_rounds

    metrics: dict[str, float]
    test_path = settings.test_data_path
    meta: dict[str, Any] = {"reason": "bootstrap", "rows": len(y), "data": str(settings.data_path)}
    bundle = train_bundle(pipeline, make_dataset(pipeline, x, y), params, rounds, meta)
    if test_path is not None:
        test = read_table(test_path, "test data set", "--test-data / STREAMFIT_TEST_DATA")
        test = test[test[settings.target].notna()]
        ty = pipeline.encode_labels(test[settings.target].tolist())
        ok = ~np.isnan(ty)
        metrics = evaluate(bundle, pipeline.transform_frame(test)[ok], ty[ok])
    else:  # the probe never saw these rows; the final model did, and would flatter itself on them
        metrics = evaluate(ModelBundle(probe, pipeline), x[valid], y[valid])
    profile = ReferenceProfile.build(pipeline, x[reference_rows(len(y), 0, settings.seed)], metrics)
    bundle = type(bundle)(bundle.booster, pipeline, {**bundle.meta, "metrics": metrics, "profile": profile.to_dict()})

    store = ModelStore(settings)
    run = CycleRun.start(store, store.experiment_id(), "bootstrap", {
        tag.KIND: "bootstrap", tag.STATE: "training", tag.REASON: "bootstrap", tag.ROWS_BASE: len(y),
        tag.ROWS_OBSERVATIONS: 0, tag.DATA: str(settings.data_path),
    })  # fmt: skip
    try:
        run.log_params({k: v for k, v in params.items() if k != "num_threads"} | {"num_rounds": rounds})
        run.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
        uri, sha = store.save_bundle(run.run_id, bundle)
        version = store.register(run.run_id, uri, sha, metrics)
        store.tag_version(version, {tag.REASON: "bootstrap", tag.RUN_ID: run.run_id})
        message = crown(store, version, _publisher(settings) if publish else lambda _message: None, run)
        run.set_tags({tag.STATE: "promoted"})
        run.finish()
    except BaseException as exc:
        # Left "promoting" once the alias moved: the trainer's recovery publishes the reload.
        run.fail_quietly("promoting" if run.state == "promoting" else "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    log.info("bootstrap: version %s, holdout %s", version, {k: round(v, 4) for k, v in metrics.items()})
    if publish:
        log.info("published version %s on %s", version, settings.topic("models"))
    return message


def _publisher(settings: Settings) -> Callable[[ModelReload], None]:
    def publish(message: ModelReload) -> None:
        producer = make_producer(settings, client_id="streamfit-bootstrap")
        try:
            send_and_wait(producer, settings.topic("models"), settings.model_name, message)
        finally:
            producer.close()

    return publish
