"""Frame sources beyond video files: image folders, live behaviour (newest frame wins), pacing.

Live streams (RTSP/HTTP URLs, ``/dev/videoN``) decode through ``video.read_frames(url,
thread_type="SLICE")``; wrap them in :class:`LatestFrameSource` so latency never builds up.

A live source must never build latency: when the consumer is slower than the camera,
:class:`LatestFrameSource` keeps only the newest frame and counts the ones it dropped.
:func:`paced` replays a file at its own frame rate, so a clip can stand in for a camera.
"""

from __future__ import annotations

import os
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from vidseg.engine.errors import VideoIOError
from vidseg.engine.video import Frame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_image_folder(directory: str | os.PathLike[str], fps: Fraction = Fraction(25),
                      max_frames: int | None = None) -> Iterator[Frame]:  # fmt: skip
    """Frames from the images of ``directory`` in name order, timed at ``fps``.

    Yields ``Frame``s with ``pts = index`` in a ``1/fps`` time base (so they can go straight to
    ``VideoWriter(fps=fps, time_base=1/fps)``).

    Raises:
        VideoIOError: the directory is missing or holds no images, or an image is unreadable.
    """
    root = Path(directory)
    if not root.is_dir():
        raise VideoIOError(f"image folder not found: {root}")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise VideoIOError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    time_base = 1 / Fraction(fps)
    for index, path in enumerate(paths[:max_frames]):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoIOError(f"unreadable image {path}")
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        yield Frame(rgb, index, index, time_base)


def paced(frames: Iterable[Frame], speed: float = 1.0) -> Iterator[Frame]:
    """Yield each frame no earlier than its timestamp (relative to the first), like a camera.

    Frames without timestamps are yielded immediately. ``speed`` > 1 replays faster.
    """
    start: float | None = None
    first_ts: float | None = None
    for frame in frames:
        ts = frame.timestamp_s
        if ts is not None:
            if start is None:
                start, first_ts = time.perf_counter(), ts
            delay = (ts - first_ts) / speed - (time.perf_counter() - start)
            if delay > 0:
                time.sleep(delay)
        yield frame


class LatestFrameSource:
    """Reads ``frames`` in a background thread and hands out only the newest one.

    Iterating blocks until a frame newer than the last one handed out exists; frames that
    arrived in between are dropped and counted in ``dropped``. Context manager; leaving it stops
    the reader. Reader errors are re-raised in the consumer.
    """

    def __init__(self, frames: Iterable[Frame]) -> None:
        self._frames = frames
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._done = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self.dropped = 0  # frames the consumer never saw
        self.received = 0  # frames read from the source
        self._thread = threading.Thread(target=self._read, name="live-source", daemon=True)

    def _read(self) -> None:
        try:
            for frame in self._frames:
                if self._stop.is_set():
                    break
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = frame
                    self.received += 1
                    self._cond.notify()
        except BaseException as exc:  # forwarded to the consumer
            self._error = exc
        with self._cond:
            self._done = True
            self._cond.notify()

    def __enter__(self) -> "LatestFrameSource":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                while self._latest is None and not self._done:
                    self._cond.wait()
                frame, self._latest = self._latest, None
                if frame is None:  # done and nothing pending
                    if self._error is not None:
                        raise self._error
                    return
            yield frame
