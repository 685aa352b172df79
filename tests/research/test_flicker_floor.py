"""benchmarks.flicker_floor: the truth scores perfectly; each degradation costs what it should."""

from __future__ import annotations

import subprocess
import sys

import flicker_floor
import numpy as np
import pytest
from flicker_floor import (
    VOTES,
    both_flows,
    bundle_rows,
    floor_rows,
    score,
    through_grid,
    voted,
)

from vidseg.benchmarks.accuracy import evaluate_bundle
from vidseg.engine.segmenter import Segmenter
from vidseg.models.data import LabelledFrame


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
    run = subprocess.run(
        [sys.executable, flicker_floor.__file__, "--data", ".", "--grid", "80by112"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "expected HxW" in run.stderr
    assert "Traceback" not in run.stderr


def test_missing_data_is_one_line(tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, flicker_floor.__file__, "--data", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr and run.stderr.strip()
    assert len(run.stderr.strip().splitlines()) == 1


def painted(labels: list[np.ndarray]) -> list[np.ndarray]:
    """RGB frames of the label maps (one grey per class, textured) for the flow to follow."""
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 40, size=(64, 160), dtype=np.uint8)
    out = []
    for t, label in enumerate(labels):
        grey = (label.astype(np.uint16) * 20 % 256).astype(np.uint8)
        square = label == 8  # the texture moves with the square, the background's stays
        moved = np.roll(texture, 3 * t, axis=1)[:, :96]
        grey = grey + np.where(square, moved, texture[:, :96])
        out.append(np.repeat(grey[..., None], 3, axis=2))
    return out


def test_flow_rows_follow_the_moving_square() -> None:
    labels = moving_square(8)
    rows = dict(floor_rows(labels, [], [], frames=painted(labels)))
    assert rows["carried"]["miou"] > 90  # the flow moves the square with it
    assert rows["steadied"]["miou"] > 95  # a clean annotation has little to steady
    tiles, per_frame = rows["perfect, tile memory"], rows["perfect, per frame"]
    assert tiles["miou"] > 85 and per_frame["miou"] > 85
    # edges the memory carries move as the flow says, not as the square does
    assert tiles["excess_flicker"] > per_frame["excess_flicker"] > 0
    assert rows["shift 1, tile memory"]["miou"] < tiles["miou"]


def test_a_vote_over_carried_frames_removes_a_one_frame_blip() -> None:
    labels = moving_square(8)
    frames = painted(labels)
    blipped = [label.copy() for label in labels]
    blipped[5][48:60, 60:80] = 5  # a patch of background called class 5 for one frame
    flows = both_flows(frames)
    assert all((a == b).all() for a, b in zip(voted(blipped, flows, 0, 0), blipped))
    causal = voted(blipped, flows, 2, 0)
    assert (causal[5][48:60, 60:80] == 3).all()  # two frames before outvote it
    assert (causal[6][48:60, 60:80] == 3).all()  # one frame before does not
    centred = voted(blipped, flows, 1, 1)
    assert (centred[5][48:60, 60:80] == 3).all()
    for window in (causal, centred):  # the moving square stays where it is
        assert all(
            (w[20:44, 40:50] == label[20:44, 40:50]).mean() > 0.95
            for w, label in zip(window[2:], labels[2:])
        )
    before = score(labels, blipped.__getitem__)["excess_flicker"]
    assert score(labels, causal.__getitem__)["excess_flicker"] < before


def test_bundle_rows_score_the_engine_and_its_votes(tiny_perframe_bundle) -> None:
    labels = moving_square(6)
    frames = painted(labels)
    rows = dict(
        bundle_rows(str(tiny_perframe_bundle), labels, frames, both_flows(frames), threads=1)
    )
    name = tiny_perframe_bundle.name.removesuffix(".vidseg")
    assert list(rows) == [name] + [
        f"{name}, vote of {b + a + 1} ({b} before" + (f", {a} after)" if a else ")")
        for b, a in VOTES
    ]
    frames_in = [
        LabelledFrame(f"drive_{i:03d}.png", f, lb) for i, (f, lb) in enumerate(zip(frames, labels))
    ]
    reference = evaluate_bundle(Segmenter(tiny_perframe_bundle, threads=1), frames_in)
    assert rows[name]["miou"] == pytest.approx(reference.metrics.miou, abs=1e-6)
    assert rows[name]["excess_flicker"] == pytest.approx(reference.flicker.excess, abs=1e-6)
