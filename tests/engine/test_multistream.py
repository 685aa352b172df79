"""Multi-stream batching equals separate per-stream segmenters; resets and ends are per stream."""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.frame import Frame
from vidseg.engine.multistream import MultiStreamSegmenter, zip_streams
from vidseg.engine.schedule import Schedule
from vidseg.engine.segmenter import Result
from vidseg.engine.video import read_frames


def drive(
    multi: MultiStreamSegmenter,
    singles: list[Segmenter],
    streams: list[list],
    resets: set[tuple[int, int]],
) -> Iterator[tuple[int, int, Result, Result]]:
    """Tick ``multi`` and one ``Segmenter`` per stream through ``streams`` (a stream that has
    ended sends None), resetting (stream, tick) pairs in both; yields (tick, stream, batched
    result, single result) for every frame after checking that idle streams got None."""
    for tick in range(max(map(len, streams))):
        frames = [s[tick] if tick < len(s) else None for s in streams]
        for i in range(len(streams)):
            if (i, tick) in resets:
                multi.reset(i)
                singles[i].reset()
        results = multi.step(frames)
        for i, frame in enumerate(frames):
            if frame is None:
                assert results[i] is None
                continue
            got, want = results[i], singles[i].step(frame)
            # batched convolutions may round differently from batch 1: allow rare flips
            assert (got.labels == want.labels).mean() >= 0.999, (tick, i)
            yield tick, i, got, want


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_split_bundle"])
def test_batched_streams_match_independent_segmenters(
    bundle: str, sample_clip, request: pytest.FixtureRequest
) -> None:
    """Also for a split bundle: the batch goes through its encode graph, then its step."""
    bundle = request.getfixturevalue(bundle)
    clip = [f.image for f in read_frames(sample_clip, max_frames=24)]
    streams = [clip[0:8], clip[8:16][::-1], clip[16:21]]  # stream 2 ends after 5 frames
    multi = MultiStreamSegmenter(bundle, streams=3)
    singles = [Segmenter(bundle) for _ in streams]
    for _, i, _, _ in drive(multi, singles, streams, resets={(1, 3)}):  # a cut on stream 1
        for name, value in singles[i].state.tensors.items():
            np.testing.assert_allclose(multi.state.tensors[name][i], value[0], atol=1e-4)
    assert [slot.frames for slot in multi.slots] == [8, 8, 5]


@pytest.mark.parametrize("family", ["keyframe", "netwarp"])
def test_keyframe_and_netwarp_streams_match_independent_segmenters(
    family: str, request: pytest.FixtureRequest, sample_clip
) -> None:
    """Per-stream schedules (keyframe: key and current rows in the same tick, grouped into two
    runs) and per-stream flow (netwarp) give what one Segmenter per stream gives."""
    bundle = request.getfixturevalue(f"tiny_{family}_bundle")
    clip = [f.image for f in read_frames(sample_clip, max_frames=30)]
    streams = [clip[0:10], clip[10:20], clip[20:26]]  # stream 2 ends early
    schedule = Schedule("fixed", 3) if family == "keyframe" else None
    multi = MultiStreamSegmenter(bundle, streams=3, schedule=schedule)
    singles = [Segmenter(bundle, schedule=schedule) for _ in streams]
    flags: dict[int, set[bool]] = {}
    # the cuts put the streams' key frames out of step
    for tick, i, got, want in drive(multi, singles, streams, resets={(0, 4), (1, 1)}):
        assert got.key_frame == want.key_frame, (tick, i)
        flags.setdefault(tick, set()).add(got.key_frame)
        if want.scores is not None:
            assert np.abs(got.scores.astype(int) - want.scores).max() <= 1, (tick, i)
        for (_, mine), (_, theirs) in zip(multi.aux[i], singles[i].aux, strict=True):
            # each stream's flow runs against its own previous frame (an untrained net's
            # outputs barely react to the flow, so check the flow's input directly)
            np.testing.assert_array_equal(mine._previous, theirs._previous)
    if family == "keyframe":  # key and current rows really shared ticks
        assert sum(f == {True, False} for f in flags.values()) >= 3


def test_wrong_frame_count_rejected(tiny_bundle: Path) -> None:
    with pytest.raises(ValueError, match="expected 2 frames"):
        MultiStreamSegmenter(tiny_bundle, streams=2).step([np.zeros((8, 8, 3), np.uint8)])


def test_zip_streams_pads_ended_sources() -> None:
    ticks = list(zip_streams([[1, 2, 3], [10]]))
    assert ticks == [[1, 10], [2, None], [3, None]]


def test_streams_on_device_tensors_match_independent_segmenters(
    tiny_bundle, sample_clip, monkeypatch
) -> None:
    """The IO-binding path on the CPU (state rows as runtime tensors, as on a GPU): ticks where
    every stream runs keep the state as OrtValues; an idle stream and a reset copy it through
    the host; every stream's labels still equal an independent ``Segmenter``'s."""
    import functools

    import onnxruntime as ort

    from vidseg.engine import loaded as loaded_module
    from vidseg.engine.backends import BackendOptions

    monkeypatch.setattr(
        loaded_module, "BackendOptions", functools.partial(BackendOptions, io_binding=True)
    )
    clip = [f.image for f in read_frames(sample_clip, max_frames=16)]
    multi = MultiStreamSegmenter(tiny_bundle, streams=2)
    singles = [Segmenter(tiny_bundle) for _ in range(2)]
    streams = [clip[0:8], clip[8:16][::-1]]
    list(drive(multi, singles, [s[:3] for s in streams], resets=set()))
    assert all(isinstance(v, ort.OrtValue) for v in multi.state.tensors.values())
    list(drive(multi, singles, [streams[0][3:8], streams[1][3:5]], resets={(0, 1)}))
    assert [slot.frames for slot in multi.slots] == [8, 5]


def test_a_poisoned_row_is_reset_and_recovers_the_others_untouched(
    tiny_bundle: Path, sample_clip, caplog: pytest.LogCaptureFixture
) -> None:
    """NaN in stream 1's state row: that row is reset before it runs (logged once, counted in
    its stats), its labels are a fresh stream's from then on; streams 0 and 2 go on as if
    nothing happened. Without the guard the row stayed NaN for good."""
    clip = [f.image for f in read_frames(sample_clip, max_frames=18)]
    streams = [clip[0:6], clip[6:12], clip[12:18]]
    multi = MultiStreamSegmenter(tiny_bundle, streams=3)
    singles = [Segmenter(tiny_bundle) for _ in streams]
    list(drive(multi, singles, [s[:3] for s in streams], resets=set()))
    name = multi.manifest.state[-1].input
    poisoned = np.array(multi.state.tensors[name])
    poisoned[1].flat[poisoned[1].size // 2] = np.nan
    multi.state.tensors[name] = poisoned
    singles[1].reset()  # what the guard should amount to for stream 1
    with caplog.at_level(logging.WARNING, logger="vidseg.engine"):
        list(drive(multi, singles, [s[3:] for s in streams], resets=set()))
    for i, single in enumerate(singles):
        for key, value in single.state.tensors.items():
            np.testing.assert_allclose(multi.state.tensors[key][i], value[0], atol=1e-4)
    assert multi.state.nonfinite() is None
    assert multi.nonfinite_resets == [0, 1, 0]
    assert [multi.stats(i).resets for i in range(3)] == [0, 1, 0]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("stream 1: frame 3: ") and name in lines[0]


def test_each_row_resets_at_its_own_cut(tiny_bundle: Path, sample_clip) -> None:
    """A ``Frame`` with ``discontinuity`` on stream 0 and a new frame size on stream 1 reset
    those rows only, as one ``Segmenter`` per stream does."""
    tb = Fraction(1, 25)
    clip = [f.image for f in read_frames(sample_clip, max_frames=18)]
    a = [Frame(f, i, i, tb, discontinuity=i == 3) for i, f in enumerate(clip[0:6])]
    b = [
        Frame(f if i < 2 else cv2.resize(f, (320, 180)), i, i, tb) for i, f in enumerate(clip[6:12])
    ]
    c = [Frame(f, i, i, tb) for i, f in enumerate(clip[12:18])]
    multi = MultiStreamSegmenter(tiny_bundle, streams=3)
    singles = [Segmenter(tiny_bundle) for _ in range(3)]
    for tick in range(6):
        results = multi.step([a[tick], b[tick], c[tick]])
        for i, frame in enumerate((a[tick], b[tick], c[tick])):
            want = singles[i].step(frame)
            assert (results[i].labels == want.labels).mean() >= 0.999, (tick, i)
            assert results[i].timestamp == frame.timestamp_s
    for i, single in enumerate(singles):
        for key, value in single.state.tensors.items():
            np.testing.assert_allclose(multi.state.tensors[key][i], value[0], atol=1e-4)
    assert multi.cut_resets == [1, 1, 0] == [s.cut_resets for s in singles]


def test_age_and_stats_are_measured(tiny_bundle: Path) -> None:
    """``age_ms`` runs from the frame's capture time (a ``Frame``'s ``captured_ns``, else the
    call), not 0.0; ``stats()`` counts like ``Segmenter.stats()``, per stream and in all."""
    multi = MultiStreamSegmenter(tiny_bundle, streams=2)
    image = np.full((64, 96, 3), 90, np.uint8)
    second_ago = time.monotonic_ns() - 1_000_000_000
    frame = Frame(image, 0, 0, Fraction(1, 25), captured_ns=second_ago)
    for _ in range(3):
        plain, captured = multi.step([image, frame])
        assert 0 < plain.age_ms < 1000 and plain.age_ms >= plain.timings.total_ms - 0.5
        assert captured.age_ms >= 1000 and captured.captured_ns == second_ago
    multi.step([image, None])
    multi.note_dropped(1, 4)
    multi.reset(0)
    s0, s1, both = multi.stats(0), multi.stats(1), multi.stats()
    assert (s0.frames, s0.resets, s0.dropped) == (4, 1, 0)
    assert (s1.frames, s1.resets, s1.dropped) == (3, 0, 4)
    assert (both.frames, both.resets, both.dropped, both.window) == (7, 1, 4, 7)
    assert s1.age_ms_p50 >= 1000 and 0 < s0.step_ms_p50 <= s0.step_ms_p99
