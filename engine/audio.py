"""The audio of a source on its way from the reader to a writer: :class:`AudioTrack`, the one
module both sides import (neither imports the other). The video's own demuxer reads the audio:
a source is opened once (many cameras and servers take one client, and a second connection to a
live stream would read another stretch of it).

The reader (``video.open_video(..., audio=track)``) demuxes the first audio stream alongside
the video and puts each packet, on the source's continuous clock (``engine.timeline``), into
the track; the writer (``VideoWriter(..., audio=track)``) takes the packets up to each frame it
writes and muxes them untouched (no decode, no re-encode) over the video's span only
(``engine.audiomux``): from its first frame to the end of its last, so frames skipped
(``--vid-stride``, ``--max-fps``, ``--live`` drops) keep the sound in place, and an interrupted
run's shorter video does not carry the rest of the soundtrack.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from fractions import Fraction
from typing import Any, Final

import av

from vidseg.engine.avutil import AV_ERRORS, error_reason

logger = logging.getLogger(__name__)

MAX_PACKETS: Final[int] = 20_000
"""Packets an AudioTrack holds at most (about 7 minutes of 48 kHz AAC) before it drops the
oldest: a writer that takes none (frames skipped for that long) cannot fill the memory."""


class AudioTrack:
    """The audio packets of one source on their way from its reader to a writer; thread-safe.

    The reader calls :meth:`bind` at each opening, :meth:`put` for each packet and
    :meth:`release` before it closes the source; the writer calls :meth:`add_stream` (once,
    before its first packet) and :meth:`take`. :meth:`close` stops the collecting (a writer
    that cannot use the audio).
    """

    def __init__(self, max_packets: int = MAX_PACKETS) -> None:
        self._lock = threading.Lock()
        self._packets: deque[Any] = deque()
        self._max_packets = max_packets
        self._template: Any = None
        self._closed = False
        self._overflowed = False
        self.source = ""  # the source's name, for messages

    def bind(self, stream: Any, source: str) -> None:
        """The source (re)opened; ``stream`` is its first audio stream, or None without one.
        The first opening's stream is the template of the output's audio stream."""
        with self._lock:
            if self._template is None and stream is not None:
                self._template, self.source = stream, source

    @property
    def bound(self) -> bool:
        """Whether a source with an audio stream has been opened (and not closed yet)."""
        return self._template is not None

    def release(self) -> None:
        """The source is about to close: its stream can no longer be a template."""
        with self._lock:
            self._template = None

    def add_stream(self, container: av.container.OutputContainer) -> Any:
        """Add to ``container`` an output stream copying the source's audio stream (under the
        lock: the reader cannot close the source meanwhile).

        Returns:
            The output stream.

        Raises:
            LookupError: no source with audio is open (none had audio, or it closed).
            ValueError: the parameters are unknown, or ``container`` cannot hold the codec.
        """
        with self._lock:
            template = self._template
            if template is None:
                raise LookupError("no audio stream")
            if not getattr(template.codec_context, "sample_rate", 0):
                raise ValueError("its parameters are unknown: no audio packet near the start")
            try:
                return container.add_stream_from_template(template)
            except AV_ERRORS as error:
                raise ValueError(error_reason(error)) from error

    def put(self, packet: Any) -> None:
        """Queue a demuxed packet (its timestamps on the source's continuous clock)."""
        with self._lock:
            if self._closed:
                return
            self._packets.append(packet)
            if len(self._packets) > self._max_packets:
                self._packets.popleft()
                if not self._overflowed:
                    self._overflowed = True
                    logger.warning(
                        "audio of %s: more than %d packets waiting for the video; "
                        "the oldest are dropped",
                        self.source,
                        self._max_packets,
                    )

    def take(self, until: Fraction | None) -> list[Any]:
        """The queued packets that start before ``until`` seconds (all with None), in order."""
        taken = []
        with self._lock:
            while self._packets:
                if until is not None and packet_start(self._packets[0]) >= until:
                    break
                taken.append(self._packets.popleft())
        return taken

    def close(self) -> None:
        """Drop what is queued and collect nothing more."""
        with self._lock:
            self._closed = True
            self._packets.clear()


def packet_start(packet: Any) -> Fraction:
    """A packet's start, seconds on its clock: its pts, else its dts, else 0."""
    stamp = packet.pts if packet.pts is not None else packet.dts
    return stamp * packet.time_base if stamp is not None else Fraction(0)
