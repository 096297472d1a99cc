"""The fuzz test runs a predictor like the predictor suite does: the same fixtures."""

from tests.predictor.conftest import make_settings, mlflow_home, models_factory, reader  # noqa: F401 - fixtures
