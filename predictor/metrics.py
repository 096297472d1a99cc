"""The predictor's Prometheus metrics, in a registry of their own (two predictors in one process,
as in tests and the demo, do not collide).

Counters move once per batch, never once per message. The label join's counts and sizes are read
at scrape time from the join itself, so the hot path does not touch them at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streamfit.predictor.drift import DriftMonitor
from streamfit.predictor.label_join import LabelJoin

NAMESPACE = "streamfit_predictor"
BATCH_SIZES = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
LATENCIES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PredictorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, NAMESPACE
        self.requests = Counter("requests", "Request messages read, valid or not.", namespace=ns, registry=r)
        self.labels = Counter("labels", "Label messages read, valid or not.", namespace=ns, registry=r)
        self.predictions = Counter("predictions", "Predictions produced.", namespace=ns, registry=r)
        self.dead_letters = Counter(
            "dead_letters", "Messages sent to dead-letters, by reason class.", ["reason"], namespace=ns, registry=r
        )
        self.observations = Counter("observations", "Joined observations produced.", namespace=ns, registry=r)
        self.retrain_signals = Counter(
            "retrain_signals", "Retrain signals produced (count and drift).", namespace=ns, registry=r
        )
        self.drift_signals = Counter(
            "drift_signals", "Retrain signals for drift, by cause (psi, metric, step; several: joined by commas).",
            ["cause"], namespace=ns, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram("batch_size", "Records per batch.", namespace=ns, registry=r, buckets=BATCH_SIZES)
        self.batch_seconds = Histogram(
            "batch_latency_seconds",
            "From a batch's first record to its offsets committed.",
            namespace=ns,
            registry=r,
            buckets=LATENCIES,
        )
        self.predict_seconds = Histogram(
            "predict_seconds", "Feature matrix and model predict, per batch.", namespace=ns, registry=r,
            buckets=LATENCIES,
        )  # fmt: skip
        self.batch_retries = Counter(
            "batch_retries", "Batches rewound and retried because the broker did not take their output.",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.commit_failures = Counter(
            "commit_failures", "Offset commits refused (a rebalance: the batch may be repeated).",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.group_rejoins = Counter(
            "group_rejoins", "Times the consumer left its group and joined it again after commits refused in a row.",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.interim_corrections = Counter(
            "interim_corrections", "Model versions that answered through an interim model learnt from the "
            "labels since a change (predictor.interim).", namespace=ns, registry=r,
        )  # fmt: skip
        self.model_version = Gauge(
            "model_version", "Version serving (NaN: none yet, or not a number).", namespace=ns, registry=r
        )
        self.model_version.set(math.nan)
        self.model = Info("model", "The model serving.", namespace=ns, registry=r)
        self.swaps = Counter("swaps", "Models swapped in.", namespace=ns, registry=r)
        self.swap_failures = Counter(
            "swap_failures", "Published models refused, by reason class.", ["reason"], namespace=ns, registry=r
        )
        self.serving_compiled = Gauge(
            "serving_compiled",
            "1 while the model in service predicts through compiled trees.",
            namespace=ns,
            registry=r,
        )
        self.compile_failures = Counter(
            "compile_failures",
            "Models left on LightGBM: compiling failed or predicted otherwise.",
            namespace=ns,
            registry=r,
        )
        self.store_errors = Counter(
            "model_store_errors", "Failed downloads from the model store (retried with backoff).",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.ready = Gauge("ready", "1 when a model is loaded and partitions are assigned.", namespace=ns, registry=r)

    def watch(self, join: LabelJoin) -> None:
        """Expose the label join's counters and sizes, read when scraped."""
        self.registry.register(_JoinCollector(join))

    def watch_drift(self, monitor: DriftMonitor) -> None:
        """Expose the drift monitor's PSI and live metric, read when scraped."""
        self.registry.register(_DriftCollector(monitor))

    def serving(self, version: str, sha256: str) -> None:
        try:
            self.model_version.set(float(version))
        except ValueError:
            self.model_version.set(math.nan)
        self.model.info({"version": version, "sha256": sha256})

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent), for tests and the demo's summary."""
        found = self.registry.get_sample_value(f"{NAMESPACE}_{name}", labels or {})
        return 0.0 if found is None else float(found)


class _JoinCollector(Collector):
    def __init__(self, join: LabelJoin) -> None:
        self.join = join

    def collect(self) -> Iterator[Any]:
        join, ns = self.join, NAMESPACE
        outcomes = CounterMetricFamily(
            f"{ns}_label_outcomes", "Labels read from the labels topic, by outcome of the join.", labels=["outcome"]
        )
        outcomes.add_metric(["joined"], join.joined)
        outcomes.add_metric(["held"], join.held_total)
        outcomes.add_metric(["unknown"], join.unknown)
        yield outcomes
        dropped = CounterMetricFamily(
            f"{ns}_pending_dropped", "Served requests dropped before their label came.", labels=["cause"]
        )
        dropped.add_metric(["max_age"], join.expired)
        dropped.add_metric(["max_size"], join.evicted)
        yield dropped
        yield GaugeMetricFamily(f"{ns}_pending_labels", "Served requests waiting for their label.", value=join.pending)
        yield GaugeMetricFamily(f"{ns}_held_labels", "Labels waiting for their request.", value=join.held)


class _DriftCollector(Collector):
    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        monitor, ns = self.monitor, NAMESPACE
        nan = math.nan
        per_feature = GaugeMetricFamily(
            f"{ns}_drift_psi", "PSI of each feature over the window of served requests (absent until it is full).",
            labels=["feature"],
        )  # fmt: skip
        for feature, psi in monitor.feature_psi().items():
            per_feature.add_metric([feature], psi)
        yield per_feature
        overall = monitor.overall_psi
        yield GaugeMetricFamily(
            f"{ns}_drift_psi_overall", "Mean PSI over the features (NaN until the window is full).",
            value=nan if overall is None else overall,
        )  # fmt: skip
        holdout = monitor.holdout_metric
        metric = "none" if holdout is None else holdout[0]
        live = monitor.live_metric
        live_family = GaugeMetricFamily(
            f"{ns}_live_metric", "Accuracy (regression: mean absolute error) over the window of joined observations "
            "of the model serving (NaN until the window is full).", labels=["metric"],
        )  # fmt: skip
        live_family.add_metric([metric], nan if live is None else live)
        yield live_family
        holdout_family = GaugeMetricFamily(
            f"{ns}_holdout_metric", "The same metric on the holdout the model serving was promoted on.",
            labels=["metric"],
        )  # fmt: skip
        holdout_family.add_metric([metric], nan if holdout is None else holdout[1])
        yield holdout_family
        yield GaugeMetricFamily(
            f"{ns}_drift_window_requests", "Served requests in the drift window.", value=monitor.served_in_window
        )
        yield GaugeMetricFamily(
            f"{ns}_drift_window_observations", "Joined observations in the live-metric window.",
            value=monitor.observed_in_window,
        )  # fmt: skip
