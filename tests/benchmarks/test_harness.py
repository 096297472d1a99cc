"""The benchmark harness in its tiniest mode: every row of its table carries a number.

Figures are not checked: the machine is shared, and performance is never asserted in a test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_the_tiny_run_fills_every_row_of_the_table_with_a_number(broker: str, tmp_path: Path) -> None:
    out, doc = tmp_path / "rows.json", tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--bootstrap-servers", broker, "--json", str(out),
         "--doc", str(doc)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    measures = {row["measure"] for row in rows}
    assert measures == {"throughput", "latency", "exactly-once", "fast path", "hot swap", "memory", "trainer"}
    for row in rows:
        assert isinstance(row["value"], (int, float)) and math.isfinite(row["value"]), row
        assert row["goal"] == "" or row["met"] in (True, False), row
    assert sum(1 for row in rows if row["goal"]) == 14  # every goal of the issues has its row
    text = doc.read_text()
    assert "| measure | figure | value | goal | met |" in text and "python -m benchmarks --tiny" in text
    assert "| throughput | predictor / echo |" in done.stdout
