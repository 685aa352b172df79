"""benchmarks.flicker_floor: the truth scores perfectly; each degradation costs what it should."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from vidseg.benchmarks.flicker_floor import floor_rows, through_grid


def moving_square(frames: int = 6) -> list[np.ndarray]:
    """A 24x24 square of class 8 on class 3, moving 3 px right per frame, void in one corner."""
    out = []
    for t in range(frames):
        label = np.full((64, 96), 3, np.uint8)
        label[20:44, 10 + 3 * t : 34 + 3 * t] = 8
        label[:4, :4] = 11
        out.append(label)
    return out


def test_a_fine_grid_keeps_an_aligned_square() -> None:
    label = moving_square(1)[0]
    label[:4, :4] = 3
    assert (through_grid(label, (64, 96)) == label).all()
    coarse = through_grid(label, (8, 12))
    assert coarse.shape == label.shape and 0 < (coarse != label).mean() < 0.1


def test_rows_rank_as_the_degradations_do() -> None:
    rows = dict(floor_rows(moving_square(), [(8, 12), (32, 48)], [2]))
    assert rows["truth"]["miou"] == 100 and rows["truth"]["excess_flicker"] == 0
    assert rows["truth"]["flicker"] > 0  # the square moves
    assert 0 < rows["grid 32x48"]["excess_flicker"] < rows["grid 8x12"]["excess_flicker"]
    assert rows["shift 2"]["excess_flicker"] > 0 and rows["shift 2"]["miou"] < 100
    held = rows["held"]
    assert held["flicker"] < rows["truth"]["flicker"] and held["miou"] < 100


def test_a_bad_grid_is_one_line() -> None:
    run = subprocess.run([sys.executable, "-m", "vidseg.benchmarks.flicker_floor", "--data", ".",
                          "--grid", "80by112"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and "expected HxW" in run.stderr
    assert "Traceback" not in run.stderr


def test_missing_data_is_one_line(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "vidseg.benchmarks.flicker_floor", "--data",
                          str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr and run.stderr.strip()
    assert len(run.stderr.strip().splitlines()) == 1
