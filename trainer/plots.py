"""The plots every cycle leaves on its MLflow run: how the search went, what the model uses, and
how far the newest observations moved from the base data (the drift report). Built on
``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot state), so they are
safe in a service thread and need no display."""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streamfit.trainer.search import Trial

TOP_FEATURES = 20


def search_history(trials: Sequence[Trial], metric: str, optimizer: str) -> Figure:
    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ok = [t for t in trials if t.ok]
    numbers = [t.number for t in ok]
    losses = [t.loss for t in ok]
    ax.scatter(numbers, losses, s=18, color="tab:blue", label="trial (CV loss)")
    best, running = math.inf, []
    for loss in losses:
        best = min(best, loss)
        running.append(best)
    ax.step(numbers, running, where="post", color="tab:orange", label="best so far")
    failed = [t.number for t in trials if not t.ok]
    if failed:
        ax.scatter(failed, [max(losses, default=0.0)] * len(failed), marker="x", color="tab:red", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"cross-validated {metric}")
    ax.set_title(f"{optimizer} search: {len(trials)} trials")
    ax.legend(loc="upper right")
    figure.tight_layout()
    return figure


def feature_importance(booster: lgb.Booster, names: Sequence[str]) -> Figure:
    gains = np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64)
    order = np.argsort(gains)[::-1][:TOP_FEATURES][::-1]
    figure = Figure(figsize=(7, max(2.5, 0.3 * len(order) + 1)), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.barh([names[i] for i in order], gains[order], color="tab:green")
    ax.set_xlabel("total gain")
    ax.set_title("feature importance")
    figure.tight_layout()
    return figure


def drift_report(psi: dict[str, float], drift: float, auc: float, rows: tuple[int, int]) -> Figure:
    """Per-feature PSI of the newest observations against the base data, with the adversarial score."""
    names = sorted(psi, key=lambda name: psi[name])[-TOP_FEATURES:]
    figure = Figure(figsize=(7, max(2.5, 0.3 * len(names) + 1.2)), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    values = [psi[name] for name in names]
    colors = ["tab:red" if v > 0.25 else "tab:orange" if v > 0.1 else "tab:blue" for v in values]
    ax.barh(names, values, color=colors)
    for line in (0.1, 0.25):
        ax.axvline(line, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("population stability index (0.1 moderate, 0.25 large)")
    ax.set_title(
        f"drift: newest {rows[1]} observations vs {rows[0]} base rows\n"
        f"adversarial validation AUC {auc:.3f}, drift score {drift:.3f}"
    )
    figure.tight_layout()
    return figure
