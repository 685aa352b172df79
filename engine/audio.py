"""Audio passthrough for :class:`~vidseg.engine.writer.VideoWriter`: the first audio stream of a
source is remuxed into the output untouched (no decode, no re-encode), cut at the video's end."""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from typing import Any

import av

from vidseg.engine.avutil import AV_ERRORS, error_reason
from vidseg.engine.errors import VideoIOError
from vidseg.engine.video import is_network_source

logger = logging.getLogger(__name__)

AudioCopy = tuple[Any, Any, Any]
"""(source container, source audio stream, output audio stream)."""


def open_audio(
    container: av.container.OutputContainer,
    audio_from: str | os.PathLike[str],
    *,
    timeout_s: float | None,
    output_name: str,
) -> AudioCopy | None:
    """Add an output stream to ``container`` copying the first audio stream of ``audio_from``
    (if it has one). ``timeout_s``: open/read timeout when ``audio_from`` is a URL;
    ``output_name``: the output file's name, for the warning when the audio cannot go into it.

    Returns (source container, source stream, output stream), or None without audio.
    """
    name = os.fspath(audio_from)
    timeout = timeout_s if is_network_source(name) else None
    try:
        source = av.open(name, mode="r", timeout=timeout or None)
    except AV_ERRORS as error:
        raise VideoIOError(f"cannot read audio from {audio_from}: {error_reason(error)}") \
            from error  # fmt: skip
    if not source.streams.audio:
        source.close()
        return None
    src_stream = source.streams.audio[0]
    try:
        out_stream = container.add_stream_from_template(src_stream)
    except (*AV_ERRORS, ValueError) as error:
        source.close()
        logger.warning("audio of %s cannot go into %s (%s): writing video only",
                       audio_from, output_name, error_reason(error))  # fmt: skip
        return None
    return source, src_stream, out_stream


def copy_audio(
    container: av.container.OutputContainer,
    audio: AudioCopy,
    start_s: Fraction,
    end_s: Fraction,
    *,
    negative_ok: bool = False,
) -> None:
    """Remux the source's audio packets untouched over the video's span: those from
    ``start_s`` (source seconds; shifted to 0) up to ``end_s`` seconds after it, the end of the
    last video frame (so an interrupted run's shorter video does not carry the full
    soundtrack). See :func:`audio_span` for which packets are kept."""
    source, src_stream, out_stream = audio
    last_dts: int | None = None
    for packet in source.demux(src_stream):
        if packet.dts is None or packet.size == 0:
            continue  # the demuxer's flush packet
        keep = audio_span(packet, start_s, end_s, negative_ok=negative_ok)
        if keep is None:
            break
        if not keep or (last_dts is not None and packet.dts <= last_dts):
            continue
        last_dts = packet.dts
        packet.stream = out_stream
        container.mux(packet)


def audio_span(
    packet: av.Packet, start_s: Fraction, end_s: Fraction, *, negative_ok: bool = False
) -> bool | None:
    """Whether ``packet`` (source clock) belongs to an output whose video spans ``start_s`` ..
    ``start_s + end_s``, shifting its pts and dts by ``-start_s`` when it does; None when it
    and every later packet lie past the end.

    A packet is kept when it starts at or after ``start_s`` (with ``negative_ok``, a container
    that stores a negative start, mp4/mov: when it ends after it) and its middle lies before the
    end: the audio ends within half a packet of the video.
    """
    time_base = packet.time_base
    start = packet.pts * time_base if packet.pts is not None else packet.dts * time_base
    length = packet.duration * time_base if packet.duration else Fraction(0)
    start -= start_s
    if start + length / 2 >= end_s:
        return None
    if start < 0 and not (negative_ok and start + length > 0):
        return False
    shift = round(start_s / time_base)
    if shift:
        if packet.pts is not None:
            packet.pts -= shift
        packet.dts -= shift
    return True
