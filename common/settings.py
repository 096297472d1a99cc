"""One frozen settings object for every service.

Precedence: command-line flag, then ``STREAMFIT_*`` environment variable, then default. Every field
is both (``retrain_every`` is ``--retrain-every`` and ``STREAMFIT_RETRAIN_EVERY``); MLflow's own
``MLFLOW_TRACKING_URI`` is honoured too. Fields carry a ``group`` so that each command shows only the
flags it uses in ``--help``.
"""

from __future__ import annotations

import argparse
import types
import typing
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamfit.common.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "data"
ADULT_TRAIN = DATA_DIR / "adult_train.csv.gz"
ADULT_TEST = DATA_DIR / "adult_test.csv.gz"

Group = Literal["kafka", "model", "predictor", "trainer", "general"]


def _field(default: Any, help: str, group: Group, **kwargs: Any) -> Any:
    return Field(default, description=help, json_schema_extra={"group": group}, **kwargs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMFIT_", frozen=True, populate_by_name=True, extra="forbid")

    # --- Kafka --------------------------------------------------------------------------
    bootstrap_servers: str = _field("localhost:9092", "Kafka bootstrap servers, comma-separated.", "kafka")
    topic_prefix: str = _field("streamfit.", "Prefix of every topic name.", "kafka")
    partitions: int = _field(
        3, "Partitions of requests and labels (must match: they are co-partitioned).", "kafka", ge=1
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = _field(
        "PLAINTEXT", "How clients talk to the broker.", "kafka"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = _field(
        None, "SASL mechanism (with SASL_PLAINTEXT or SASL_SSL).", "kafka"
    )
    sasl_username: str | None = _field(None, "SASL user name.", "kafka")
    sasl_password: SecretStr | None = _field(None, "SASL password (never logged).", "kafka")
    ssl_cafile: Path | None = _field(None, "CA certificate (PEM) that signed the broker's certificate.", "kafka")
    ssl_certfile: Path | None = _field(None, "Client certificate (PEM), for mutual TLS.", "kafka")
    ssl_keyfile: Path | None = _field(None, "Client private key (PEM), for mutual TLS.", "kafka")
    ssl_password: SecretStr | None = _field(None, "Password of the client key (never logged).", "kafka")
    ssl_check_hostname: bool = _field(True, "Check that the broker's certificate names its host.", "kafka")
    broker_timeout: float = _field(
        30.0, "Seconds to wait for the broker before giving up with an error.", "kafka", gt=0
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = _field(
        "at-least-once", "exactly-once uses Kafka transactions and read_committed readers.", "kafka"
    )
    kafka_client: Literal["kafka-python", "confluent"] = _field(
        "kafka-python",
        "The predictor's serving loop on kafka-python, or on librdkafka (confluent; pip install "
        "'streamfit[confluent]'): a third of the CPU per request, about twice the throughput "
        "(docs/benchmarks.md). Everything else stays on kafka-python.",
        "kafka",
    )

    # --- Model store ------------------------------------------------------------------------
    model_name: str = _field("streamfit", "Registered model name; also the key of retrain/models messages.", "model")
    home: Path = _field(Path(".streamfit"), "Working folder: local MLflow store, artifacts, caches.", "model")
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (default: a SQLite store in the working folder).",
        validation_alias=AliasChoices("mlflow_tracking_uri", "STREAMFIT_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        json_schema_extra={"group": "model"},
    )
    data: Path | None = _field(
        None, "Base data set, CSV or Parquet (default: the shipped UCI Adult training split).", "model"
    )
    test_data: Path | None = _field(
        None, "The base data set's own test split, if any (default: Adult's, with the default data).", "model"
    )
    target: str = _field("income", "Target column of the data set.", "model")

    # --- Predictor ------------------------------------------------------------------------------
    batch_size: int = _field(500, "Most requests answered by one predict call.", "predictor", ge=1)
    batch_timeout_ms: int = _field(20, "Longest wait for a batch to fill, in milliseconds.", "predictor", ge=0)
    retrain_every: int = _field(
        1000,
        "Ask for a retrain after this many labelled observations (0: never); after a drift alarm sooner, after "
        "an eighth, a quarter and a half of it, then this many again.",
        "predictor",
        ge=0,
    )
    pending_max: int = _field(200_000, "Most served requests kept while they wait for their label.", "predictor", ge=1)
    pending_max_age: float = _field(
        3600.0, "Seconds a served request waits for its label before it is dropped.", "predictor", gt=0
    )
    drift_window: int = _field(
        1000, "Served requests, and joined observations, in the sliding windows of the drift checks.", "predictor",
        ge=50,
    )  # fmt: skip
    drift_psi_threshold: float = _field(
        0.25, "Ask for a drift retrain when a feature's PSI over the window exceeds this (0: off).", "predictor", ge=0
    )
    drift_metric_drop: float = _field(
        0.05,
        "Ask for a drift retrain when live accuracy falls this far below the holdout's "
        "(regression: the mean absolute error rises by this share) (0: off).",
        "predictor",
        ge=0,
    )
    drift_cooldown: int = _field(
        5000, "Fewest requests a replica serves between two drift retrain requests.", "predictor", ge=0
    )
    interim_answers: bool = _field(
        True,
        "After a drift alarm, until a retrained model swaps in: answer through a small model learnt in the "
        "predictor from the labels since the change (only where the labels it was not fitted on show it clearly "
        "beats the answers served).",
        "predictor",
    )
    compiled_trees: bool = _field(
        False,
        "Predict through the model's trees compiled to native code (lleaves; pip install 'streamfit[fast]'): "
        "the prediction itself several times faster; each model serves through LightGBM until its compiled "
        "twin is ready and predicts the same.",
        "predictor",
    )
    missing_features: Literal["reject", "impute"] = _field(
        "reject", "A request without a feature of the schema: dead-letter it, or treat it as missing.", "general"
    )
    max_message_bytes: int = _field(1_000_000, "Larger messages are dead-lettered unread.", "general", ge=1024)
    metrics_port: int = _field(0, "Port of /metrics, /healthz and /readyz (0: off).", "general", ge=0, le=65535)

    # --- Trainer -------------------------------------------------------------------------------
    optimizer: Literal["tpe", "gp", "random"] = _field(
        "tpe", "Search: hyperopt TPE, scikit-optimize GP, or random.", "trainer"
    )
    trials: int = _field(20, "Most hyper-parameter trials per cycle.", "trainer", ge=1)
    time_budget: float = _field(
        600.0, "Most seconds of search per cycle (the trial running at the end finishes).", "trainer", gt=0
    )
    cv_folds: int = _field(3, "Folds of lgb.cv in each trial.", "trainer", ge=2)
    one_split_rows: int = _field(
        20_000,
        "Training rows from which a trial is scored on one held-out fifth of them instead of cv_folds "
        "folds (0: always the folds).",
        "trainer",
        ge=0,
    )
    max_rounds: int = _field(1000, "Most boosting rounds; early stopping picks fewer.", "trainer", ge=1)
    early_stopping: int = _field(30, "Rounds without improvement before lgb.cv stops.", "trainer", ge=1)
    holdout_share: float = _field(
        0.2, "Share of the newest observations held out to compare candidate and champion.", "trainer", gt=0, lt=1
    )
    half_life: float | None = _field(
        2000.0,
        "Recency weighting: an observation this many observations older weighs half (unset: all equal).",
        "trainer",
        gt=0,
    )
    window: int | None = _field(None, "Train on the newest N observations only (unset: all).", "trainer", ge=1)
    observation_weight: float = _field(
        3.0, "Weight of the newest observation relative to a base-data row.", "trainer", gt=0
    )
    promotion_margin: float = _field(
        0.0, "Promote only if the candidate's holdout loss is lower by more than this.", "trainer", ge=0
    )
    promotion_confidence: float = _field(
        0.95,
        "Promote only if a paired bootstrap over the holdout rows finds the candidate better with this "
        "confidence (0: any lower loss wins).",
        "trainer",
        ge=0,
        lt=1,
    )
    holdout_min: int = _field(
        500,
        "Once the newest observations held out reach this many rows they alone decide promotion "
        "(before that, the base data set's test split joins them).",
        "trainer",
        ge=1,
    )
    change_detection: bool = _field(
        True,
        "Find the latest step up in the served error (a concept change) and train on the rows after it.",
        "trainer",
    )
    linear_score: bool = _field(
        True,
        "Offer the trees a linear model's scores as extra inputs (a slanted boundary from a few hundred rows); "
        "a cycle keeps them when they lower its cross-validated loss by more than the folds' standard error.",
        "trainer",
    )
    pre_change_weight: float = _field(
        0.25,
        "After a detected change the cycle also trains with all rows from before it together weighing this "
        "share of the rows after it, and keeps them if the newest holdout prefers them with "
        "--promotion-confidence (0: the new rows alone).",
        "trainer",
        ge=0,
    )
    min_rows: int = _field(
        80,
        "A cycle with fewer training rows publishes nothing (just after a change of the world the first model "
        "trains on this many rows of the new one, if it beats the champion).",
        "trainer",
        ge=1,
    )
    objective: str | None = _field(None, "LightGBM objective (default follows the task).", "trainer")
    metric: str | None = _field(None, "LightGBM metric (default: binary_logloss, multi_logloss or l2).", "trainer")
    seed: int = _field(42, "Seed of the search and of LightGBM.", "trainer")
    num_threads: int = _field(
        0, "LightGBM threads for training (0: one below 20,000 training rows, all cores above).", "trainer", ge=0
    )
    parallel_trials: int = _field(
        0,
        "Trials run at once on this machine, in threads sharing the cores (tpe/random; 0: one per core, at most 4, "
        "below 20,000 training rows, one at a time above).",
        "trainer",
        ge=0,
    )
    spark_parallelism: int = _field(
        0,
        "Run N trials at a time on Spark with hyperopt's SparkTrials (tpe/random; needs the [spark] extra; 0: off).",
        "trainer",
        ge=0,
    )

    # --- General -------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _field("INFO", "Log level.", "general")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError("security_protocol SASL_* needs STREAMFIT_SASL_MECHANISM (--sasl-mechanism)")
        return self

    # --- Derived ----------------------------------------------------------------------------------
    @cached_property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.home.resolve() / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.home.resolve() / "artifacts"

    @property
    def data_path(self) -> Path:
        return self.data or ADULT_TRAIN

    @property
    def test_data_path(self) -> Path | None:
        if self.test_data is not None:
            return self.test_data
        return ADULT_TEST if self.data is None else None

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def group_id(self, service: str) -> str:
        """The consumer group of a service (``predictor``, ``trainer``) for this model."""
        return f"{self.topic_prefix}{self.model_name}.{service}"

    def masked(self) -> dict[str, Any]:
        """Resolved settings for the start-up log line: secrets stay masked."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                value = "**********"
            elif isinstance(value, Path):
                value = str(value)
            out[key] = value
        out["mlflow_tracking_uri"] = _mask_uri(self.tracking_uri)
        return out


def _mask_uri(uri: str) -> str:
    """Hide a password in a URI such as http://user:secret@host (MLflow allows them)."""
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        creds, _, host = rest.partition("@")
        return f"{scheme}://{creds.split(':', 1)[0]}:****@{host}"
    return uri


# --- Command-line flags ----------------------------------------------------------------------------


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_settings_flags(parser: argparse.ArgumentParser, groups: tuple[Group, ...]) -> None:
    """Add one flag per settings field of the given groups; an absent flag leaves env/default."""
    titles = {"kafka": "Kafka", "model": "model store and data", "predictor": "predictor",
              "trainer": "trainer", "general": "general"}  # fmt: skip
    for group in groups:
        arg_group = parser.add_argument_group(f"{titles[group]} settings (flag or environment)")
        for name, info in Settings.model_fields.items():
            extra = info.json_schema_extra
            if not isinstance(extra, dict) or extra.get("group") != group:
                continue
            env = "MLFLOW_TRACKING_URI" if name == "mlflow_tracking_uri" else f"STREAMFIT_{name.upper()}"
            default = info.default
            shown = "unset" if default is None else (default if not isinstance(default, Path) else str(default))
            help_text = f"{info.description} [env {env}; default {shown}]"
            kwargs: dict[str, Any] = {"dest": f"setting_{name}", "default": argparse.SUPPRESS, "help": help_text}
            choices = _literal_choices(info.annotation)
            if info.annotation is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif choices:
                kwargs["choices"] = choices
                kwargs["metavar"] = "{" + ",".join(choices) + "}"
            else:
                kwargs["metavar"] = name.upper()
            arg_group.add_argument(flag_name(name), **kwargs)


def _literal_choices(annotation: Any) -> list[str] | None:
    args = [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and typing.get_origin(args[0]) is Literal:
        return [str(a) for a in typing.get_args(args[0])]
    return None


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build the settings: flags given on the command line win over the environment."""
    overrides = {key.removeprefix("setting_"): value for key, value in vars(args).items() if key.startswith("setting_")}
    return load_settings(**overrides)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        raise ConfigError(
            f"invalid setting {field} ({flag_name(field)} / STREAMFIT_{field.upper()}): {first['msg']}"
        ) from exc
