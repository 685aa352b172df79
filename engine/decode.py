"""The decode loop under every PyAV reader (``engine.video``): demux the first video stream
packet by packet, decode, time the frames (``engine.timeline``), hand the audio to an
:class:`~vidseg.engine.audio.AudioTrack` in the same pass, and tell a truncated file from a lost
network source from a clean end."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, Final

import av
import av.error

from vidseg.engine.audio import AudioTrack
from vidseg.engine.avinput import (
    MOOV_AT_END,
    STDIN,
    first_video_stream,
    is_network_source,
    open_input,
)
from vidseg.engine.avutil import AV_ERRORS, error_reason
from vidseg.engine.errors import SourceLostError, TruncatedVideoError, VideoIOError
from vidseg.engine.timeline import Timeline

__all__ = ["THREAD_TYPES", "decode_frames"]

logger = logging.getLogger(__name__)

THREAD_TYPES: Final[frozenset[str]] = frozenset({"NONE", "SLICE", "FRAME", "AUTO"})
"""Accepted ``thread_type`` values: AUTO (frame+slice threads, best for files) or SLICE (lowest
latency, for live cameras), FRAME, NONE."""


def decode_frames(
    path: str | os.PathLike[str],
    *,
    max_frames: int | None,
    thread_type: str,
    container: av.container.InputContainer | None = None,
    timeline: Timeline | None = None,
    audio: AudioTrack | None = None,
) -> Iterator[tuple[int, av.VideoFrame, Fraction]]:
    """Yield ``(index, frame, time_base)`` for the first video stream of ``path``, ``frame`` the
    PyAV frame as decoded; ``thread_type`` and the errors as
    :func:`~vidseg.engine.video.read_frames`'s. ``container``: already open on ``path`` (closed
    here when done), else ``path`` is opened. Timestamps go through ``timeline`` (a new one when
    None): they strictly increase. With ``audio``, the first audio stream's packets go there,
    demuxed in the same pass (after ``max_frames``, on until they cover the last frame).

    Demuxes packet by packet (rather than ``container.decode``) to count the packets that the
    demuxer marks as discarded (mp4 edit lists): the decoder drops those frames on purpose, so
    they must not count as missing when checking the declared frame count.
    """
    thread_name = thread_type.upper() if isinstance(thread_type, str) else ""
    if thread_name not in THREAD_TYPES:
        raise ValueError(f"thread_type must be one of {sorted(THREAD_TYPES)}, got {thread_type!r}")
    if max_frames == 0:
        if container is not None:
            container.close()
        return
    source = container if container is not None else open_input(path)
    with source as container, _released(audio):  # the track lets go before the source closes
        stream = first_video_stream(container, path)
        time_base = stream.time_base
        if time_base is None:
            raise VideoIOError(f"cannot read video {path!s}: the video stream has no time base")
        stream.thread_type = thread_name
        declared = stream.frames if stream.frames and stream.frames > 0 else None
        if timeline is None:
            timeline = Timeline(os.fspath(path))
        else:
            timeline.reopened()
        decoded = discarded = corrupt = 0
        last_pts: int | None = None
        step_s = 1 / Fraction(stream.average_rate or stream.guessed_rate or 25)  # a frame, s
        sound = None
        if audio is not None:
            sound = container.streams.audio[0] if container.streams.audio else None
            audio.bind(sound, os.fspath(path))
        packets = container.demux(stream) if sound is None else container.demux(stream, sound)
        while True:
            try:
                packet = next(packets, None)
                if packet is None:
                    break
                if sound is not None and packet.stream_index == sound.index:
                    if packet.size > 0:
                        timeline.packet(packet, "audio")
                        audio.put(packet)
                    continue
                if packet.size > 0:  # the final empty packet only flushes the decoder
                    discarded += packet.is_discard
                    corrupt += packet.is_corrupt
                    timeline.packet(packet, "video")
                av_frames = packet.decode()
            except AV_ERRORS as error:
                if is_network_source(path):  # a dropped connection or a read timeout
                    reason = (
                        "nothing received within the read timeout (timed out)"
                        if isinstance(error, av.error.ExitError)
                        else error_reason(error)
                    )
                    raise SourceLostError(
                        f"lost {path!s} after {decoded} frames: {reason}",
                        frames_decoded=decoded,
                    ) from error
                if decoded == 0 and os.fspath(path) == STDIN and "mp4" in container.format.name:
                    raise VideoIOError(
                        f"cannot read video from standard input: {MOOV_AT_END}"
                    ) from error
                raise TruncatedVideoError(
                    f"decoding {path!s} failed after {decoded} frames: {error_reason(error)}",
                    frames_decoded=decoded,
                ) from error
            for av_frame in timeline.timed(av_frames, time_base, step_s, decoded):
                last_pts = av_frame.pts
                yield decoded, av_frame, time_base
                decoded += 1
                if max_frames is not None and decoded >= max_frames:
                    if sound is not None and last_pts is not None:
                        end = last_pts * time_base + step_s
                        _audio_tail(packets, sound.index, end, timeline, audio)
                    return
        for av_frame in timeline.release():  # a source that never sent a timestamp
            yield decoded, av_frame, time_base
            decoded += 1
            if max_frames is not None and decoded >= max_frames:
                return
        if is_network_source(path) and _is_live(container):
            raise SourceLostError(
                f"lost {path!s} after {decoded} frames: the stream ended (the server closed "
                "the connection)",
                frames_decoded=decoded,
            )
        if (
            declared is not None
            and decoded < declared - discarded
            and not _reached_end(stream, last_pts)
        ):
            raise TruncatedVideoError(
                f"{path!s} ended after {decoded} of {declared - discarded} declared frames "
                "(file truncated or damaged)",
                frames_decoded=decoded,
            )
        if corrupt:  # the decoder concealed the damage and delivered every frame
            logger.warning("%s: demuxer flagged %d corrupt packet(s)", path, corrupt)
        logger.debug("%s: decoded %d frames (%d discarded by edit list)", path, decoded, discarded)


def _is_live(container: av.container.InputContainer) -> bool:
    """Whether a network source is a live stream (a camera, a server's broadcast), whose end
    is a loss, not the end of a video: it declares no duration, and has no known size (an HTTP
    stream without a length, RTSP, UDP, SRT) or is a live HLS playlist."""
    if container.duration is not None:
        return False
    try:
        size = container.size
    except (AttributeError, *AV_ERRORS):
        size = -1
    return size <= 0 or container.format.name in ("hls", "applehttp")


@contextmanager
def _released(audio: AudioTrack | None) -> Iterator[None]:
    """On the way out, the track stops using the source's stream as a template."""
    try:
        yield
    finally:
        if audio is not None:
            audio.release()


def _audio_tail(
    packets: Iterator[Any], index: int, end: Fraction, timeline: Timeline, audio: AudioTrack
) -> None:
    """Demux on after the last frame wanted until the audio (stream ``index``) reaches ``end``
    seconds, the last frame's end: interleaving may put it a little later in the file. Stops
    at a video packet a second past ``end``, after ``AUDIO_TAIL_PACKETS``, or at any error."""
    for _ in range(AUDIO_TAIL_PACKETS):
        try:
            packet = next(packets, None)
        except AV_ERRORS:
            return
        if packet is None or packet.time_base is None:
            return
        if packet.size == 0:
            continue
        timeline.packet(packet, "audio" if packet.stream_index == index else "video")
        if packet.stream_index != index:
            stamp = packet.dts if packet.dts is not None else packet.pts
            if stamp is not None and stamp * packet.time_base > end + 1:
                return
            continue
        audio.put(packet)
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is not None and stamp * packet.time_base >= end:
            return


AUDIO_TAIL_PACKETS: Final[int] = 500


def _reached_end(stream: av.video.stream.VideoStream, last_pts: int | None) -> bool:
    """Whether a frame with pts ``last_pts`` ends the stream's declared duration (within half a
    frame): then frames the container declares and does not hold were empty slots (an AVI
    counts a dropped frame as one), not a truncation."""
    rate = stream.average_rate or stream.guessed_rate
    if last_pts is None or not stream.duration or not rate or not stream.time_base:
        return False
    step = 1 / (rate * stream.time_base)
    return last_pts + step - (stream.start_time or 0) >= stream.duration - step / 2
