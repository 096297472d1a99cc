"""The MLflow tag vocabulary: every tag streamfit writes on a run or a model version, named once.

The trainer writes them (``trainer.cycle``, ``trainer.bootstrap``, ``trainer.recovery``,
``trainer.tracking``); ``streamfit status``, ``streamfit rollback``, the demo and the recovery
benchmark read them back. A tag's value is text (MLflow keeps tags as strings).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

PREFIX: Final = "streamfit."
MAX_TAG: Final = 5000  # characters of a tag value kept


def text(value: Any) -> str:
    """A tag value as MLflow keeps it: text (JSON for containers), at most ``MAX_TAG`` characters."""
    if isinstance(value, str):
        out = value
    elif isinstance(value, float):
        out = repr(value)
    elif isinstance(value, (dict, list, tuple)):
        out = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS).decode()
    else:
        out = str(value)
    return out[:MAX_TAG]


# --- on every streamfit run ----------------------------------------------------------------------
KIND: Final = "streamfit.kind"  # cycle, trial, fast-refit, bootstrap
STATE: Final = "streamfit.state"  # how far a cycle got: training, promoting, promoted, rejected, too_few_rows, failed
ERROR: Final = "streamfit.error"  # why a cycle or a trial failed
NOTE: Final = "streamfit.note"  # why a cycle published nothing

# --- a cycle's parent run: what it answered and what it read -------------------------------------
REASON: Final = "streamfit.reason"  # count, drift, manual, bootstrap (also on the version it made)
REASONS: Final = "streamfit.reasons"  # the coalesced requests by reason
REQUESTS: Final = "streamfit.requests"  # how many retrain requests the cycle answers
RETRAIN_TOPIC: Final = "streamfit.retrain_topic"
RETRAIN_FIRST: Final = "streamfit.retrain_first"  # the retrain offsets it answers (crash recovery)
RETRAIN_NEXT: Final = "streamfit.retrain_next"
OBSERVATIONS_TOPIC: Final = "streamfit.observations_topic"
WATERMARKS: Final = "streamfit.watermarks"  # observations read up to these offsets
OBSERVATIONS_READ: Final = "streamfit.observations_read"
DEAD_LETTERED: Final = "streamfit.dead_lettered"
DATA: Final = "streamfit.data"  # the base data set's path
DATA_HASH: Final = "streamfit.data_hash"
ROWS_BASE: Final = "streamfit.rows_base"  # ... and the other ``CycleData.counts()``, as PREFIX + name
ROWS_OBSERVATIONS: Final = "streamfit.rows_observations"
TASK: Final = "streamfit.task"
HOLDOUT: Final = "streamfit.holdout"  # which holdout decided: the base test split or the newest observations
CHANGE_AT: Final = "streamfit.change_at"  # the first observation of the current world, or none
OLD_ROWS: Final = "streamfit.old_rows"  # after a change: whether the older rows were kept, and why
NEW_WORLD_VERSION: Final = "streamfit.new_world_version"  # crowned from the new rows alone before the old rows won
DRIFT_REQUESTED_FOR: Final = "streamfit.drift_requested_for"  # the features a drift request named
DRIFT_SCORE: Final = "streamfit.drift_score"
DRIFT_TOP: Final = "streamfit.drift_top"
OPTIMIZER: Final = "streamfit.optimizer"
SPARK_PARALLELISM: Final = "streamfit.spark_parallelism"
PARALLEL_TRIALS: Final = "streamfit.parallel_trials"
TRIAL_FOLDS: Final = "streamfit.trial_folds"  # folds each trial was scored on (1: one held-out fifth)
WARM_START_FROM: Final = "streamfit.warm_start_from"  # the earlier cycles whose best points the search tried
BEST_TRIAL: Final = "streamfit.best_trial"
STOPPED_BY: Final = "streamfit.stopped_by"  # trials, time_budget or stop
FAST_REFIT: Final = "streamfit.fast_refit"  # what became of the fast refit
LINEAR_SCORE: Final = "streamfit.linear_score"  # whether the cycle's trees read a linear model's scores, and why
HOST: Final = "streamfit.host"
PACKAGE_VERSION: Final = "streamfit.package_version"
RECOVERED: Final = "streamfit.recovered"  # a later trainer finished this cycle's promotion

# --- a trial's child run --------------------------------------------------------------------------
TRIAL: Final = "streamfit.trial"  # its number
STATUS: Final = "streamfit.status"  # ok, pruned or failed

# --- a cycle run and the model version it registered ----------------------------------------------
VERSION: Final = "streamfit.version"  # the version a cycle registered (or none)
CANDIDATE: Final = "streamfit.candidate"  # fast refit or search
CANDIDATE_LOSS: Final = "streamfit.candidate_loss"
CHAMPION_LOSS: Final = "streamfit.champion_loss"
CHAMPION_VERSION: Final = "streamfit.champion_version"
DECISION: Final = "streamfit.decision"  # the promotion decision, in words
RUN_ID: Final = "streamfit.run_id"  # on a version: the cycle run that made it
REJECTED: Final = "streamfit.rejected"
PROMOTED_AT: Final = "streamfit.promoted_at"
PREVIOUS_CHAMPION: Final = "streamfit.previous_champion"
