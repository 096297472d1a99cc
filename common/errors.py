"""The errors streamfit raises on purpose, each with a message a user can act on.

    StreamfitError
    ├── ConfigError        a setting, file or column is wrong: the message names what to change
    ├── BrokerUnavailable  Kafka did not answer within the timeout
    │   └── BrokerRefused  Kafka answered but refused the connection: credentials or TLS settings
    ├── ModelStoreError    MLflow could not be reached or did not hold what was asked
    └── BundleError        a model bundle is corrupt, forged, or does not fit the serving schema

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
