"""The timestamps a :class:`~vidseg.engine.writer.VideoWriter` gives its frames
(:class:`WriterClock`): the caller's pts, or the writer's own where none is given, checked to
increase, then put on the container's clock so that they still increase there."""

from __future__ import annotations

import logging
import operator
from fractions import Fraction

__all__ = ["WriterClock"]

logger = logging.getLogger(__name__)


class WriterClock:
    """Pts in ``time_base`` (the caller's) and in ``out_time_base`` (the container's).

    ``next`` resolves a frame's pts, ``out`` maps it to the container's clock, and ``advance``
    records the frame once it was written. With ``zero_start`` the first frame is at 0 on the
    container's clock; where rounding to that clock would give two frames the same time, the
    later one moves one tick on.
    """

    def __init__(
        self,
        fps: Fraction,
        time_base: Fraction,
        out_time_base: Fraction,
        *,
        zero_start: bool,
        name: str,
    ) -> None:
        self.time_base = time_base
        self.out_time_base = out_time_base
        self.frame_step = 1 / (fps * time_base)  # pts ticks per frame
        self.start_pts: int | None = None  # the first frame's pts (in time_base), once known
        self.last_pts: int | None = None  # the last frame written, in time_base
        self.frames = 0  # frames written
        self._zero_start = zero_start
        self._name = name  # for messages
        self._last_out: int | None = None  # the last frame's pts in out_time_base
        self._explicit = False  # the caller has given a pts
        self._guessed = False  # the last frame's pts was the writer's own (None given)

    def next(self, pts: int | None) -> int:
        """Resolve the pts of the next frame and check it increases (a pts given after frames
        the writer timed itself, which it may not reach, moves one tick past them).

        Raises:
            ValueError: ``pts`` does not increase.
        """
        guessed, self._guessed = self._guessed, pts is None
        if pts is None:
            if self.last_pts is None:
                return 0
            if not self._explicit:
                return round(self.frames * self.frame_step)
            return self.last_pts + max(1, round(self.frame_step))
        value = operator.index(pts)
        if self.last_pts is not None and value <= self.last_pts:
            if not guessed:
                raise ValueError(f"pts must increase: got {value} after {self.last_pts}")
            value = self.last_pts + 1
        self._explicit = True
        return value

    def out(self, pts: int) -> int:
        """``pts`` (time_base) on the container's clock, after the frame before."""
        if self.start_pts is None:
            self.start_pts = pts if self._zero_start else 0
        out = round((pts - self.start_pts) * self.time_base / self.out_time_base)
        if self._last_out is not None and out <= self._last_out:
            logger.debug(
                "%s: frame %d rounds onto the previous frame's time; moved one tick",
                self._name,
                self.frames,
            )
            out = self._last_out + 1
        return out

    def advance(self, pts: int, out: int) -> None:
        """A frame at ``pts`` (``out`` on the container's clock) was written."""
        self.last_pts, self._last_out = pts, out
        self.frames += 1
