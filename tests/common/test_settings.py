import argparse
import logging

import pytest

from streamfit.common.errors import ConfigError
from streamfit.common.logs import log_settings
from streamfit.common.settings import Settings, add_settings_flags, load_settings, settings_from_args


def parse(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_settings_flags(parser, ("kafka", "model", "predictor", "trainer", "general"))
    return settings_from_args(parser.parse_args(argv))


def test_default_runs_the_demo_with_no_settings() -> None:
    s = load_settings()
    assert s.bootstrap_servers == "localhost:9092"
    assert s.topic("requests") == "streamfit.requests"
    assert s.tracking_uri.startswith("sqlite:///") and s.tracking_uri.endswith("mlflow.db")
    assert s.data_path.name == "adult_train.csv.gz" and s.data_path.exists()


def test_flag_beats_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse([]).retrain_every == 1000
    monkeypatch.setenv("STREAMFIT_RETRAIN_EVERY", "250")
    assert parse([]).retrain_every == 250
    assert parse(["--retrain-every", "40"]).retrain_every == 40


def test_every_field_has_a_flag_and_an_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_settings_flags(parser, ("kafka", "model", "predictor", "trainer", "general"))
    flags = {a.dest.removeprefix("setting_") for a in parser._actions if a.dest.startswith("setting_")}
    assert flags == set(Settings.model_fields)
    monkeypatch.setenv("STREAMFIT_OPTIMIZER", "gp")
    monkeypatch.setenv("STREAMFIT_SASL_MECHANISM", "PLAIN")
    s = load_settings()
    assert (s.optimizer, s.sasl_mechanism) == ("gp", "PLAIN")


def test_mlflow_tracking_uri_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert load_settings().tracking_uri == "http://mlflow:5000"
    assert parse(["--mlflow-tracking-uri", "sqlite:///x.db"]).tracking_uri == "sqlite:///x.db"


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(Exception, match="frozen"):
        s.retrain_every = 3  # type: ignore[misc]


def test_invalid_value_names_the_flag_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFIT_BATCH_SIZE", "zero")
    with pytest.raises(ConfigError, match=r"batch_size \(--batch-size / STREAMFIT_BATCH_SIZE\)"):
        load_settings()


def test_sasl_needs_a_mechanism() -> None:
    with pytest.raises(ConfigError, match="SASL_MECHANISM"):
        load_settings(security_protocol="SASL_SSL")


def test_secrets_are_masked_when_logged(caplog: pytest.LogCaptureFixture) -> None:
    s = load_settings(
        security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="svc",
        sasl_password="hunter2-secret", ssl_password="keypass-secret",
        mlflow_tracking_uri="http://user:mlflow-secret@host:5000",
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        log_settings(logging.getLogger("test"), s, "predictor")
    text = caplog.text
    assert "svc" in text
    for secret in ("hunter2-secret", "keypass-secret", "mlflow-secret"):
        assert secret not in text
    assert s.sasl_password is not None and s.sasl_password.get_secret_value() == "hunter2-secret"


def test_kafka_client_config_carries_security_settings() -> None:
    from streamfit.common.kafka import client_config

    s = load_settings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
        sasl_password="p", ssl_cafile="/tmp/ca.pem",
    )  # fmt: skip
    config = client_config(s)
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("u", "p")
    assert config["ssl_cafile"] == "/tmp/ca.pem"
    plain = client_config(load_settings())
    assert "sasl_mechanism" not in plain and "ssl_cafile" not in plain


def test_readme_configuration_table_is_current() -> None:
    from scripts.settings_table import README, updated

    text = README.read_text()
    assert updated(text) == text, "README's configuration table is stale: run `python -m scripts.settings_table`"
    for name in Settings.model_fields:
        env = "MLFLOW_TRACKING_URI" if name == "mlflow_tracking_uri" else f"STREAMFIT_{name.upper()}"
        assert f"`{env}`" in text
