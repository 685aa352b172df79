"""The shipped example scripts run as users would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_perception_loop_example(tiny_bundle: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "samples" / "perception_loop.py"),
            "--model",
            str(tiny_bundle),
            "--frames",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "processed" in lines[-1] and "of 20 camera frames" in lines[-1]
    assert sum(line.startswith("t=") for line in lines) >= 1
