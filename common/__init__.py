"""What two or more streamfit services share: settings, messages, Kafka wiring, the feature
pipeline, the model bundle, the MLflow model store, and where the world changed (``change``: the
predictor's drift signal and the trainer's training window)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streamfit")  # the installed distribution's version, for every part
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
