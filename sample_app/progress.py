"""What the user sees: a live panel on a terminal (a log line now and then elsewhere), and the
summary table at the end."""

from __future__ import annotations

import logging
import math
import sys
from typing import Literal, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from streamfit.sample_app.stats import Metric, Snapshot, Summary

log = logging.getLogger("sample_app")

ProgressMode = Literal["auto", "rich", "log", "off"]
LOG_EVERY = 5.0  # seconds between two progress lines when the output is not a terminal


def format_metric(metric: Metric, value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.1%}" if metric == "accuracy" else f"{value:.4g}"


def metric_label(metric: Metric, short: bool = False) -> str:
    if metric == "accuracy":
        return "accuracy"
    return "MAE" if short else "mean absolute error"


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


class View(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...

    def close(self, snapshot: Snapshot | None) -> None: ...


def render_snapshot(s: Snapshot, title: str = "streamfit sample app") -> RenderableType:
    grid = Table.grid(padding=(0, 3))
    for _ in range(3):
        grid.add_column()
    drift = "none" if s.drift_at is None else f"from request {s.drift_at:,}" + (" (on)" if s.sent > s.drift_at else "")
    grid.add_row(
        f"sent [bold]{s.sent:,}[/]" + (f" / {s.count:,}" if s.count else ""),
        f"answered [bold]{s.answered:,}[/]",
        f"in flight [bold]{s.in_flight:,}[/]",
    )
    grid.add_row(
        f"throughput [bold]{s.throughput:,.1f}/s[/]",
        f"latency p50 [bold]{_ms(s.latency_p50_ms)}[/]",
        f"p99 [bold]{_ms(s.latency_p99_ms)}[/]",
    )
    grid.add_row(
        f"{metric_label(s.metric, short=True)} [bold]{format_metric(s.metric, s.rolling)}[/] (last {s.rolling_n:,})",
        f"model [bold cyan]{s.version or '–'}[/] ({s.swaps} swap{'' if s.swaps == 1 else 's'})",
        f"labels [bold]{s.labels_sent:,}[/] sent, {s.labels_pending:,} due",
    )
    grid.add_row(f"drift {drift}", f"elapsed {s.elapsed:,.1f} s", "")
    parts: list[RenderableType] = []
    if s.count:
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=s.count, completed=s.sent, width=50), f"{s.sent / s.count:.0%}")
        parts.append(bar)
    parts.append(grid)
    return Panel(Group(*parts), title=title, title_align="left", expand=False)


class RichView:
    """A panel redrawn in place; the loop calls ``update`` at the rate it wants (no thread)."""

    def __init__(self, console: Console) -> None:
        self._live = Live(console=console, auto_refresh=False, transient=False)
        self._live.start()

    def update(self, snapshot: Snapshot) -> None:
        self._live.update(render_snapshot(snapshot), refresh=True)

    def close(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self._live.update(render_snapshot(snapshot), refresh=True)
        self._live.stop()


class LogView:
    """A progress line every few seconds, for logs and pipes."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self._every = every
        self._next = 0.0

    def update(self, snapshot: Snapshot) -> None:
        if snapshot.elapsed >= self._next:
            self._next = snapshot.elapsed + self._every
            self._line(snapshot)

    def close(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self._line(snapshot)

    @staticmethod
    def _line(s: Snapshot) -> None:
        log.info(
            "sent %d, answered %d, in flight %d, labels %d, %.1f/s, p50 %s, p99 %s, %s %s, model %s",
            s.sent,
            s.answered,
            s.in_flight,
            s.labels_sent,
            s.throughput,
            _ms(s.latency_p50_ms),
            _ms(s.latency_p99_ms),
            metric_label(s.metric),
            format_metric(s.metric, s.rolling),
            s.version or "-",
        )


class NoView:
    def update(self, snapshot: Snapshot) -> None:
        pass

    def close(self, snapshot: Snapshot | None) -> None:
        pass


def make_view(mode: ProgressMode, console: Console | None = None) -> View:
    if mode == "off":
        return NoView()
    console = console or Console(stderr=True)
    if mode == "rich" or (mode == "auto" and console.is_terminal and sys.stderr.isatty()):
        return RichView(console)
    return LogView()


def render_summary(summary: Summary) -> RenderableType:
    """The end-of-run table: counts, latency, the metric per version and around each swap."""
    m = summary.metric
    main = Table(
        title="sample app summary" + (" (interrupted)" if summary.interrupted else ""),
        show_header=False,
        title_justify="left",
    )
    main.add_column(style="bold")
    main.add_column(max_width=70)
    rows = [
        ("requests sent", f"{summary.sent:,}"),
        ("answered", f"{summary.answered:,}"),
        ("unanswered (lost)", f"{summary.unanswered:,}"),
        (
            "labels sent",
            f"{summary.labels_sent:,}" + (f" ({summary.labels_unsent:,} never sent)" if summary.labels_unsent else ""),
        ),
        ("duration", f"{summary.elapsed:,.1f} s"),
        ("throughput", f"{summary.throughput:,.1f} answers/s"),
        (
            "latency p50 / p90 / p99 / max",
            " / ".join(
                _ms(v)
                for v in (
                    summary.latency_p50_ms,
                    summary.latency_p90_ms,
                    summary.latency_p99_ms,
                    summary.latency_max_ms,
                )
            ),
        ),
        (f"{metric_label(m)}, whole run", format_metric(m, summary.overall)),
    ]
    if summary.duplicates or summary.ignored or summary.invalid or summary.send_errors:
        rows.append(
            (
                "duplicates / other clients' / invalid / send errors",
                f"{summary.duplicates} / {summary.ignored} / {summary.invalid} / {summary.send_errors}",
            )
        )
    if summary.drift:
        rows.append(("drift", summary.drift))
    if summary.plot:
        rows.append(("plot", str(summary.plot)))
    for name, value in rows:
        main.add_row(name, value)
    tables: list[RenderableType] = [main]
    if summary.versions:
        versions = Table(title="by model version", title_justify="left")
        for column in ("version", "answered", "with truth", metric_label(m)):
            versions.add_column(column, justify="right")
        for v in summary.versions:
            versions.add_row(v.version, f"{v.answered:,}", f"{v.scored:,}", format_metric(m, v.metric))
        tables.append(versions)
    if summary.swaps:
        swaps = Table(
            title=f"model swaps ({metric_label(m)} over up to {summary.window} answers each side)", title_justify="left"
        )
        for column in ("from → to", "first request", "time", "before", "after"):
            swaps.add_column(column, justify="right")
        for s in summary.swaps:
            swaps.add_row(
                f"{s.from_version} → {s.to_version}",
                f"{s.request_index:,}",
                f"{s.elapsed:,.1f} s",
                f"{format_metric(m, s.before)} (n={s.before_n})",
                f"{format_metric(m, s.after)} (n={s.after_n})",
            )
        tables.append(swaps)
    return Group(*tables)
