"""``--plot FILE.png``: rolling accuracy (or error) and latency over time, a marker at every model
swap and one at the drift point. Drawn with matplotlib's Agg canvas directly, so the process-wide
backend is left alone (the demo may plot too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from streamfit.common.errors import ConfigError
from streamfit.sample_app.progress import metric_label
from streamfit.sample_app.stats import StreamStats, Summary

MAX_POINTS = 20_000  # latency dots drawn; more are thinned evenly
MIN_SCORED = 20  # the rolling metric is drawn once this many answers (or the window) are scored


def save_plot(path: Path, stats: StreamStats, summary: Summary) -> Path:
    elapsed = np.asarray(stats.elapsed)
    rolling = np.asarray(stats.rolling_series)
    scored = np.cumsum(np.isfinite(np.asarray(stats.values)))
    rolling = np.where(scored >= min(summary.window, MIN_SCORED), rolling, np.nan)  # no noisy start
    latency_ms = np.asarray(stats.latency) * 1000

    fig = Figure(figsize=(11, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    swaps = len(summary.swaps)
    title = f"streamfit sample app: {summary.answered:,} answers, {swaps} model swap{'' if swaps == 1 else 's'}"
    if summary.drift_at is not None:
        title += f", drift from request {summary.drift_at:,}"
    fig.suptitle(title)

    top.plot(
        elapsed,
        rolling,
        color="tab:blue",
        linewidth=1.6,
        label=f"{metric_label(summary.metric)}, last {summary.window} answers",
    )
    top.set_ylabel(metric_label(summary.metric))
    if summary.metric == "accuracy":
        top.yaxis.set_major_formatter(PercentFormatter(1.0))
        finite = rolling[np.isfinite(rolling)]
        if finite.size:
            top.set_ylim(max(0.0, float(finite.min()) - 0.05), min(1.0, float(finite.max()) + 0.05))
    top.grid(alpha=0.3)

    if latency_ms.size:
        step = max(1, latency_ms.size // MAX_POINTS)
        bottom.scatter(
            elapsed[::step], latency_ms[::step], s=3, color="tab:gray", alpha=0.3, linewidths=0, label="one request"
        )
        series = pd.Series(latency_ms)
        span = max(5, min(200, latency_ms.size // 10))
        bottom.plot(
            elapsed,
            series.rolling(span, min_periods=1).median(),
            color="tab:green",
            linewidth=1.4,
            label=f"p50 of last {span}",
        )
        bottom.plot(
            elapsed,
            series.rolling(span, min_periods=1).quantile(0.99),
            color="tab:orange",
            linewidth=1.2,
            label=f"p99 of last {span}",
        )
        positive = latency_ms[latency_ms > 0]
        if positive.size and positive.max() / max(positive.min(), 1e-3) > 100:
            bottom.set_yscale("log")
    bottom.set_ylabel("latency, sent → answered (ms)")
    bottom.set_xlabel("seconds since the first request")
    bottom.grid(alpha=0.3)

    for i, swap in enumerate(summary.swaps):
        for axis in (top, bottom):
            axis.axvline(
                swap.elapsed,
                color="tab:purple",
                linestyle="--",
                linewidth=1.2,
                label="model swap" if i == 0 and axis is top else None,
            )
        top.annotate(
            f"→ {swap.to_version}",
            xy=(swap.elapsed, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            color="tab:purple",
            fontsize=9,
        )
    if summary.drift_elapsed is not None:
        for axis in (top, bottom):
            axis.axvline(
                summary.drift_elapsed, color="tab:red", linewidth=1.6, label="drift starts" if axis is top else None
            )
    top.legend(loc="lower left", fontsize=9)
    bottom.legend(loc="upper left", fontsize=8, markerscale=3)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    except OSError as exc:
        raise ConfigError(f"cannot write the plot {str(path)!r}: {exc}; set --plot") from exc
    return path
