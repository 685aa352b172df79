"""A source's clock made continuous and strictly increasing, for its video and audio alike.

Sources do not always keep time: two MPEG-TS files concatenated restart their clock half-way,
a muxer may give two frames the same pts, and a reopened network stream starts a new clock. A
writer needs timestamps that increase, and the audio must move with the video. The reader
(``video._decode``) passes every demuxed packet through :meth:`Timeline.packet` before
decoding it, and every decoded video frame's pts through :meth:`Timeline.frame_pts`:

* a packet whose decode time goes back by more than ``JUMP_S`` in its own stream starts a new
  stretch of the clock: from there on every stream of the source (video and audio) is shifted
  by the same amount, so the stretch continues where the last one ended and the two stay in
  sync (what FFmpeg does for a timestamp discontinuity);
* after :meth:`Timeline.reopened` (a reconnect) the first packet starts a new stretch the same
  way, whatever its timestamp;
* a decoded frame whose pts does not exceed the previous frame's (a repeat, a small step back)
  is moved just after it: at least one tick and one millisecond (Matroska stores milliseconds),
  so no frame is lost and none is moved by more than that.

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
            target = self._end(kind)
            if target is not None:
                self._offset += target - t
                logger.debug("%s reopened: its clock continues at %.3f s", self.name, float(target))
                t = target
        elif last is not None and t < last - JUMP_S:
            target = last + self._step.get(kind, Fraction(0))
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

    def frame_pts(self, pts: int | None, time_base: Fraction, index: int) -> int | None:
        """The pts of decoded video frame ``index`` (in ``time_base``), moved past the previous
        frame's when it does not exceed it; None stays None (a source without timestamps)."""
        if pts is None or not time_base:
            return pts
        t = pts * time_base
        last = self._last_frame
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

    def _end(self, kind: str) -> Fraction | None:
        """Where the clock continues after a reopening: the end of ``kind``'s last packet (of
        any stream's, when ``kind`` had none)."""
        if kind in self._last_dts:
            return self._last_dts[kind] + self._step.get(kind, Fraction(0))
        ends = [t + self._step.get(k, Fraction(0)) for k, t in self._last_dts.items()]
        return max(ends) if ends else None

    def _note(self, message: str) -> None:
        self.repairs += 1
        if self.repairs == 1:
            logger.warning("%s (further timestamp repairs are not logged)", message)
        else:
            logger.debug("%s", message)
