"""The threaded pipeline against a plain sequential loop: same labels, in order, errors kept."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.errors import TruncatedVideoError
from vidseg.engine.frame import Frame
from vidseg.engine.pipeline import Prefetch, segment_video
from vidseg.engine.video import read_frames

N_FRAMES = 20


class ListSink:
    def __init__(self) -> None:
        self.items: list[tuple[np.ndarray, int | None]] = []
        self.threads: set[str] = set()

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        self.items.append((image.copy(), pts))
        self.threads.add(threading.current_thread().name)


@pytest.fixture(scope="module")
def frames(sample_clip: Path) -> list[Frame]:
    return list(read_frames(sample_clip, max_frames=N_FRAMES))


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_split_bundle"])
def test_pipeline_matches_sequential_loop(
    bundle: str, frames: list[Frame], request: pytest.FixtureRequest
) -> None:
    """Also for a split bundle, whose encoder runs in the decode thread."""
    seg = Segmenter(request.getfixturevalue(bundle))
    expected = [r.labels for r in seg.stream(f.image for f in frames)]
    sink, seen, threads = ListSink(), [], set()

    def on_frame(result) -> None:
        seen.append(result.index)
        threads.add(threading.current_thread().name)

    stats = segment_video(seg, iter(frames), sink, lambda f, r: r.labels, on_frame=on_frame)
    assert stats.frames == N_FRAMES and not stats.interrupted and stats.truncated is None
    assert len(stats.step_ms) == N_FRAMES and stats.key_frames == N_FRAMES
    for i, ((labels, pts), frame, want) in enumerate(zip(sink.items, frames, expected)):
        assert labels.shape == frame.image.shape[:2], "render gets labels at the frame's size"
        np.testing.assert_array_equal(labels, want, err_msg=f"frame {i}")
        assert pts == frame.pts
    assert seen == list(range(N_FRAMES, 2 * N_FRAMES))  # in order; the segmenter kept counting
    assert threads == {"render"} and sink.threads == {"encode"}  # two stages after the model
    cpu = stats.cpu  # each thread's CPU per frame; the rest of the process in other
    assert cpu is not None and cpu.frames == N_FRAMES and cpu.wall_s == stats.wall_s
    assert cpu.step_ms > 0 and min(cpu.decode_ms, cpu.render_ms, cpu.encode_ms) >= 0
    assert cpu.other_ms >= 0  # the four stages' sum is within the process's CPU time


def test_truncated_source_keeps_decoded_frames(tiny_bundle: Path, frames: list[Frame]) -> None:
    closed = []

    def source() -> Iterator[Frame]:
        try:
            yield from frames[:5]
            raise TruncatedVideoError("cut short", frames_decoded=5)
        finally:
            closed.append(True)

    sink = ListSink()
    stats = segment_video(Segmenter(tiny_bundle), source(), sink, lambda f, r: r.labels)
    assert stats.frames == len(sink.items) == 5
    assert isinstance(stats.truncated, TruncatedVideoError)
    assert closed == [True]  # the source generator was finalised


def test_render_error_propagates(tiny_bundle: Path, frames: list[Frame]) -> None:
    def render(frame: Frame, result) -> np.ndarray:
        if result.index >= 3:
            raise OSError("No space left on device")
        return result.labels

    with pytest.raises(OSError, match="No space left"):
        segment_video(Segmenter(tiny_bundle), iter(frames), ListSink(), render)


def test_prefetch_warns_and_stops_a_stuck_worker(caplog: pytest.LogCaptureFixture) -> None:
    """A worker still inside its source when the consumer leaves is named in a warning (was:
    given up on silently), and stops at its next item, closing the source itself (was: left
    running, its source never closed)."""
    release, closed, produced = threading.Event(), threading.Event(), []

    def source() -> Iterator[int]:
        try:
            for i in range(100):
                if i == 1:
                    release.wait(10)  # a read blocked on a silent network source
                produced.append(i)
                yield i
        finally:
            closed.set()

    prefetch = Prefetch(source(), depth=1, name="decode-test")
    prefetch.join_timeout_s = 0.2
    with caplog.at_level(logging.WARNING, logger="vidseg.engine.pipeline"):
        with prefetch as items:
            assert next(iter(items)) == 0
    assert any(
        "'decode-test'" in r.getMessage() and "still inside" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    assert not closed.is_set()
    release.set()
    assert closed.wait(5), "the worker never closed its source"
    prefetch._thread.join(5)
    assert not prefetch._thread.is_alive() and produced == [0, 1]


def test_frame_size_change_resets_the_state(
    tiny_bundle: Path, frames: list[Frame], caplog: pytest.LogCaptureFixture
) -> None:
    """A stream that changes resolution mid-way: logged, the state is reset, and the frames
    after the change segment like a fresh start at the new size."""
    import cv2

    small = [
        Frame(cv2.resize(f.image, (480, 270)), f.index, f.pts, f.time_base) for f in frames[5:10]
    ]
    seg = Segmenter(tiny_bundle)
    fresh = [r.labels for r in seg.stream(f.image for f in small)]
    sink = ListSink()
    with caplog.at_level(logging.WARNING, logger="vidseg.engine.pipeline"):
        stats = segment_video(seg, iter(frames[:5] + small), sink, lambda f, r: r.labels)
    assert stats.frames == 10 and stats.resets == 1
    assert "frame size changed from 960x540 to 480x270; state reset" in caplog.text
    for (labels, _), want in zip(sink.items[5:], fresh, strict=True):
        np.testing.assert_array_equal(labels, want)


class _SignalOnStep:
    """Wraps a Segmenter: sends ``signum`` to this process ``at[i]`` times during the step of
    frame ``i`` (the handler runs on the main thread at once)."""

    def __init__(self, seg: Segmenter, signum: int, at: dict[int, int]) -> None:
        self._seg, self._signum, self._at, self.steps = seg, signum, at, 0

    def __getattr__(self, name: str):
        return getattr(self._seg, name)

    def step(self, x, timestamp_s=None):
        result = self._seg.step(x, timestamp_s)
        for _ in range(self._at.get(self.steps, 0)):
            signal.raise_signal(self._signum)
        self.steps += 1
        return result


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler for the test: a shell that starts the tests in the
    background (``cmd &``) hands them SIGINT ignored, which no run may override."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_ctrl_c")
def test_ctrl_c_stops_between_frames(tiny_bundle: Path, frames: list[Frame]) -> None:
    """Ctrl-C during frame 5's step: frame 5 is still written (the stop is honoured between
    frames, not by an exception wherever the main thread was: one raised inside a queue's lock
    left it held and hung the shutdown, 1 run in ~700 under a stress of random signals), no
    KeyboardInterrupt escapes, and Python's own Ctrl-C handler is back afterwards."""
    seg = _SignalOnStep(Segmenter(tiny_bundle), signal.SIGINT, at={5: 1})
    sink = ListSink()
    stats = segment_video(seg, iter(frames), sink, lambda f, r: r.labels)
    assert stats.interrupted and stats.frames == 6 and len(sink.items) == 6
    assert [pts for _, pts in sink.items] == [f.pts for f in frames[:6]]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.usefixtures("python_ctrl_c")
def test_sigterm_handler_still_runs_and_a_second_signal_raises(
    tiny_bundle: Path, frames: list[Frame]
) -> None:
    """The application's SIGTERM handler (vidseg-run's records the signal) still runs; asked
    twice, the second KeyboardInterrupt is raised as before and still ends the run cleanly."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        seg = _SignalOnStep(Segmenter(tiny_bundle), signal.SIGTERM, at={3: 1})
        stats = segment_video(seg, iter(frames), ListSink(), lambda f, r: r.labels)
        assert stats.interrupted and stats.frames == 4 and received == [signal.SIGTERM]

        received.clear()
        seg = _SignalOnStep(Segmenter(tiny_bundle), signal.SIGTERM, at={3: 2})
        stats = segment_video(seg, iter(frames), ListSink(), lambda f, r: r.labels)
        # the first asked to stop after frame 3; the second raised inside its step: dropped
        assert stats.interrupted and stats.frames == 3 and received == [signal.SIGTERM] * 2
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)
