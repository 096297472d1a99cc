"""Small data sets the tests build."""

from __future__ import annotations

import numpy as np
import pandas as pd


def slanted(rows: int, seed: int) -> pd.DataFrame:
    """SEA's rule: a class on each side of the line x1 + x2 = 8; x3 and the colour are noise."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.uniform(0, 10, rows), "x2": rng.uniform(0, 10, rows),
                          "x3": rng.uniform(0, 10, rows), "colour": rng.choice(["red", "blue"], rows)})  # fmt: skip
    frame["y"] = np.where(frame.x1 + frame.x2 <= 8, "low", "high")
    return frame
