"""The predictor: answers feature requests in micro-batches and hot-swaps models.

``from streamfit.predictor import Predictor`` is the in-process entry point (see ``predictor.service``); the
import is lazy so that ``streamfit --help`` does not load LightGBM and Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamfit.predictor.metrics import PredictorMetrics
    from streamfit.predictor.service import Predictor

__all__ = ["Predictor", "PredictorMetrics"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from streamfit.predictor.service import Predictor

        return Predictor
    if name == "PredictorMetrics":
        from streamfit.predictor.metrics import PredictorMetrics

        return PredictorMetrics
    raise AttributeError(f"module 'predictor' has no attribute {name!r}")
