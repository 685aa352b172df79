"""A writer's side of the audio passthrough (``engine.audio``): :class:`AudioOut` muxes the
packets of an :class:`~vidseg.engine.audio.AudioTrack` untouched into the writer's container,
interleaved with the video and over its span only."""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import av

from vidseg.engine.audio import AudioTrack, packet_start

logger = logging.getLogger(__name__)


class AudioOut:
    """A writer's side of an :class:`AudioTrack`: the output's audio stream, and the packets
    muxed into it over the video's span.

    ``first`` (source seconds): the first video frame's time; packets that start before it are
    dropped, except, with ``negative_start`` (a container that stores a negative audio start in
    an edit list: mp4/mov), the one that straddles it (AAC's priming packet). ``offset`` (source
    seconds) is taken off every timestamp (the writer's ``zero_start``: the first frame's time).
    At the end (:meth:`finish`) packets are kept while their middle lies before the end of the
    last frame: the audio ends within half a packet of the video. A packet whose decode time does
    not increase (a source's clock repaired by a shift) is dropped.
    """

    def __init__(
        self,
        track: AudioTrack,
        container: av.container.OutputContainer,
        output_name: str,
        *,
        negative_start: bool,
    ) -> None:
        self._track = track
        self._container = container
        self._output_name = output_name
        self._negative_ok = negative_start
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
        start = packet_start(packet)
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
