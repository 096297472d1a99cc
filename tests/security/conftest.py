"""The security tests use the predictor suite's fixtures (a reader of any topic)."""

from tests.predictor.conftest import reader  # noqa: F401 - fixture
