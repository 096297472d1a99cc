"""`streamfit bootstrap` on a CSV it has never seen, end to end on real Kafka and MLflow."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamfit.common.kafka import read_last
from streamfit.common.messages import ModelReload, decode
from streamfit.common.model_store import CHAMPION, ModelStore
from streamfit.common.settings import Settings
from streamfit.trainer.bootstrap import bootstrap
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.kafka


def churn_csv(path: Path, rows: int = 1200, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "tenure_months": rng.integers(1, 72, rows).astype(float),
            "monthly_eur": rng.normal(60, 20, rows).round(2),
            "city": rng.choice(["Lyon", "Oslo", "Porto", "Graz"], rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
        }
    )
    risk = (df.tenure_months < 12).astype(float) + (df.plan == "basic") + rng.normal(0, 0.5, rows)
    df["churned"] = np.where(risk > 1.0, "yes", "no")
    df.loc[rng.random(rows) < 0.1, "monthly_eur"] = np.nan
    df.loc[rng.random(rows) < 0.1, "city"] = None
    df.to_csv(path, index=False)
    return path


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env_args = [
        "--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix,
        "--model-name", settings.model_name, "--home", str(settings.home), "--broker-timeout", "5",
        "--max-rounds", "60",
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "streamfit.cli", "bootstrap", *env_args, *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_bootstrap_on_an_unseen_csv_publishes_a_verifiable_champion(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    data = churn_csv(tmp_path / "churn.csv")
    settings = settings_factory(data=data, target="churned")
    result = run_cli(settings, "--data", str(data), "--target", "churned")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "is the champion" in result.stdout

    last = read_last(settings, settings.topic("models"))
    assert last is not None
    key, value = last
    message = decode(ModelReload, value)
    assert isinstance(message, ModelReload)
    assert key == settings.model_name.encode()
    assert message.model_name == settings.model_name and message.version == "1"

    store = ModelStore(settings)
    import mlflow

    local = mlflow.artifacts.download_artifacts(artifact_uri=message.uri, dst_path=str(tmp_path / "dl"))
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == message.sha256
    bundle = store.fetch_bundle(message.uri, message.sha256)
    assert {f.name for f in bundle.pipeline.features} == {"tenure_months", "monthly_eur", "city", "plan"}
    assert bundle.pipeline.classes == ("no", "yes")
    preds, _ = bundle.predict([{"tenure_months": 3.0, "monthly_eur": None, "city": "Atlantis", "plan": "basic"}])
    assert preds[0] in ("no", "yes")

    assert store.champion_version() == "1"
    version = store.client.get_model_version_by_alias(settings.model_name, CHAMPION)
    run = store.client.get_run(version.run_id)
    assert run.data.tags["streamfit.reason"] == "bootstrap"
    assert 0 < run.data.metrics["holdout_loss"] < 0.69  # better than a coin flip on log loss
    assert message.metrics["loss"] == pytest.approx(run.data.metrics["holdout_loss"])


def test_without_a_test_set_the_holdout_figure_is_from_rows_the_model_never_saw(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    """With 30% of the labels flipped, a model scored on rows it trained on looks far better than it is
    (the predictor then compares live answers with a figure they can never reach, and raises drift
    alarms on an unchanged world). The version's holdout accuracy must match fresh rows' instead."""
    noisy = churn_csv(tmp_path / "noisy.csv", rows=3000, seed=3)
    fresh = churn_csv(tmp_path / "fresh.csv", rows=3000, seed=4)
    for seed, path in enumerate((noisy, fresh)):
        df = pd.read_csv(path)
        flip = np.random.default_rng(seed).random(len(df)) < 0.3
        df["churned"] = np.where(flip, np.where(df.churned == "yes", "no", "yes"), df.churned)
        df.to_csv(path, index=False)
    settings = settings_factory(data=noisy, target="churned", max_rounds=300)
    assert settings.test_data_path is None
    message = bootstrap(settings)
    store = ModelStore(settings)
    bundle = store.fetch_bundle(message.uri, message.sha256)
    frame = pd.read_csv(fresh)
    predicted, _ = bundle.predict(frame.drop(columns="churned").to_dict("records"))
    on_fresh = float(np.mean(np.array(predicted) == frame.churned.to_numpy()))
    assert abs(message.metrics["accuracy"] - on_fresh) < 0.05, (message.metrics, on_fresh)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data", "/nonexistent/x.csv"], "'/nonexistent/x.csv' does not exist; set --data / STREAMFIT_DATA"),
        (["--target", "nope"], "target column 'nope' is not in the data"),
        (["--target", "constant"], "target column 'constant' has a single value"),
    ],
)
def test_bad_input_is_one_clear_line(
    settings_factory: SettingsFactory, tmp_path: Path, args: list[str], expected: str
) -> None:
    data = churn_csv(tmp_path / "churn.csv", rows=300)
    df = pd.read_csv(data)
    df["constant"] = "same"
    df.to_csv(data, index=False)
    settings = settings_factory()
    result = run_cli(settings, "--data", str(data), "--target", "churned", *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("streamfit bootstrap: error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]


def test_unreachable_broker_is_one_clear_line(settings_factory: SettingsFactory, tmp_path: Path) -> None:
    from streamfit.kafka_server import free_port

    settings = settings_factory(bootstrap_servers=f"127.0.0.1:{free_port()}")
    data = churn_csv(tmp_path / "churn.csv", rows=300)
    result = run_cli(settings, "--data", str(data), "--target", "churned")
    assert result.returncode == 2
    assert "no Kafka broker answered" in result.stderr and "STREAMFIT_BOOTSTRAP_SERVERS" in result.stderr
