"""The table: one row per figure, with its goal where the issue sets one, printed and written into
``docs/benchmarks.md`` between two markers (the hand-written analysis around them is kept)."""

from __future__ import annotations

import datetime
import math
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Row:
    measure: str
    figure: str
    value: float
    unit: str
    goal: str = ""
    met: bool | None = None

    def cells(self) -> list[str]:
        if math.isnan(self.value):
            shown = "n/a"
        elif abs(self.value) >= 100:
            shown = f"{self.value:,.0f}"
        elif abs(self.value) >= 10:
            shown = f"{self.value:.1f}"
        else:
            shown = f"{self.value:.3g}"
        met = "" if self.met is None else ("yes" if self.met else "**no**")
        return [self.measure, self.figure, f"{shown} {self.unit}".strip(), self.goal, met]


def table(rows: list[Row]) -> str:
    lines = ["| measure | figure | value | goal | met |", "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {total_kb / 1024**2:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{cpu}, {os.cpu_count()} cores{memory}, {system}"


def section(rows: list[Row], command: str, notes: list[str], started: datetime.datetime, seconds: float) -> str:
    body = [
        START,
        f"Last run: {started:%Y-%m-%d %H:%M} UTC, `{command}`, {seconds / 60:.1f} minutes.",
        f"Machine: {machine()}.",
        "",
        table(rows),
        "",
        *[f"- {note}" for note in notes],
        END,
    ]
    return "\n".join(body)


TEMPLATE = """# Benchmarks

`make bench` (or `python -m benchmarks`, `--quick` for a shorter run) starts a private Apache Kafka
from the cached jars, measures the predictor and the trainer against an echo ceiling and a
seed-style loop side by side, and rewrites the section between the markers below.

{generated}
"""


def write(rows: list[Row], command: str, notes: list[str], started: datetime.datetime, seconds: float,
          path: Path = DOC) -> None:  # fmt: skip
    generated = section(rows, command, notes, started, seconds)
    if path.exists() and START in (text := path.read_text()) and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: generated, text, flags=re.S)
    else:
        text = TEMPLATE.format(generated=generated)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
