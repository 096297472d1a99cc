"""docs/monitoring.md, the services' /metrics and the Grafana dashboard, held to each other: a real
predictor (real Kafka, MLflow, LightGBM) and the trainer's metrics server are scraped over HTTP."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streamfit.common.kafka import ensure_topics, make_producer
from streamfit.kafka_server import free_port
from streamfit.predictor.drift import CHECK_EVERY
from streamfit.predictor.service import Predictor
from tests.conftest import SettingsFactory
from tests.predictor.conftest import Models, features, mlflow_home, models_factory, running, train, wait_for
from tests.predictor.test_drift import profiled

__all__ = ["mlflow_home", "models_factory"]  # fixtures used here

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "monitoring.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamfit.json"


def documented() -> set[str]:
    """Every metric named in the first column of the doc's tables."""
    return set(re.findall(r"^\| `(streamfit_[a-z_]+)` \|", DOC.read_text(), flags=re.M))


def scrape(port: int) -> tuple[set[str], set[str]]:
    """(family names, sample names) on a /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    families, samples = set(), set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        samples |= {sample.name for sample in family.samples}
    return families, samples


def exposed_name_is_documented(family: str, doc: set[str]) -> bool:
    return bool({family, f"{family}_total", f"{family}_info"} & doc)


def test_every_documented_metric_is_served_and_every_served_one_documented(
    settings_factory: SettingsFactory, mlflow_home: Path, models_factory: Callable[..., Models]
) -> None:
    from streamfit.trainer.metrics import serve

    doc = documented()
    assert len(doc) > 30, "the doc's tables were not found"
    port = free_port()
    settings = settings_factory(home=mlflow_home, metrics_port=port, drift_window=50, retrain_every=0)
    ensure_topics(settings)
    models = models_factory(settings)
    uri, sha = models.store_bundle(profiled(train(), {"loss": 0.3, "accuracy": 0.9}))
    models.publish("1", uri, sha)
    producer = make_producer(settings, client_id="test-monitoring")
    predictor = Predictor(settings)
    with running(predictor):
        for i in range(CHECK_EVERY + 20):  # the windows (50) fill, and a check runs (every CHECK_EVERY)
            value = orjson.dumps({"request_id": f"r{i}", "features": features(i), "label": "yes"})
            producer.send(settings.topic("requests"), key=f"r{i}".encode(), value=value)
        producer.flush()
        wait_for(lambda: predictor.drift.live_metric is not None and predictor.drift.overall_psi is not None,
                 what="full drift windows")  # fmt: skip
        predictor_families, predictor_samples = scrape(port)
    producer.close()
    trainer_port = free_port()
    server = serve(settings_factory(metrics_port=trainer_port))
    assert server is not None
    try:
        trainer_families, trainer_samples = scrape(trainer_port)
    finally:
        server.close()

    families, samples = predictor_families | trainer_families, predictor_samples | trainer_samples

    def served(name: str) -> bool:
        # A labelled counter no label has touched yet is served as its family (HELP and TYPE) only.
        return name in samples or re.sub(r"_(total|info|bucket|sum|count)$", "", name) in families

    missing = sorted(name for name in doc if not served(name))
    assert not missing, f"documented in docs/monitoring.md but not served: {missing}"
    undocumented = sorted(
        f for f in families
        if f.startswith("streamfit_") and not f.endswith("_created") and not exposed_name_is_documented(f, doc)
    )  # fmt: skip
    assert not undocumented, f"served but not in docs/monitoring.md: {undocumented}"
    assert "streamfit_predictor_drift_psi" in predictor_samples  # a sample per feature, with the window full

    # The dashboard queries only metrics that exist.
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bstreamfit_[a-z_]+", expr)}
    assert used >= {"streamfit_predictor_live_metric", "streamfit_predictor_drift_psi", "streamfit_trainer_drift_score"}
    unknown = sorted(name for name in used if not served(name))
    assert not unknown, f"the dashboard queries metrics no service serves: {unknown}"


def test_the_monitoring_profile_wires_prometheus_and_grafana_to_the_files() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name  # optional: `--profile monitoring`
        for volume in services[name]["volumes"]:
            assert (ROOT / volume.split(":")[0]).exists(), volume
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    predictor_port = services["predictor"]["environment"]["STREAMFIT_METRICS_PORT"]
    trainer_port = services["trainer"]["environment"]["STREAMFIT_METRICS_PORT"]
    assert jobs["streamfit-predictor"]["dns_sd_configs"][0]["port"] == int(predictor_port)
    assert jobs["streamfit-trainer"]["static_configs"][0]["targets"] == [f"trainer:{trainer_port}"]
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads(DASHBOARD.read_text())
    assert all(panel["datasource"]["uid"] == uid for panel in dashboard["panels"])
