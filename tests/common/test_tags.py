"""The MLflow tag vocabulary is named in one module (issue 14)."""

from __future__ import annotations

import re
from pathlib import Path

from streamfit.common import tags

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("streamfit.cli", "streamfit.demo", "streamfit.operations", "streamfit.broker")  # not tags


def test_no_tag_name_is_written_outside_the_vocabulary() -> None:
    literal = re.compile(r"""["'](streamfit\.[a-z_]+)["']""")
    stray = []
    for folder in ("common", "predictor", "trainer", "streamfit", "sample_app", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "common" / "tags.py":
                continue
            for found in literal.findall(path.read_text()):
                if found not in MODULES:
                    stray.append(f"{path.relative_to(ROOT)}: {found}")
    assert stray == []


def test_every_name_is_a_distinct_streamfit_tag() -> None:
    names = {k: v for k, v in vars(tags).items() if k.isupper() and k not in ("PREFIX", "MAX_TAG")}
    assert len(names) > 40
    assert all(value.startswith(tags.PREFIX) for value in names.values())
    assert len(set(names.values())) == len(names)
