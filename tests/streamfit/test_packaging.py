"""The wheel: one top-level package, ``streamfit``, with the parts and their data inside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("common", "predictor", "trainer", "sample_app")


def build_wheel(tmp_path: Path) -> zipfile.ZipFile:
    """The wheel pip builds from a copy of the tree (links kept as links), so the checkout stays clean."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in (*PARTS, "streamfit"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheel"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("streamfit-*.whl")
    return zipfile.ZipFile(wheel)


def test_the_wheel_installs_the_parts_inside_streamfit_and_no_other_top_level_package(tmp_path: Path) -> None:
    for part in PARTS:  # in the tree, each part is reached through a link inside streamfit/
        link = ROOT / "streamfit" / part
        assert link.is_symlink() and link.resolve() == (ROOT / part).resolve(), link
    names = build_wheel(tmp_path).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"streamfit"}
    for part in PARTS:  # every module of the part, under its streamfit name
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / part).glob("*.py")}
        assert {f"streamfit/{m}" for m in modules} <= set(names), part
        assert f"streamfit/{part}/py.typed" in names
    data = {"README.md", "adult_train.csv.gz", "adult_test.csv.gz"}
    assert {f"streamfit/common/data/{name}" for name in data} <= set(names)
    assert "streamfit/kafka/pom.xml" in names
