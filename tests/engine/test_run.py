"""``engine.run.segment``: the one call behind ``vidseg-run``, ``vidseg-batch`` and the Triton
client, against a plain reference loop (``Segmenter.step`` frame by frame, state carried)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.engine.errors import UsageError, VideoIOError
from vidseg.engine.outputs import Jsonl, Masks, Overlay, Scores
from vidseg.engine.run import RunOptions, segment
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.video import VideoInfo, read_frames, read_label_frames

FRAMES = 12


def reference(bundle: Path, clip: Path, start: int = 0, stop: int = FRAMES) -> list[np.ndarray]:
    """Labels of frames ``start .. stop - 1``, the state reset at ``start`` and carried."""
    seg = Segmenter(bundle, warmup=False)
    frames = list(read_frames(clip, max_frames=stop))[start:]
    return [seg.step(f).labels for f in frames]


def test_outputs_equal_the_plain_loop(tiny_bundle: Path, sample_clip: Path, tmp_path: Path):
    outputs = [
        Overlay(str(tmp_path / "o.mp4")),
        Masks(str(tmp_path / "ids.mkv")),
        Masks(str(tmp_path / "png")),
        Jsonl(str(tmp_path / "f.jsonl")),
    ]
    stats = segment(sample_clip, outputs, tiny_bundle, RunOptions(max_frames=FRAMES))
    info = VideoInfo.from_path(sample_clip)
    assert stats.frames == FRAMES and stats.output_size == (info.width, info.height)
    assert VideoInfo.from_path(tmp_path / "o.mp4").frame_count == FRAMES
    want = reference(tiny_bundle, sample_clip)
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == FRAMES
    for got, png, expected in zip(read_label_frames(tmp_path / "ids.mkv"), pngs, want):
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), expected)
    lines = (tmp_path / "f.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(FRAMES))


def test_warmup_frames_are_stepped_not_written(
    tiny_bundle: Path, sample_clip: Path, tmp_path: Path
):
    """skip 3, warm up 2, stop at 10: frames 5..9 written, the state carried from frame 3."""
    out = tmp_path / "ids.mkv"
    options = RunOptions(max_frames=10, skip_frames=3, warmup_frames=2, zero_start=False)
    stats = segment(sample_clip, [Masks(str(out))], tiny_bundle, options)
    assert stats.frames == 5
    want = reference(tiny_bundle, sample_clip, start=3, stop=10)[2:]
    got = list(read_label_frames(out))
    assert len(got) == 5
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # the stepped-only frames changed the state: without them frame 5 comes out otherwise
    cold = reference(tiny_bundle, sample_clip, start=5, stop=10)
    assert any(not np.array_equal(a, b) for a, b in zip(want, cold))


def test_nothing_written_leaves_no_output(tiny_bundle: Path, sample_clip: Path, tmp_path: Path):
    out = tmp_path / "ids.mkv"
    options = RunOptions(max_frames=4, skip_frames=4)
    stats = segment(
        sample_clip, [Masks(str(out)), Jsonl(str(tmp_path / "f.jsonl"))], tiny_bundle, options
    )
    assert stats.frames == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_stepper_is_used_as_given(tiny_bundle: Path, sample_clip: Path, tmp_path: Path):
    class Counting(Segmenter):
        steps = 0

        def step(self, frame, **kwargs):
            Counting.steps += 1
            return super().step(frame, **kwargs)

    stepper = Counting(tiny_bundle, warmup=False)
    segment(sample_clip, [Masks(str(tmp_path / "m.mkv"))], stepper, RunOptions(max_frames=5))
    assert Counting.steps == 5


def test_outputs_are_checked_before_anything_opens(
    tiny_bundle: Path, sample_clip: Path, tmp_path: Path
):
    with pytest.raises(UsageError, match="masks go to a folder"):
        segment(sample_clip, [Masks(str(tmp_path / "m.txt"))], tiny_bundle)
    (tmp_path / "o.mp4").write_bytes(b"keep")
    with pytest.raises(UsageError, match="exists; pass --overwrite"):
        segment(sample_clip, [Overlay(str(tmp_path / "o.mp4"))], tiny_bundle)
    assert (tmp_path / "o.mp4").read_bytes() == b"keep"
    with pytest.raises(UsageError, match="share a path"):
        segment(sample_clip, [Overlay(str(tmp_path / "a.mp4")), Masks(str(tmp_path / "a.mp4"))])
    with pytest.raises(VideoIOError, match="output directory does not exist"):
        segment(sample_clip, [Overlay(str(tmp_path / "no" / "a.mp4"))], tiny_bundle)
    with pytest.raises(UsageError, match="confidence"):  # the tiny bundle has no scores
        segment(sample_clip, [Scores(str(tmp_path / "s"))], tiny_bundle, RunOptions(max_frames=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]
