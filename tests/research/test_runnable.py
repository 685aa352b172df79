"""Every study in benchmarks/research/ runs as documented, ``python benchmarks/research/NAME.py``,
from any directory: its imports resolve with only vidseg installed and its parser builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RESEARCH = Path(__file__).resolve().parents[2] / "benchmarks" / "research"
STUDIES = sorted(p for p in RESEARCH.glob("*.py") if not p.name.startswith("_"))


def test_the_studies_are_found() -> None:
    assert {p.stem for p in STUDIES} >= {"flicker_floor", "scale_views", "signal_stress"}


@pytest.mark.parametrize("script", STUDIES, ids=lambda p: p.stem)
def test_help_runs_from_anywhere(script: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")


def test_research_is_not_packaged() -> None:
    """The wheel's packages (pyproject) do not include the studies."""
    import tomllib

    pyproject = tomllib.loads((RESEARCH.parents[1] / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    assert not [p for p in packages if "research" in p]
