"""Serving-side drift: is what the predictor serves still what its model was made for?

Four checks, against the reference profile in the model's bundle (``common.profile``):

- **input drift**: the population stability index (PSI) of every feature over the last
  ``drift_window`` served requests; overall PSI is their mean;
- **live metric**: accuracy (error for regression) over the last ``drift_window`` joined
  observations that this model answered, against the holdout metric the model was promoted on.

- **a step in the live error**: the served error of this model's joined observations, in time
  order, scanned for a significant step up (``common.change``, the test the trainer uses to find
  where its training window starts, with ``STEP_MIN_AFTER`` rows after the step where the trainer
  wants 50). It needs no full window: an abrupt concept change that moves the error by more than a
  few points is found within a few dozen to a hundred observations, where the window's mean takes
  several hundred to fall ``drift_metric_drop`` below the holdout's.

- **an early verdict on the live metric**: before the window is full, the live error of this
  model's observations so far is tested against the error its holdout promised. A model swapped in
  just after a change of the world has no "before" in its own series for the step test to find,
  and its window takes a thousand observations to fill; a drop of more than ``drift_metric_drop``
  that is ``common.change.Z`` standard errors deep is clear after a hundred or two.

When a feature's PSI exceeds ``drift_psi_threshold``, the live metric falls more than
``drift_metric_drop`` below the holdout's (over the full window, or early and significantly), or
the live error steps up (while ``drift_metric_drop`` is on), the monitor raises an ``Alarm``, at
most once per ``drift_cooldown`` served requests (a step that starts after the last alarm is not
held back: that alarm cannot have been about it); the service turns it into a ``retrain`` message
with reason ``drift`` and the features that moved most.

Cost on the serving path: per batch, a reference to the matrix the model already read is kept,
and per joined observation one tuple is appended to a list. Every ``CHECK_EVERY`` requests (or
``STEP_EVERY`` observations) the kept matrices are binned at once (a handful of numpy calls, whatever the number
of features), counted into the window with ``bincount``, the observations scored, and the PSI
evaluated as one vectorised expression. No Python loop runs over rows except the scoring of
joined observations (one comparison each). The verdict therefore lags by at most ``CHECK_EVERY``
requests, which a window of a thousand absorbs.

A new model empties both windows: its reference is another, and the old model's answers say
nothing about the new one. A model without a profile (bundles made before profiles existed) is
served without the input check; one without holdout accuracy (or error) without the live check.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from streamfit.common.bundle import ModelBundle
from streamfit.common.change import MIN_SEGMENT, Change, Z, latest_change
from streamfit.common.pipeline import category_key
from streamfit.common.profile import PSI_FLOOR, ReferenceProfile
from streamfit.predictor.interim import MIN_ROWS as INTERIM_MIN_ROWS
from streamfit.predictor.interim import Rows

log = logging.getLogger(__name__)

CHECK_EVERY: Final = 50  # served requests between two evaluations
STEP_EVERY: Final = 5  # ... or joined observations: a step in the error is found this much sooner
# Observations after a step in the live error before it can be found (the trainer's scan wants
# ``MIN_SEGMENT``). The step must still pass ``Z`` standard errors and, for classes, the exact
# binomial count (``common.change``): a jump from 0% to 80% error passes with 5 rows after it, one
# from 2% to 13% needs about a hundred. No false alarm in 57,000 checks of 1,000 stationary 0/1
# errors (error rates 0.2% to 30%, one check every 10 rows) at 10 and 20 rows after, nor in 46,200
# (0.2% to 30%, every 5 rows) at 5. Each row sooner is a wrong answer fewer after a change that
# makes the model wrong most of the time. Regression errors
# have no such exact count (a burst of heavy-tailed residuals would pass ``Z`` on 10 rows), so a
# regression model's step wants ``MIN_SEGMENT`` rows after it, as the trainer's scan does.
STEP_MIN_AFTER: Final = 5
TOP_FEATURES: Final = 3
# Observations after which the interim model is fitted again, or a quarter more: while the first one has
# not shown it beats the served answers, each label since the change counts (a fit on a few dozen rows
# takes ~20 ms; on River's STAGGER the first clear verdict came after 7 to 11 labels, tried from 6).
INTERIM_EVERY: Final = 2


@dataclass(frozen=True)
class Alarm:
    """Why the monitor asks for a retrain."""

    model_version: str
    causes: tuple[str, ...]  # "psi" and/or "metric"
    psi: float  # overall (mean over features)
    top_features: tuple[tuple[str, float], ...]  # (feature, PSI), highest first
    metric: str | None  # accuracy or mae
    live: float | None
    holdout: float | None
    window: int
    observations: int
    step: Change | None = None  # the step up in the live error, when that is a cause

    def describe(self) -> str:
        parts = []
        if "psi" in self.causes:
            top = ", ".join(f"{name} {value:.2f}" for name, value in self.top_features)
            parts.append(f"PSI over {self.window} requests: overall {self.psi:.3f}, highest {top}")
        if "metric" in self.causes and self.live is not None and self.holdout is not None:
            parts.append(
                f"live {self.metric} {self.live:.4f} over {self.observations} observations "
                f"vs holdout {self.holdout:.4f}"
            )
        if "step" in self.causes and self.step is not None:
            parts.append(f"live {self.step.describe(self.observations)}")
        return "; ".join(parts)

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model_version": self.model_version, "causes": list(self.causes),
                               "psi": round(self.psi, 6), "window": self.window}  # fmt: skip
        if self.metric is not None and self.live is not None and self.holdout is not None:
            out |= {"metric": self.metric, "live": round(self.live, 6), "holdout": round(self.holdout, 6),
                    "observations": self.observations}  # fmt: skip
        if self.step is not None:
            out["step"] = {"at": self.step.at, "before": round(self.step.before, 6),
                           "after": round(self.step.after, 6), "z": round(self.step.z, 2)}  # fmt: skip
        return out


class _Ring:
    """The last ``size`` rows of an array, with a running aggregate kept by the caller."""

    def __init__(self, size: int, columns: int, dtype: Any) -> None:
        self.size = size
        self.rows = np.zeros((size, columns), dtype=dtype)
        self.filled = 0
        self.pos = 0

    def push(self, new: np.ndarray) -> np.ndarray:
        """Store ``new`` (its last ``size`` rows); returns the rows it pushed out."""
        new = new[-self.size :]
        n = len(new)
        slots = (self.pos + np.arange(n)) % self.size
        old = self.rows[slots[slots < self.filled]]
        self.rows[slots] = new
        self.filled = min(self.size, self.filled + n)
        self.pos = (self.pos + n) % self.size
        return old

    @property
    def full(self) -> bool:
        return self.filled == self.size

    def ordered(self) -> np.ndarray:
        """The rows kept, oldest first."""
        if not self.full:
            return self.rows[: self.filled]
        return np.concatenate([self.rows[self.pos :], self.rows[: self.pos]])


@dataclass
class _Model:
    version: str
    profile: ReferenceProfile | None
    metric: str | None  # accuracy / mae, when the holdout has it
    holdout: float | None
    regression: bool
    holdout_rows: float = math.inf  # how many rows the holdout figure stands on (unknown: exact)
    bins: _Ring | None = None
    counts: np.ndarray | None = None
    expected: np.ndarray | None = None  # features x width, floored, for the vectorised PSI
    valid: np.ndarray | None = None  # features x width: which bins exist
    live: _Ring | None = None
    live_sum: float = 0.0
    pairs: _Ring | None = None  # classes: (model answer, label) as class indices, in step with ``live``
    features: deque[Mapping[str, Any]] = field(default_factory=deque)  # classes: the requests, in step with ``pairs``
    class_index: dict[str | None, int] = field(default_factory=dict)
    classes: int = 0
    change_seen: int | None = None  # the observation where an alarm placed the change (counted as ``observed``)
    interim_tried: int = 0  # pairs after the change when the rows were last offered for an interim model
    observed: int = 0  # observations scored since this model started serving
    alarm_at: int | None = None  # ``observed`` when this model's last alarm was raised
    since_check: int = 0
    step_checked_at: int = 0  # ``observed`` when check() last looked for a step
    psi: np.ndarray | None = None  # the last PSI per feature (None until a full window)
    pending: list[np.ndarray] = field(default_factory=list)  # batch matrices not binned yet
    names: list[str] = field(default_factory=list)


class DriftMonitor:
    def __init__(self, window: int, psi_threshold: float, metric_drop: float, cooldown: int) -> None:
        if window < 1:
            raise ValueError("the drift window needs at least one row")
        self.window = window
        self.psi_threshold = psi_threshold
        self.metric_drop = metric_drop
        self.cooldown = cooldown
        # (model version, prediction, label, the request's features), filled by the service
        self.outcomes: list[tuple[str, Any, Any, Mapping[str, Any]]] = []
        self.since_alarm = cooldown  # the first alarm needs no wait
        self.alarms = 0
        self._model: _Model | None = None

    # --- what the service calls -------------------------------------------------------------
    def requests(self, version: str, bundle: ModelBundle, matrix: np.ndarray) -> None:
        """The batch's feature matrix, as the model read it."""
        model = self._model
        if model is None or model.version != version:
            model = self._switch(version, bundle)
        n = len(matrix)
        self.since_alarm += n
        model.since_check += n
        if model.profile is not None:
            model.pending.append(matrix)  # binned in bulk by check(), every CHECK_EVERY requests

    def check(self) -> Alarm | None:
        """Fold in the observations since the last call, evaluate, and maybe raise an alarm."""
        model = self._model
        if model is None:
            self.outcomes.clear()
            return None
        if model.since_check < CHECK_EVERY and model.observed - model.step_checked_at + len(self.outcomes) < STEP_EVERY:
            return None  # little new evidence: the verdict cannot have changed much
        model.since_check = 0
        self._fold_requests(model)
        self._fold_outcomes(model)
        model.step_checked_at = model.observed
        causes = []
        early_drop = False
        if model.bins is not None and model.bins.full:
            model.psi = self._psi(model)
        if model.psi is not None and self.psi_threshold > 0 and float(model.psi.max()) > self.psi_threshold:
            causes.append("psi")
        live = self.live_metric
        if live is not None and self.metric_drop > 0 and model.holdout is not None:
            worse = (
                (model.holdout - live) if not model.regression else (live - model.holdout) / max(model.holdout, 1e-12)
            )
            if worse > self.metric_drop:
                causes.append("metric")
        elif self.metric_drop > 0 and (early := self._early_drop(model)) is not None:
            causes.append("metric")
            live = early
            early_drop = True  # every observation of this model came after the change
        step = self._step(model) if self.metric_drop > 0 else None
        if step is not None:
            causes.append("step")
        if not causes or (self.since_alarm < self.cooldown and not self._new_step(model, step)):
            return None
        self.since_alarm = 0
        self.alarms += 1
        model.alarm_at = model.observed
        since = step.at if step is not None else 0 if early_drop else None
        if since is not None and model.pairs is not None:  # offer the rows from here on for an interim model
            model.change_seen, model.interim_tried = model.observed - model.pairs.filled + since, 0
        psi = model.psi if model.psi is not None else np.zeros(0)
        order = np.argsort(psi)[::-1][:TOP_FEATURES]
        return Alarm(
            model_version=model.version, causes=tuple(causes), psi=self.overall_psi or 0.0,
            top_features=tuple((model.names[i], float(psi[i])) for i in order), metric=model.metric,
            live=live, holdout=model.holdout, window=self.window,
            observations=model.live.filled if model.live is not None else 0, step=step,
        )  # fmt: skip

    def snapshot(self) -> tuple[int, int]:
        return self.since_alarm, self.alarms

    def restore(self, state: tuple[int, int]) -> None:
        """Undo an alarm whose retrain message never reached the broker (the windows keep the
        batch: a retried batch counts twice in them, which a window of thousands absorbs)."""
        self.since_alarm, self.alarms = state

    # --- what the metrics read --------------------------------------------------------------
    @property
    def model_version(self) -> str | None:
        return None if self._model is None else self._model.version

    def feature_psi(self) -> dict[str, float]:
        model = self._model
        if model is None or model.psi is None:
            return {}
        return dict(zip(model.names, model.psi.tolist(), strict=True))

    @property
    def overall_psi(self) -> float | None:
        model = self._model
        return None if model is None or model.psi is None else float(model.psi.mean())

    @property
    def live_metric(self) -> float | None:
        """The live metric over a full window of observations, else None."""
        model = self._model
        if model is None or model.live is None or not model.live.full:
            return None
        return model.live_sum / model.live.filled

    @property
    def holdout_metric(self) -> tuple[str, float] | None:
        model = self._model
        if model is None or model.metric is None or model.holdout is None:
            return None
        return model.metric, model.holdout

    @property
    def served_in_window(self) -> int:
        model = self._model
        return 0 if model is None or model.bins is None else model.bins.filled

    @property
    def observed(self) -> int:
        """Observations of the serving model scored so far (folded in by ``check`` or ``interim``)."""
        return 0 if self._model is None else self._model.observed

    @property
    def observed_in_window(self) -> int:
        model = self._model
        return 0 if model is None or model.live is None else model.live.filled

    # --- internals --------------------------------------------------------------------------
    def _switch(self, version: str, bundle: ModelBundle) -> _Model:
        profile = bundle.profile
        regression = bundle.pipeline.task == "regression"
        metric = "mae" if regression else "accuracy"
        holdout_metrics: Mapping[str, float] = profile.holdout if profile and profile.holdout else bundle.metrics
        holdout = holdout_metrics.get(metric)
        model = _Model(version, profile, metric if holdout is not None else None, holdout, regression,
                       holdout_rows=holdout_metrics.get("rows") or math.inf)  # fmt: skip
        if profile is None:
            log.warning("model version %s has no reference profile (an older bundle): input drift is not checked",
                        version)  # fmt: skip
        else:
            width = profile.width
            model.names = profile.names
            model.bins = _Ring(self.window, len(profile.features), np.int16)
            model.counts = np.zeros((len(profile.features), width), dtype=np.int64)
            model.expected = np.full((len(profile.features), width), PSI_FLOOR)
            model.valid = np.zeros((len(profile.features), width), dtype=bool)
            for j, feature in enumerate(profile.features):
                model.expected[j, : feature.bins] = np.maximum(feature.expected, PSI_FLOOR)
                model.valid[j, : feature.bins] = True
        if holdout is not None:
            model.live = _Ring(self.window, 1, np.float64)
            if not regression:
                classes = bundle.pipeline.classes
                model.pairs, model.classes = _Ring(self.window, 2, np.int32), len(classes)
                model.features = deque(maxlen=self.window)
                model.class_index = {category_key(c): i for i, c in enumerate(classes)}
        self._model = model
        return model

    def _fold_requests(self, model: _Model) -> None:
        pending, model.pending = model.pending, []
        if not pending or model.profile is None or model.bins is None or model.counts is None:
            return
        matrix = (pending[0] if len(pending) == 1 else np.vstack(pending))[-self.window :]
        bins = model.profile.bin(matrix)
        old = model.bins.push(bins)
        if len(old):
            model.counts -= model.profile.counts(old)
        model.counts += model.profile.counts(bins)

    def _psi(self, model: _Model) -> np.ndarray:
        assert model.counts is not None and model.expected is not None and model.valid is not None
        counts = model.counts.astype(np.float64)
        actual = np.maximum(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0), PSI_FLOOR)
        terms = (actual - model.expected) * np.log(actual / model.expected)
        return np.where(model.valid, terms, 0.0).sum(axis=1)  # type: ignore[no-any-return]

    def _step(self, model: _Model) -> Change | None:
        """A significant step up in this model's live error (time order), if there is one."""
        after = MIN_SEGMENT if model.regression else STEP_MIN_AFTER
        if model.live is None or model.live.filled < MIN_SEGMENT + after:
            return None
        values = model.live.ordered()[:, 0]
        errors = values if model.regression else 1.0 - values
        return latest_change(errors, not model.regression, min_after=after)

    def interim(self) -> Rows | None:
        """After an alarm that placed the change (a step, or a model that served only after it): the
        serving model's labelled observations since the change, for an interim model
        (``predictor.interim``), from ``INTERIM_MIN_ROWS`` of them on and again each time another
        ``INTERIM_EVERY`` (or a quarter more, up to a quarter of the window) have come; once the change
        has left the window, the whole window (``Rows.since_change`` False), until another version
        serves. The service asks between two batches when it is not fitting one already. The alarm
        fires as soon as the change is clear, and the scan places the change itself a few rows back: the rows
        counted from there are the new world's."""
        model = self._model
        if model is None or model.change_seen is None or model.pairs is None:
            return None
        self._fold_outcomes(model)  # the observations since check(): this wants every one
        inside = model.observed - model.change_seen <= model.pairs.filled
        if inside and model.live is not None and (step := self._step(model)) is not None:
            # Found again with more rows after it: an alarm on the first few rows of a new world
            # places the change up to ``STEP_MIN_AFTER`` rows early.
            later = model.observed - model.live.filled + step.at
            if later > model.change_seen:  # fewer rows since the change: count the pace from them
                model.interim_tried = max(0, model.interim_tried - (later - model.change_seen))
                model.change_seen = later
        since = model.observed - model.change_seen
        kept = min(since, model.pairs.filled)  # once the change has left the window, every row kept is after it
        pace = max(INTERIM_EVERY, min(model.interim_tried, model.pairs.filled) // 4)
        if since < INTERIM_MIN_ROWS or since < model.interim_tried + pace:
            return None
        model.interim_tried = since
        pairs = model.pairs.ordered()[model.pairs.filled - kept :].copy()  # the serving thread writes the ring
        features = list(model.features)[len(model.features) - kept :]
        return Rows(model.version, features, pairs[:, 1], pairs[:, 0], since_change=kept == since)

    @staticmethod
    def _new_step(model: _Model, step: Change | None) -> bool:
        """A step up in the error that starts after this model's last alarm: a change of the world
        the alarm cannot have been about (it may have been a false one, on a noisy live metric), so
        the cooldown does not hold it back."""
        if step is None or model.live is None:
            return False
        return model.alarm_at is None or model.observed - model.live.filled + step.at >= model.alarm_at

    def _early_drop(self, model: _Model) -> float | None:
        """Before the window is full: the live metric so far, if its error is more than
        ``metric_drop`` worse than the holdout's, by ``Z`` standard errors; else None."""
        if model.live is None or model.holdout is None or model.live.filled < 2 * MIN_SEGMENT:
            return None
        n = model.live.filled
        values = model.live.rows[:n, 0]
        if model.regression:
            expected, observed = model.holdout, float(values.mean())
            se = float(values.std()) / math.sqrt(n)
            worse = (observed - expected) / max(expected, 1e-12)
        else:  # both error rates are estimates: the holdout's may stand on a few dozen rows
            expected, observed = 1.0 - model.holdout, 1.0 - float(values.mean())
            se = math.sqrt(_binomial_variance(observed, n) + _binomial_variance(expected, model.holdout_rows))
            worse = observed - expected
        significant = worse > self.metric_drop and se > 0 and (observed - expected) / se >= Z
        return float(values.mean()) if significant else None

    def _fold_outcomes(self, model: _Model) -> None:
        outcomes, self.outcomes = self.outcomes, []
        if model.live is None or not outcomes:
            return
        version = model.version
        if model.regression:
            values = [_error(p, y) for v, p, y, _ in outcomes if v == version]
        else:
            key = category_key
            mine = [(p, y, f) for v, p, y, f in outcomes if v == version]
            values = [1.0 if (p == y and type(p) is type(y)) or key(p) == key(y) else 0.0 for p, y, _ in mine]
            if model.pairs is not None and mine:
                index = model.class_index
                model.pairs.push(np.array([(index.get(key(p), -1), index.get(key(y), -1)) for p, y, _ in mine]))
                model.features.extend(f for _, _, f in mine)
        scored = np.array([v for v in values if v is not None], dtype=np.float64)
        if not len(scored):
            return
        model.live.push(scored.reshape(-1, 1))
        model.observed += len(scored)
        model.live_sum = float(model.live.rows[: model.live.filled].sum())  # exact, not a running sum


def _binomial_variance(rate: float, rows: float) -> float:
    """The variance of an error rate measured on ``rows`` rows, never exactly 0 (none for infinitely many)."""
    if not math.isfinite(rows):
        return 0.0
    p = min(max(rate, 0.5 / rows), 1.0 - 0.5 / rows)
    return p * (1.0 - p) / rows


def _error(prediction: Any, label: Any) -> float | None:
    if isinstance(label, bool) or not isinstance(label, (int, float)) or not isinstance(prediction, (int, float)):
        return None
    error = abs(float(prediction) - float(label))
    return error if math.isfinite(error) else None
