"""Multi-stream batching equals separate per-stream segmenters; resets and ends are per stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.multistream import MultiStreamSegmenter, zip_streams
from vidseg.engine.schedule import Schedule
from vidseg.engine.video import read_frames


def test_batched_streams_match_independent_segmenters(tiny_bundle: Path, sample_clip) -> None:
    clip = [f.image for f in read_frames(sample_clip, max_frames=24)]
    streams = [clip[0:8], clip[8:16][::-1], clip[16:21]]  # stream 2 ends after 5 frames
    resets = {(1, 3)}  # (stream, tick): a cut on stream 1 only
    multi = MultiStreamSegmenter(tiny_bundle, streams=3)
    singles = [Segmenter(tiny_bundle) for _ in streams]
    for tick in range(8):
        frames = [s[tick] if tick < len(s) else None for s in streams]
        for i in range(3):
            if (i, tick) in resets:
                multi.reset(i)
                singles[i].reset()
        results = multi.step(frames)
        for i, frame in enumerate(frames):
            if frame is None:
                assert results[i] is None
                continue
            want = singles[i].step(frame).labels
            got = results[i].labels
            # batched convolutions may round differently from batch 1: allow rare flips
            assert (got == want).mean() >= 0.999, (tick, i)
            for name, value in singles[i].state.tensors.items():
                np.testing.assert_allclose(multi.state.tensors[name][i], value[0], atol=1e-4)
    assert results[2] is None and multi._frames == [8, 8, 5]


@pytest.mark.parametrize("family", ["keyframe", "netwarp"])
def test_keyframe_and_netwarp_streams_match_independent_segmenters(
        family: str, request: pytest.FixtureRequest, sample_clip) -> None:  # fmt: skip
    """Per-stream schedules (keyframe: key and current rows in the same tick, grouped into two
    runs) and per-stream flow (netwarp) give what one Segmenter per stream gives."""
    bundle = request.getfixturevalue(f"tiny_{family}_bundle")
    clip = [f.image for f in read_frames(sample_clip, max_frames=30)]
    streams = [clip[0:10], clip[10:20], clip[20:26]]  # stream 2 ends early
    resets = {(0, 4), (1, 1)}  # cuts put the streams' key frames out of step
    schedule = Schedule("fixed", 3) if family == "keyframe" else None
    multi = MultiStreamSegmenter(bundle, streams=3, schedule=schedule)
    singles = [Segmenter(bundle, schedule=schedule) for _ in streams]
    mixed_ticks = 0
    for tick in range(10):
        frames = [s[tick] if tick < len(s) else None for s in streams]
        for i in range(3):
            if (i, tick) in resets:
                multi.reset(i)
                singles[i].reset()
        results = multi.step(frames)
        flags = set()
        for i, frame in enumerate(frames):
            if frame is None:
                assert results[i] is None
                continue
            want = singles[i].step(frame)
            got = results[i]
            assert got.key_frame == want.key_frame, (tick, i)
            flags.add(got.key_frame)
            assert (got.labels == want.labels).mean() >= 0.999, (tick, i)
            if want.scores is not None:
                assert np.abs(got.scores.astype(int) - want.scores).max() <= 1, (tick, i)
            for (_, mine), (_, theirs) in zip(multi.aux[i], singles[i].aux, strict=True):
                # each stream's flow runs against its own previous frame (an untrained net's
                # outputs barely react to the flow, so check the flow's input directly)
                np.testing.assert_array_equal(mine._previous, theirs._previous)
        mixed_ticks += flags == {True, False}
    if family == "keyframe":
        assert mixed_ticks >= 3  # key and current rows really shared ticks


def test_wrong_frame_count_rejected(tiny_bundle: Path) -> None:
    with pytest.raises(ValueError, match="expected 2 frames"):
        MultiStreamSegmenter(tiny_bundle, streams=2).step([np.zeros((8, 8, 3), np.uint8)])


def test_zip_streams_pads_ended_sources() -> None:
    ticks = list(zip_streams([[1, 2, 3], [10]]))
    assert ticks == [[1, 10], [2, None], [3, None]]
