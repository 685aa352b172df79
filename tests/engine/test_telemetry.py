"""engine/telemetry.py and Segmenter.stats(): percentiles over a window, rolling FPS, resets,
drops, result age."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vidseg.engine.segmenter import Segmenter
from vidseg.engine.telemetry import Telemetry


def test_window_percentiles_and_fps() -> None:
    t = Telemetry(window=10)
    for i in range(30):  # only the last 10 count: 20..29 ms, one result every 40 ms
        t.record(step_ms=float(i), age_ms=2.0 * i, end_ns=i * 40_000_000)
    s = t.snapshot()
    assert (s.frames, s.window) == (30, 10)
    assert s.step_ms_p50 == pytest.approx(np.percentile(np.arange(20, 30), 50))
    assert s.step_ms_p99 == pytest.approx(np.percentile(np.arange(20, 30), 99))
    assert s.age_ms_p50 == pytest.approx(2 * s.step_ms_p50)
    assert s.fps == pytest.approx(25.0)
    assert "frames 30 | 25.0 fps | step p50 24.5 ms" in s.line()


def test_empty_and_counters() -> None:
    t = Telemetry()
    s = t.snapshot()
    assert s.frames == 0 and s.step_ms_p50 is None and s.fps is None and "-" in s.line()
    t.note_reset()  # a fresh stream's reset: not counted
    t.record(1.0, 1.0)
    t.note_reset()
    t.note_reset()  # twice in a row: one reset
    t.note_dropped(3)
    s = t.snapshot()
    assert (s.resets, s.dropped, s.fps) == (1, 3, None)  # one frame: no rate yet
    with pytest.raises(ValueError, match="dropped frames must be >= 0"):
        t.note_dropped(-1)
    with pytest.raises(ValueError, match="window must be >= 1"):
        Telemetry(window=0)


def test_segmenter_stats_and_age(tiny_bundle) -> None:
    seg = Segmenter(tiny_bundle)
    frame = np.full((64, 96, 3), 90, np.uint8)
    seg.reset()
    results = [seg.step(frame) for _ in range(4)]
    for r in results:  # no capture time given: the age is the step itself
        assert r.age_ms == pytest.approx(r.timings.total_ms, abs=0.5)
    captured = time.monotonic_ns()
    time.sleep(0.05)
    late = seg.step(frame, captured_ns=captured)
    assert late.age_ms >= 50 + late.timings.total_ms - 0.5
    prepared = seg.prepare(frame)
    time.sleep(0.02)
    assert seg.step(prepared).age_ms >= 20  # from prepare (the decode thread) to the result
    seg.reset()
    seg.note_dropped(2)
    s = seg.stats()
    assert (s.frames, s.resets, s.dropped, s.window) == (6, 1, 2, 6)
    assert 0 < s.step_ms_p50 <= s.step_ms_p99 and s.fps > 0


class DroppingSource:
    """Frames, with a ``dropped`` count that grows as LatestFrameSource's does."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.dropped = 0

    def __iter__(self):
        from fractions import Fraction

        from vidseg.engine.frame import Frame

        for i in range(self.n):
            self.dropped += 2  # two stale frames skipped before each one delivered
            yield Frame(np.full((64, 96, 3), 10 * i, np.uint8), i, i, Fraction(1, 25))


class NullSink:
    def write(self, image, pts=None) -> None:
        pass


def test_pipeline_passes_source_drops_to_stats(tiny_bundle) -> None:
    from vidseg.engine.pipeline import segment_video

    seg = Segmenter(tiny_bundle)
    source = DroppingSource(5)
    stats = segment_video(seg, source, NullSink(), lambda f, r: r.labels, depth=1)
    assert stats.frames == 5
    snapshot = seg.stats()
    assert snapshot.frames == 5 and snapshot.resets == 0
    assert snapshot.dropped == source.dropped == 10  # all noted by the last frame's step


def test_stream_counts_a_live_sources_drops_and_its_capture_times(tiny_bundle) -> None:
    """``Segmenter.stream`` over a ``LatestFrameSource`` (outside vidseg-run): the frames the
    source dropped are in ``stats().dropped``, and each result carries the time its frame was
    received, ``age_ms`` measured from it."""
    import threading
    from fractions import Fraction

    from vidseg.engine.frame import Frame
    from vidseg.engine.sources import LatestFrameSource

    go = threading.Event()

    def camera():
        for i in range(6):  # frame 0; then 1..5 at once, while the consumer waits
            yield Frame(np.full((64, 96, 3), 40 * i, np.uint8), i, i, Fraction(1, 25))
            if i == 0:
                go.wait(10)

    seg = Segmenter(tiny_bundle)
    with LatestFrameSource(camera()) as source:
        results = seg.stream(source)
        first = next(results)
        go.set()
        for _ in range(1000):  # until frames 1..5 have all arrived (1..4 replaced unseen)
            if source.received == 6:
                break
            time.sleep(0.01)
        rest = list(results)
    assert [r.index for r in [first, *rest]] == [0, 1] and source.dropped == 4
    assert seg.stats().dropped == 4
    for r in (first, *rest):
        assert r.captured_ns is not None and r.captured_ns <= time.monotonic_ns()
        assert r.age_ms >= r.timings.total_ms - 0.5
