"""The sample of served vectors that observations carry for the trainer's train/serve skew check.

The first request of every batch keeps the vector the model read; when its observation is
written (at once for a carried label, later when the label arrives), the vector rides along in
``served``. Most observations carry nothing, so the serving path pays one dict lookup per
observation. Vectors whose label never comes are forgotten oldest first.
"""

from __future__ import annotations

from typing import Final

import numpy as np

KEEP: Final = 1000  # vectors waiting for their label


class ServedSample:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.waiting: dict[str, list[float]] = {}  # request id -> served vector; ``waiting.pop`` is the hot path

    def sample(self, request_id: str, matrix: np.ndarray) -> None:
        """Keep the first row of a batch's matrix for its request."""
        if not len(matrix):
            return
        waiting = self.waiting
        waiting[request_id] = matrix[0].tolist()
        while len(waiting) > self.keep:
            del waiting[next(iter(waiting))]
