"""The recovery report: ``docs/recovery.md`` (tables), one PNG plot per stream, and the raw JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.recovery.evaluate import (
    GOAL_WITHIN,
    NO_DRIFT_FLOOR,
    NO_DRIFT_WINDOW,
    PRE_DRIFT,
    ROLLING,
    TOLERANCE,
    StreamResult,
)


@dataclass(frozen=True)
class RunInfo:
    command: str
    date: str
    machine: str
    commit: str
    broker: str
    settings: dict[str, Any]
    versions: dict[str, str]


def _f(value: float, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.1f}"


def _recovery(value: int | None) -> str:
    return "not recovered" if value is None else f"{value:,}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def plot(result: StreamResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.2))
    step = 10
    colours = {"served": "#1f77b4", "frozen": "#7f7f7f", "river": "#2ca02c"}
    names = {"served": "served (streamfit)", "frozen": "frozen first model", "river": result.river}
    for key, series in result.rolling.items():
        ax.plot(
            [i * step for i in range(len(series))],
            series,
            label=names[key],
            color=colours[key],
            linewidth=1.6 if key == "served" else 1.1,
        )
    for version, first in result.swaps[1:]:
        ax.axvline(first, color="#ff7f0e", linewidth=0.8, alpha=0.7)
        ax.text(
            first,
            1.0,
            f"v{version}",
            transform=ax.get_xaxis_transform(),
            fontsize=7,
            color="#ff7f0e",
            ha="center",
            va="bottom",
        )
    for drift in result.drifts:
        ax.axvline(drift.at, color="#d62728", linestyle="--", linewidth=1.2)
        ax.text(drift.at, 0.02, " drift", transform=ax.get_xaxis_transform(), color="#d62728", fontsize=8)
    ax.set_xlabel("request")
    ax.set_ylabel(f"{result.metric}, rolling over {ROLLING}")
    ax.set_title(f"{result.label}: {result.description}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_table(results: Sequence[StreamResult]) -> list[str]:
    lines = [
        "| stream | drift | served | frozen | River | requests to recovery | served − River at +5,000 "
        f"| worst {NO_DRIFT_WINDOW:,} vs frozen | versions | goals met |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        worst = _signed(r.worst_vs_frozen)
        versions = f"{len(r.swaps)}"
        if r.drifts:
            for d in r.drifts:
                goals = f"recovery {_yes(d.goal_recovery)}, mean {_yes(d.goal_mean)}"
                lines.append(
                    f"| {r.label} | request {d.at:,} | {_f(d.served_mean)} | {_f(d.frozen_mean)} | {_f(d.river_mean)} "
                    f"| {_recovery(d.recovered_after)} | {_signed(d.gap_at_goal)} | {worst} | {versions} | {goals} |"
                )
        else:
            ok = not math.isnan(r.worst_vs_frozen) and r.worst_vs_frozen >= NO_DRIFT_FLOOR
            m = r.means
            lines.append(
                f"| {r.label} | none | {_f(m['served'])} | {_f(m['frozen'])} | {_f(m['river'])} | – | – | {worst} "
                f"| {versions} | never below frozen − 0.5: {_yes(ok)} |"
            )
    return lines


def stream_section(r: StreamResult, plot_name: str) -> list[str]:
    promoted = sum(1 for c in r.cycles if c["state"] == "promoted")
    out = [
        f"### {r.label}",
        "",
        f"{r.description}. Task {r.task}; metric {r.metric}. {r.requests:,} requests replayed in {r.seconds:,.0f} s "
        f"({r.requests / max(r.seconds, 1e-9):,.0f}/s); unanswered: {r.unanswered}; duplicate answers: {r.duplicates}."
        + (
            f" Load average during the replay (the machine is shared): mean {r.load['mean']:.1f}, "
            f"max {r.load['max']:.1f}."
            if r.load
            else ""
        ),
        f"Trainer cycles: {len(r.cycles)} ({promoted} promoted); versions that answered: "
        + ", ".join(f"v{v} from request {i:,}" for v, i in r.swaps)
        + ".",
        "",
        f"![{r.label}]({plot_name})",
        "",
    ]
    if r.drifts:
        out += [
            "| drift at request | served before | frozen before | requests to recovery | served − River at +5,000 "
            "| served after | frozen after | River after |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for d in r.drifts:
            out.append(
                f"| {d.at:,} | {_f(d.pre_level)} | {_f(d.frozen_pre)} | {_recovery(d.recovered_after)} "
                f"| {_signed(d.gap_at_goal)} | {_f(d.served_mean)} | {_f(d.frozen_mean)} | {_f(d.river_mean)} |"
            )
        out.append("")
    out += [
        f"Whole replay: served {_f(r.means['served'])}, frozen {_f(r.means['frozen'])}, River {_f(r.means['river'])}; "
        f"worst {NO_DRIFT_WINDOW:,}-request window of served − frozen: {_signed(r.worst_vs_frozen)} "
        f"(ending at request {r.worst_vs_frozen_at:,}).",
        "",
        "| requests | served | frozen | River | versions answering (answers) | unanswered |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for w in r.windows:
        versions = ", ".join(f"v{v} ({n:,})" for v, n in w.versions.items())
        out.append(
            f"| {w.start:,}–{w.stop - 1:,} | {_f(w.served)} | {_f(w.frozen)} | {_f(w.river)} | {versions} "
            f"| {w.unanswered} |"
        )
    out += ["", "Trainer cycles (from MLflow; time in seconds after the first request):", ""]
    if r.cycles:
        out += [
            "| started | reason | outcome | version | seconds | observations |",
            "| ---: | --- | --- | ---: | ---: | ---: |",
        ]
        for c in r.cycles:
            out.append(
                f"| {c['started_s']:,.0f} | {c['reason']} | {c['state']} | {c['version'] or '–'} "
                f"| {'running' if c['seconds'] is None else _f(c['seconds'], 0)} | {c['rows_observations'] or '–'} |"
            )
    else:
        out.append("none")
    trouble = {k: v for k, v in r.problems.items() if v}
    if trouble:
        out += ["", "Errors in the services' logs (first lines):", ""]
        for service, lines in trouble.items():
            out.append(f"- {service} ({r.problem_counts.get(service, 0)} lines):")
            out += [f"  - `{line.strip()}`" for line in lines]
    out.append("")
    return out


RUN_IT = [
    "## Run it",
    "",
    "```",
    "make kafka-jars && .venv/bin/pip install -e '.[bench]'       # the broker's jars, River",
    "python -m benchmarks.recovery --quick                          # development: ~2 minutes, .streamfit/recovery/",
    "python -m benchmarks.recovery --stream sea --seed 2 --width 2000   # one stream, gradual drift",
    "python -m benchmarks.recovery --stream agrawal --label-delay 30 --set HALF_LIFE=1000",
    "python -m benchmarks.recovery --stream csv --csv data.parquet --target y --drift-at 20000",
    "python -m benchmarks.recovery --suite                          # this page: agrawal, sea, none; seed 1",
    "python -m benchmarks.recovery --suite --streams agrawal,sea,friedman,adult --seeds 1,2,3 --out /tmp/r",
    "```",
    "",
    "Streams: `agrawal`, `sea`, `sine`, `stagger`, `mixed`, `led` (ten classes), `hyperplane`, `friedman` "
    "(regression), `none`, `adult`, `csv`; `--broker tansu` "
    "runs on the embedded broker; `--bootstrap-servers` on a running one. The services' logs stay in "
    "`.streamfit/recovery-logs/<stream>/`; the raw numbers per window are in `recovery.json` next to this page.",
    "",
]


def write(
    results: Sequence[StreamResult],
    info: RunInfo,
    out: Path,
    doc_name: str = "recovery.md",
    failures: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write the plots, the markdown and the JSON into ``out``; returns the markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    for r in results:
        name = f"recovery-{r.label}.png"
        plot(r, out / name)
        r.plot = name
        sections += stream_section(r, name)
    settings = ", ".join(f"`{k}={v}`" for k, v in info.settings.items())
    lines = [
        "# Recovery evaluation",
        "",
        "How soon the loop learns after a drift: labelled streams replayed through the real services (a broker, "
        "`streamfit predictor` and `streamfit trainer` as processes, MLflow, the public topics only), compared "
        "request by request with the frozen first model and with an online learner (River) on the same rows.",
        "",
        "Command:",
        "",
        "```",
        info.command,
        "```",
        "",
        f"Date {info.date}; machine {info.machine}; commit `{info.commit}`; broker {info.broker}.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in info.versions.items())}.",
        f"Settings: {settings}.",
        "",
        "How to read it:",
        "",
        "- Requests are the stream's rows after the base rows (`streamfit bootstrap` trains version 1 on those), "
        "sent at the rate above; each true label goes out on `labels` the label delay after its prediction arrives.",
        "- *served*: what the service answered; *frozen*: version 1 (loaded from the MLflow store) on the same rows; "
        "*River*: an online learner that saw the base rows, then predicts each request and learns it once its "
        "label would have arrived (the label delay in requests). All three are scored on the same (answered) rows.",
        f"- *requests to recovery*: requests after the drift until the served metric, rolling over {ROLLING} requests "
        f"(windows wholly after the drift), is within {TOLERANCE:g} points of River's rolling metric or of the "
        f"pre-drift level (served, {PRE_DRIFT:,} requests before the drift), and stays so for {ROLLING} requests.",
        f"- Goals (issue 12): after an abrupt drift, recovered by {GOAL_WITHIN:,} requests and the post-drift mean at "
        f"least River's; the frozen model stays down; without drift, no {NO_DRIFT_WINDOW:,}-request window more "
        f"than {-NO_DRIFT_FLOOR:g} points below the frozen model.",
        "",
        "## Summary",
        "",
        *summary_table(results),
        "",
        *([f"Failed streams: {'; '.join(f'{label}: {why}' for label, why in failures)}", ""] if failures else []),
        *RUN_IT,
        "## Streams",
        "",
        *sections,
    ]
    doc = out / doc_name
    doc.write_text("\n".join(lines))
    raw = {"info": info.__dict__, "streams": [r.to_json() for r in results], "failures": list(failures)}
    (out / (Path(doc_name).stem + ".json")).write_text(json.dumps(raw, indent=1, ensure_ascii=False))
    return doc
