"""Audio passthrough from a source to a :class:`~vidseg.engine.writer.VideoWriter`, through the
one demuxer that reads the video: a source is opened once (many cameras and servers take one
client, and a second connection to a live stream would read another stretch of it).

The reader (``video.open_video(..., audio=track)``) demuxes the first audio stream alongside
the video, puts each packet, on the source's continuous clock (``engine.timeline``), into an
:class:`AudioTrack`; the writer (``VideoWriter(..., audio=track)``) takes the packets up to each
frame it writes and muxes them untouched (no decode, no re-encode) with :class:`AudioOut`, over
the video's span only: from its first frame to the end of its last, so frames skipped
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

MOV_SUFFIXES: Final[frozenset[str]] = frozenset({".mp4", ".m4v", ".mov"})
"""Containers that store a negative audio start (an edit list): the packet that straddles the
first frame's time is kept there (AAC's priming packet), dropped elsewhere."""


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
                if until is not None and _start(self._packets[0]) >= until:
                    break
                taken.append(self._packets.popleft())
        return taken

    def close(self) -> None:
        """Drop what is queued and collect nothing more."""
        with self._lock:
            self._closed = True
            self._packets.clear()


def _start(packet: Any) -> Fraction:
    stamp = packet.pts if packet.pts is not None else packet.dts
    return stamp * packet.time_base if stamp is not None else Fraction(0)


class AudioOut:
    """A writer's side of an :class:`AudioTrack`: the output's audio stream, and the packets
    muxed into it over the video's span.

    ``first`` (source seconds): the first video frame's time; packets that start before it are
    dropped (except, in mp4/mov, the one that straddles it). ``offset`` (source seconds) is
    taken off every timestamp (the writer's ``zero_start``: the first frame's time). At the end
    (:meth:`finish`) packets are kept while their middle lies before the end of the last
    frame: the audio ends within half a packet of the video. A packet whose decode time does
    not increase (a source's clock repaired by a shift) is dropped.
    """

    def __init__(
        self,
        track: AudioTrack,
        container: av.container.OutputContainer,
        output_name: str,
        suffix: str,
    ) -> None:
        self._track = track
        self._container = container
        self._output_name = output_name
        self._negative_ok = suffix.lower() in MOV_SUFFIXES
        self._stream: Any = None
        self._added = False
        self._first = self._offset = Fraction(0)
        self._last_dts: int | None = None  # in the last packet's time base
        self._last_time_base: Fraction | None = None
        self.packets = 0  # muxed
        self.dropped = 0  # outside the video's span, or not increasing

    def add_stream(self) -> None:
        """Add the output's audio stream, a copy of the source's, once: when the writer opens
        (the source is open by then where ``open_video`` came first) or before its first
        frame. A source without audio: nothing; a container that cannot take it: one warning,
        video only."""
        if self._added:
            return
        self._added = True
        try:
            self._stream = self._track.add_stream(self._container)
        except LookupError:
            self._track.close()
        except ValueError as error:
            self._track.close()
            logger.warning(
                "audio of %s cannot go into %s (%s): writing video only",
                self._track.source,
                self._output_name,
                error,
            )

    def start(self, first: Fraction, offset: Fraction) -> None:
        """The first frame is about to be written at ``first`` seconds; ``offset`` seconds come
        off every timestamp."""
        self.add_stream()
        self._first, self._offset = first, offset

    def mux(self, until: Fraction) -> None:
        """Mux the packets that start before ``until`` (source seconds: the frame being
        written), interleaved with the video."""
        if self._stream is not None:
            for packet in self._track.take(until):
                self._mux_one(packet, None)

    def finish(self, end: Fraction) -> None:
        """Mux what is left up to ``end`` (source seconds: the last frame's end); drop the rest."""
        if self._stream is None:
            return
        for packet in self._track.take(None):
            self._mux_one(packet, end)
        self._track.close()
        if self.dropped:
            logger.debug(
                "%s: %d audio packets outside the video's span or out of order",
                self._output_name,
                self.dropped,
            )

    def _mux_one(self, packet: Any, end: Fraction | None) -> None:
        time_base = packet.time_base
        if packet.dts is None and packet.pts is None or not time_base:
            self.dropped += 1
            return
        start = _start(packet)
        length = packet.duration * time_base if packet.duration else Fraction(0)
        before = start < self._first and not (self._negative_ok and start + length > self._first)
        if before or (end is not None and start + length / 2 >= end):
            self.dropped += 1
            return
        shift = round(self._offset / time_base)
        if packet.pts is not None:
            packet.pts -= shift
        if packet.dts is None:
            packet.dts = packet.pts
        else:
            packet.dts -= shift
        if self._last_dts is not None and self._last_time_base is not None:
            if packet.dts * time_base <= self._last_dts * self._last_time_base:
                self.dropped += 1
                return
        self._last_dts, self._last_time_base = packet.dts, time_base
        packet.stream = self._stream
        self._container.mux(packet)
        self.packets += 1
