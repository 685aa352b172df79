"""The threaded pipeline against a plain sequential loop: same labels, in order, errors kept."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.errors import TruncatedVideoError
from vidseg.engine.pipeline import segment_video
from vidseg.engine.video import Frame, read_frames

N_FRAMES = 20


class ListSink:
    def __init__(self) -> None:
        self.items: list[tuple[np.ndarray, int | None]] = []

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        self.items.append((image.copy(), pts))


@pytest.fixture(scope="module")
def frames(sample_clip: Path) -> list[Frame]:
    return list(read_frames(sample_clip, max_frames=N_FRAMES))


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_split_bundle"])
def test_pipeline_matches_sequential_loop(bundle: str, frames: list[Frame],
                                          request: pytest.FixtureRequest) -> None:  # fmt: skip
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
    assert threads == {"encode"}


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
