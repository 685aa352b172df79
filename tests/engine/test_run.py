"""``engine.run.segment``: the one call behind ``vidseg-run``, ``vidseg-batch`` and the Triton
client, against a plain reference loop (``Segmenter.step`` frame by frame, state carried)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.engine import result as result_module
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


@pytest.mark.parametrize("threads", [1, 2, None])
def test_opencv_threads_hold_for_the_run_and_are_restored(
    tiny_bundle: Path, sample_clip: Path, tmp_path: Path, threads: int | None
):
    seen: list[int] = []

    class Watching(Segmenter):
        def step(self, frame, **kwargs):
            seen.append(cv2.getNumThreads())
            return super().step(frame, **kwargs)

    before = cv2.getNumThreads()
    options = RunOptions(max_frames=3, opencv_threads=threads)
    segment(sample_clip, [Masks(str(tmp_path / "m.mkv"))], Watching(tiny_bundle), options)
    assert seen == [before if threads is None else threads] * 3
    assert cv2.getNumThreads() == before


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


def test_out_size_applies_to_every_output_from_one_upsampling(
    sample_clip: Path, tmp_path: Path, monkeypatch
):
    """--out-size: the overlay, the masks (ids, PNGs, colours) and the confidence maps are at
    the output size, all from one upsampling per frame at that size (none at the step's own
    size); the JSON lines, at the frame's size, add one there."""
    fits: Counter[tuple[int, int]] = Counter()
    real = result_module.to_frame

    def counted(outputs, placement, height, width):
        fits[height, width] += 1
        return real(outputs, placement, height, width)

    monkeypatch.setattr(result_module, "to_frame", counted)
    info, frames = VideoInfo.from_path(sample_clip), 3
    width, height = 160, round(info.height * 160 / info.width)
    outputs = [
        Overlay(str(tmp_path / "o.mp4")),
        Masks(str(tmp_path / "ids.mkv")),
        Masks(str(tmp_path / "png")),
        Masks(str(tmp_path / "colours.mp4")),
        Scores(str(tmp_path / "scores")),
        Jsonl(str(tmp_path / "f.jsonl")),
    ]
    options = RunOptions(max_frames=frames, out_size=(width, 0))
    stats = segment(sample_clip, outputs, None, options)  # the default: scores and logits
    assert stats.frames == frames and stats.output_size == (width, height)
    assert fits == {(height, width): frames, (info.height, info.width): frames}
    for video in ("o.mp4", "colours.mp4"):
        got = VideoInfo.from_path(tmp_path / video)
        assert (got.width, got.height, got.frame_count) == (width, height, frames)
    seg = Segmenter(warmup=False)  # the same path by hand: prepare, step, at the output size
    clip = read_frames(sample_clip, max_frames=frames)
    want = [seg.step(seg.prepare(f)).at_size(height, width) for f in clip]
    pngs = sorted((tmp_path / "png").glob("*.png"))
    score_pngs = sorted((tmp_path / "scores").glob("*.png"))
    ids = list(read_label_frames(tmp_path / "ids.mkv"))
    assert len(pngs) == len(score_pngs) == len(ids) == frames
    for result, png, score, mask in zip(want, pngs, score_pngs, ids):
        np.testing.assert_array_equal(mask, result.labels)
        np.testing.assert_array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), result.labels)
        np.testing.assert_array_equal(cv2.imread(str(score), cv2.IMREAD_UNCHANGED), result.scores)
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert len(lines) == frames and all(line["ms"]["post"] > 0 for line in lines)
