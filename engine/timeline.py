"""A source's clock made continuous and strictly increasing, for its video and audio alike.

Sources do not always keep time: two MPEG-TS files concatenated restart their clock half-way,
a muxer may give two frames the same pts, and a reopened network stream starts a new clock. A
writer needs timestamps that increase, and the audio must move with the video. The reader
(``decode.decode_frames``) passes every demuxed packet through :meth:`Timeline.packet` before
decoding it, and every decoded video frame's pts through :meth:`Timeline.frame_pts`:

* a packet whose decode time goes back by more than ``JUMP_S`` in its own stream starts a new
  stretch of the clock: from there on every stream of the source (video and audio) is shifted
  by the same amount, so the stretch continues where the last one ended and the two stay in
  sync (what FFmpeg does for a timestamp discontinuity);
* after :meth:`Timeline.reopened` (a reconnect) the first packet starts a new stretch the same
  way, whatever its timestamp;
* a decoded frame whose pts does not exceed the previous frame's (a repeat, a small step back)
  is moved just after it: at least one tick and one millisecond (Matroska stores milliseconds),
  so no frame is lost and none is moved by more than that;
* a frame without a pts (an RTSP stream's first, before the sender's clock is known) gets one:
  a source's first such frames are held until a frame with a pts arrives and timed one frame
  apart before it; a later one one step after the previous frame.

The first repair of a source is logged as one warning; the rest at debug level.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from typing import Any, Final

logger = logging.getLogger(__name__)

JUMP_S: Final[Fraction] = Fraction(1, 10)
"""A decode time that goes back by more than this (seconds) in its stream restarts the clock."""

MIN_STEP_S: Final[Fraction] = Fraction(1, 1000)
"""Smallest gap (seconds) left between a repaired frame and the one before it."""


class Timeline:
    """The continuous clock of one source (and of its reopenings); see the module docstring.

    Not thread-safe: one reader at a time (reopenings follow each other).

    Attributes:
        repairs: timestamps moved so far (stretches started plus frames moved).
    """

    def __init__(self, name: str = "source") -> None:
        self.name = name
        self.repairs = 0
        self._offset = Fraction(0)  # seconds added to the current stretch's timestamps
        self._last_dts: dict[str, Fraction] = {}  # per stream kind: last decode time, seconds
        self._step: dict[str, Fraction] = {}  # per stream kind: last packet's length, seconds
        self._last_frame: Fraction | None = None  # last video frame's time, seconds
        self._frame_step: Fraction | None = None  # the last step between two frames, seconds
        self._held: list[Any] = []  # a source's first frames, without a pts yet
        self._rebase = False

    def reopened(self) -> None:
        """The source was opened again (a reconnect): its next packet continues the clock."""
        self._rebase = bool(self._last_dts)

    def packet(self, packet: Any, kind: str) -> None:
        """Move ``packet``'s pts and dts (in place) onto the continuous clock.

        Args:
            packet: a demuxed ``av.Packet`` (its ``time_base`` set), of the source's video or
                audio stream.
            kind: ``"video"`` or ``"audio"``: which stream's history to check it against.
        """
        time_base = packet.time_base
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is None or not time_base:
            return
        t = stamp * time_base + self._offset
        last = self._last_dts.get(kind)
        if self._rebase:
            self._rebase = False
            target = self._end()
            if target is not None:
                self._offset += target - t
                logger.debug("%s reopened: its clock continues at %.3f s", self.name, float(target))
                t = target
        elif last is not None and t < last - JUMP_S:
            target = self._end() or last
            self._offset += target - t
            self._note(
                f"{self.name}: the {kind} timestamps go back from {float(last):.3f} s "
                f"to {float(t):.3f} s (a concatenated or restarted stream); video and "
                f"audio continue at {float(target):.3f} s"
            )
            t = target
        if self._offset:
            shift = round(self._offset / time_base)
            if packet.pts is not None:
                packet.pts += shift
            if packet.dts is not None:
                packet.dts += shift
        duration = packet.duration * time_base if packet.duration else Fraction(0)
        if last is not None and t > last and not duration:
            duration = t - last  # video packets often carry no duration: the last step
        if duration:
            self._step[kind] = duration
        self._last_dts[kind] = t if last is None else max(last, t)

    def timed(
        self, frames: list[Any], time_base: Fraction, step_s: Fraction, index: int
    ) -> list[Any]:
        """Decoded video frames ``index``, ``index + 1``, ... with their ``pts`` set on the
        clock (see the module docstring), in order; frames without a pts at the source's start
        are held back (``step_s``: the nominal frame duration, to time them) until one with a
        pts arrives, or :meth:`release` at the end."""
        ready: list[Any] = []
        for frame in frames:
            if frame.pts is None and self._last_frame is None and time_base:
                self._held.append(frame)
                continue
            if self._held and frame.pts is not None:
                step = max(1, round(step_s / time_base))
                for back, held in enumerate(reversed(self._held), 1):
                    held.pts = frame.pts - back * step
                for held in self._held:
                    held.pts = self.frame_pts(held.pts, time_base, index + len(ready))
                    ready.append(held)
                self._held = []
            frame.pts = self.frame_pts(frame.pts, time_base, index + len(ready))
            ready.append(frame)
        return ready

    def release(self) -> list[Any]:
        """The frames held back, without a pts: the source ended before it sent one."""
        held, self._held = self._held, []
        return held

    def frame_pts(self, pts: int | None, time_base: Fraction, index: int) -> int | None:
        """The pts of decoded video frame ``index`` (in ``time_base``), moved past the previous
        frame's when it does not exceed it; a frame without one after a frame with one gets
        the previous frame's time plus the last step; None stays None before any frame had
        one."""
        last = self._last_frame
        if not time_base or pts is None and last is None:
            return pts
        if pts is None:
            step = self._frame_step or MIN_STEP_S
            pts = math.floor((last + step) / time_base)
            logger.debug(
                "%s: frame %d has no timestamp; timed %.3f s",
                self.name,
                index,
                float(pts * time_base),
            )
        t = pts * time_base
        if last is not None and t > last:
            self._frame_step = t - last
        if last is not None and t <= last:
            ticks = max(1, math.ceil(MIN_STEP_S / time_base))
            moved = math.floor(last / time_base) + ticks
            self._note(
                f"{self.name}: frame {index}'s timestamp {float(t):.3f} s does not follow "
                f"the previous frame's ({float(last):.3f} s); moved to "
                f"{float(moved * time_base):.3f} s"
            )
            pts, t = moved, moved * time_base
        self._last_frame = t
        return pts

    def _end(self) -> Fraction | None:
        """Where the clock continues in a new stretch: after everything the last one held, the
        last packet of each stream and the last frame, so neither stream overlaps it."""
        ends = [t + self._step.get(k, Fraction(0)) for k, t in self._last_dts.items()]
        if self._last_frame is not None:
            ends.append(self._last_frame + (self._frame_step or MIN_STEP_S))
        return max(ends) if ends else None

    def _note(self, message: str) -> None:
        self.repairs += 1
        if self.repairs == 1:
            logger.warning("%s (further timestamp repairs are not logged)", message)
        else:
            logger.debug("%s", message)
