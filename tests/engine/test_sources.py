"""Live-source behaviour: the newest frame wins, drops are counted, errors are forwarded."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

from vidseg.engine.sources import LatestFrameSource, paced
from vidseg.engine.video import Frame


def _frames(n: int, fps: int = 100):
    for i in range(n):
        yield Frame(np.full((2, 2, 3), i, np.uint8), i, i, Fraction(1, fps))


def test_paced_follows_timestamps() -> None:
    t0 = time.perf_counter()
    assert [f.index for f in paced(_frames(6, fps=50))] == list(range(6))
    assert time.perf_counter() - t0 >= 5 / 50 * 0.9  # 100 ms of clip time, not instant


def test_slow_consumer_gets_newest_frames_and_drops_are_counted() -> None:
    seen = []
    with LatestFrameSource(paced(_frames(40, fps=200))) as source:
        for frame in source:
            seen.append(frame.index)
            time.sleep(0.02)  # 4 frame intervals per step
    assert seen == sorted(seen) and seen[-1] == 39  # in order, and the newest at the end
    assert source.received == 40
    assert source.dropped == 40 - len(seen) > 10


def test_fast_consumer_drops_nothing() -> None:
    # 100 ms between frames: ample margin for the consumer to wake even on a loaded machine
    with LatestFrameSource(paced(_frames(5, fps=10))) as source:
        seen = [f.index for f in source]
    assert seen == list(range(5)) and source.dropped == 0


def test_reader_error_reaches_consumer() -> None:
    def broken():
        yield from _frames(2)
        raise OSError("camera unplugged")

    with pytest.raises(OSError, match="camera unplugged"):
        with LatestFrameSource(broken()) as source:
            for _ in source:
                time.sleep(0.01)


def test_image_folder(tmp_path, sample_clip) -> None:
    import cv2

    from vidseg.engine.errors import VideoIOError
    from vidseg.engine.sources import read_image_folder
    from vidseg.engine.video import read_frames

    clip = [f.image for f in read_frames(sample_clip, size=(96, 64), max_frames=3)]
    for i, image in enumerate(clip):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), image[:, :, ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(read_image_folder(tmp_path, fps=Fraction(10)))
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[2].timestamp_s == pytest.approx(0.2)
    for frame, image in zip(frames, clip):
        np.testing.assert_array_equal(frame.image, image)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoIOError, match="no images"):
        list(read_image_folder(tmp_path / "empty"))
    with pytest.raises(VideoIOError, match="not found"):
        list(read_image_folder(tmp_path / "missing"))
