"""Frame sources beyond video files (image folders: ``folder.py``): live behaviour (newest
frame wins), pacing, reconnecting.

Live streams (RTSP/HTTP URLs, ``/dev/videoN``) decode through ``video.open_video(url,
thread_type="SLICE", timeout_s=...)``; wrap them in :class:`LatestFrameSource` so latency never
builds up, and in :class:`ReconnectingSource` so a dropped connection is reopened.

A live source must never build latency: when the consumer is slower than the camera,
:class:`LatestFrameSource` keeps only the newest frame and counts the ones it dropped.
:func:`paced` replays a file at its own frame rate, so a clip can stand in for a camera.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from fractions import Fraction
from typing import Callable, Iterable, Iterator

from vidseg.engine.errors import SourceLostError, VideoIOError
from vidseg.engine.frame import Frame, prepend

logger = logging.getLogger(__name__)
MAX_BACKOFF_S = 8.0  # longest wait between two reconnect attempts


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


def _closing(frames: Iterable[Frame]) -> None:
    close = getattr(frames, "close", None)
    if close is not None:
        close()


def strided(frames: Iterable[Frame], every: int) -> Iterator[Frame]:
    """Every ``every``-th frame of ``frames`` (the 1st, the ``every + 1``-th, ...), counted as
    received, so a reconnect does not shift the pattern. Closing this closes ``frames``.

    Raises:
        ValueError: ``every`` < 1.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    try:
        for count, frame in enumerate(frames):
            if count % every == 0:
                yield frame
    finally:
        _closing(frames)


def rate_limited(
    frames: Iterable[Frame], max_fps: float, clock: Callable[[], float] = time.monotonic
) -> Iterator[Frame]:
    """At most ``max_fps`` frames per second of ``frames``: a frame is kept when its time (its
    timestamp, or ``clock()`` for a frame without one) reaches the next slot of a ``1/max_fps``
    grid, so a 25 FPS source limited to 10 keeps 10 per second on average (not 8.3); after a
    gap the grid restarts at the frame. Closing this closes ``frames``.

    Raises:
        ValueError: ``max_fps`` <= 0.
    """
    if not max_fps > 0:
        raise ValueError(f"max_fps must be > 0, got {max_fps}")
    period = 1.0 / max_fps
    slot: float | None = None
    try:
        for frame in frames:
            t = frame.timestamp_s
            t = clock() if t is None else t
            if slot is not None and t < slot - 1e-9:
                continue
            slot = (slot if slot is not None else t) + period
            if slot <= t:  # a gap (or the first frame): restart the grid here
                slot = t + period
            yield frame
    finally:
        _closing(frames)


class LatestFrameSource:
    """Reads ``frames`` in a background thread and hands out only the newest one.

    Iterating blocks until a frame newer than the last one handed out exists; frames that
    arrived in between are dropped and counted in ``dropped``. Each frame is stamped with the
    time it was received (``Frame.captured_ns``, ``time.monotonic_ns()``) unless it carries
    one. Context manager; leaving it stops the reader. Iterating without ``with`` starts the
    reader too, and stops it when the iteration ends (or its iterator is closed). Reader
    errors are re-raised in the consumer.
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
        self._started = False

    def _read(self) -> None:
        try:
            for frame in self._frames:
                if self._stop.is_set():
                    break
                if isinstance(frame, Frame) and frame.captured_ns is None:
                    frame = replace(frame, captured_ns=time.monotonic_ns())
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = frame
                    self.received += 1
                    self._cond.notify()
        except BaseException as exc:  # forwarded to the consumer
            self._error = exc
        finally:  # a generator source is closed by the thread that ran it (its container)
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()
        with self._cond:
            self._done = True
            self._cond.notify()

    def _start(self) -> bool:
        """Start the reader unless it runs already; whether this call started it."""
        if self._started:
            return False
        self._started = True
        self._thread.start()
        return True

    def __enter__(self) -> "LatestFrameSource":
        self._start()
        return self

    join_timeout_s = 5.0  # how long leaving waits for the reader

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.join_timeout_s)
        if self._thread.is_alive():
            logger.warning(
                "thread %r is still inside its source %.1f s after the consumer left; "
                "it will stop at its next frame",
                self._thread.name,
                self.join_timeout_s,
            )

    def __iter__(self) -> Iterator[Frame]:
        owner = self._start()  # no ``with``: this iteration runs the reader
        try:
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
        finally:
            if owner:
                self.__exit__(None, None, None)


class ReconnectingSource:
    """Frames of a live source that is reopened when it is lost, in order, without a gap.

    Iterates ``first`` (the frames of the source as opened); when it raises
    :class:`SourceLostError` (a dropped connection, a read timeout), waits ``backoff_s``,
    ``2 * backoff_s``, ... (at most ``MAX_BACKOFF_S``) and calls ``reopen()`` for new frames, up
    to ``retries`` attempts in a row; the count starts over once a reopened source delivers a
    frame. Each attempt logs one warning line; ``reconnects`` counts the successful ones.

    Frames keep counting: ``index`` runs on across reconnects, and a reopened source's pts are
    shifted to follow the last frame's (in the first source's time base), so a writer sees
    increasing timestamps. The first frame after a reconnect has ``discontinuity=True``: the
    segmenter must forget the past. A clean end of the source ends the iteration.

    Raises (while iterating):
        SourceLostError: the source was lost and every allowed reconnect failed; the message
            names the first loss and the last failure.
    """

    def __init__(
        self,
        first: Iterator[Frame],
        reopen: Callable[[], Iterator[Frame]],
        *,
        retries: int,
        backoff_s: float = 0.5,
        max_frames: int | None = None,
        name: str = "source",
    ) -> None:
        if retries < 0 or backoff_s < 0:
            raise ValueError(f"retries and backoff_s must be >= 0, got {retries}, {backoff_s}")
        self._current = first
        self._reopen = reopen
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_frames = max_frames
        self._name = name
        self.reconnects = 0  # successful reopenings
        self.delivered = 0  # frames yielded
        self._frames = self._generate()

    def __iter__(self) -> Iterator[Frame]:
        return self._frames

    def __next__(self) -> Frame:
        return next(self._frames)

    def close(self) -> None:
        """Stop, closing the open source (from the thread that iterates)."""
        self._frames.close()

    def _generate(self) -> Iterator[Frame]:
        time_base: Fraction | None = None  # of the output: the first source's
        last_pts: int | None = None
        step = 1  # pts ticks between the last two frames: the gap left at a reconnect
        resumed = False
        try:
            while True:
                shift: int | None = None if resumed else 0  # added to this source's pts
                try:
                    for frame in self._current:
                        if self._max_frames is not None and self.delivered >= self._max_frames:
                            return
                        time_base = time_base or frame.time_base
                        pts = frame.pts
                        if pts is not None:
                            pts = round(pts * frame.time_base / time_base)
                            if shift is None:
                                shift = 0 if last_pts is None else last_pts + step - pts
                            pts += shift
                            if last_pts is not None and pts <= last_pts:
                                pts = last_pts + step  # never backwards, whatever it says
                            elif last_pts is not None:
                                step = pts - last_pts
                            last_pts = pts
                        yield replace(
                            frame,
                            index=self.delivered,
                            pts=pts,
                            time_base=time_base,
                            discontinuity=resumed,
                        )
                        resumed = False
                        self.delivered += 1
                    return
                except SourceLostError as error:
                    self._current = self._reconnect(error)
                    resumed = True
        finally:
            close = getattr(self._current, "close", None)
            if close is not None:
                close()

    def _reconnect(self, lost: SourceLostError) -> Iterator[Frame]:
        """Reopen the source, waiting longer before each attempt; raise when none is left."""
        failure: BaseException = lost
        for attempt in range(self._retries):
            delay = min(self._backoff_s * 2**attempt, MAX_BACKOFF_S)
            logger.warning(
                "reconnect %d of %d in %.1f s after %d frames: %s",
                attempt + 1,
                self._retries,
                delay,
                self.delivered,
                failure,
            )
            time.sleep(delay)
            try:
                frames = self._reopen()
                first = next(frames)  # delivered a frame: connected again
            except StopIteration:
                failure = SourceLostError(f"{self._name} reopened but sent no frame", 0)
                continue
            except VideoIOError as error:
                failure = error
                continue
            self.reconnects += 1
            return prepend(first, frames)
        raise SourceLostError(
            f"{lost}; gave up after {self._retries} reconnect(s)"
            + (f", the last: {failure}" if failure is not lost else ""),
            frames_decoded=self.delivered,
        ) from failure
