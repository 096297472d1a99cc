"""The errors streamfit raises on purpose, each with a message a user can act on.

    StreamfitError
    ├── ConfigError        a setting, file or column is wrong: the message names what to change
    ├── BrokerUnavailable  Kafka did not answer within the timeout
    │   └── BrokerRefused  Kafka answered but refused the connection: credentials or TLS settings
    ├── ModelStoreError    MLflow could not be reached or did not hold what was asked
    ├── BundleError        a model bundle is corrupt, forged, or does not fit the serving schema
    ├── TrainServeSkew     the predictor encoded features otherwise than the trainer's pipeline
    └── SearchFailed       every trial of a hyper-parameter search failed

The CLI prints any of them as one line and exits non-zero; services log them and carry on where
carrying on is safe (a failed hot swap keeps the old model).
"""


class StreamfitError(Exception):
    """Base of every error raised on purpose by streamfit."""


class ConfigError(StreamfitError):
    """A setting, file or column is wrong; the message says which and how to fix it."""


class BrokerUnavailable(StreamfitError):
    """The Kafka broker could not be reached within the configured timeout."""


class BrokerRefused(BrokerUnavailable):
    """The broker answered but refused the client: wrong credentials, or a TLS certificate problem."""


class ModelStoreError(StreamfitError):
    """The MLflow model store could not be reached or did not hold what was asked."""


class BundleError(StreamfitError):
    """A model bundle is corrupt, does not match its sha256, or does not fit the schema."""


class TrainServeSkew(StreamfitError):
    """The predictor fed its model other values than the trainer's pipeline makes of the same
    raw features: a model trained now would learn from another encoding than it is served."""


class SearchFailed(StreamfitError):
    """Every trial of a search failed; the message lists their errors."""
