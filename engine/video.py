"""Video decode for the streaming engine, on PyAV (FFmpeg): the reader side.

Readers are plain generators. Time is carried as integer pts in a rational ``time_base``
(``Fraction``), never as float fps, so 29.97 fps material stays ``Fraction(30000, 1001)`` from
decode to encode (the writers: ``engine.writer``, ``engine.masks``, ``engine.audio``).

Public API:

* :class:`VideoInfo` -- container/stream metadata (``VideoInfo.from_path``).
* :func:`read_frames` and :func:`open_video` -- decode to :class:`~vidseg.engine.frame.Frame`
  objects (``(H, W, 3) uint8 RGB`` with source pts).
* :func:`read_label_frames` -- read back, bit-exactly, the ``(H, W) uint8`` label masks of a
  lossless :class:`~vidseg.engine.writer.VideoWriter` video.

Errors: anything wrong with a source (missing, not a video, decode failure) raises
:class:`~vidseg.engine.errors.VideoIOError`; a source that stops early raises its subclass
:class:`~vidseg.engine.errors.TruncatedVideoError` after every decodable frame was yielded.
Arguments that break the documented contract (non-positive sizes, a bad ``thread_type``) raise
``ValueError``/``TypeError``: those are caller bugs, not I/O failures.
"""

from __future__ import annotations

import logging
import operator
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Final, TypeVar

import av
import av.error
import numpy as np

from vidseg.engine.audio import AudioTrack
from vidseg.engine.avutil import AV_ERRORS, check_size, error_reason
from vidseg.engine.errors import SourceLostError, TruncatedVideoError, VideoIOError
from vidseg.engine.frame import Frame  # re-exported: read_frames yields it
from vidseg.engine.timeline import Timeline

__all__ = [
    "Frame",
    "VideoInfo",
    "is_network_source",
    "open_video",
    "read_frames",
    "read_label_frames",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

THREAD_TYPES: Final[frozenset[str]] = frozenset({"NONE", "SLICE", "FRAME", "AUTO"})
"""Accepted ``thread_type`` values: AUTO (frame+slice threads, best for files) or SLICE (lowest
latency, for live cameras), FRAME, NONE."""

_LABEL_PIX_FMTS: Final[frozenset[str]] = frozenset(
    {"gray", "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"}
)
"""8-bit pixel formats whose plane 0 is the luma plane, read verbatim by read_label_frames."""

_US_PER_S: Final[int] = 1_000_000

NETWORK_SCHEMES: Final[frozenset[str]] = frozenset(
    {"http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "tcp", "udp", "hls"}
)
"""URL schemes read over a network: they get open/read timeouts, and a failure after the first
frame is a lost source (``SourceLostError``), not a damaged file."""

RTSP_TRANSPORTS: Final[tuple[str, ...]] = ("tcp", "udp", "udp_multicast", "http")
"""FFmpeg's ``rtsp_transport`` values; tcp (the default here) survives lossy networks and NAT."""


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of the first video stream of a file, as the container declares it.

    A source whose frames carry a display rotation (phone clips: a display matrix) is decoded
    upright, as players show it: ``rotation`` says by how much frames are turned, and ``width``,
    ``height`` are the upright frames' (swapped for a quarter turn).

    Example:
        >>> info = VideoInfo.from_path("clip.mp4")  # doctest: +SKIP
        >>> info.width, info.height, info.fps  # doctest: +SKIP
        (64, 48, Fraction(25, 1))
    """

    width: int  # pixels
    height: int  # pixels
    fps: Fraction  # average frame rate, exact (30000/1001 stays exact)
    time_base: Fraction  # seconds per pts tick of the video stream
    frame_count: int | None  # frames declared by the container; None when it declares none
    codec: str  # FFmpeg decoder name, e.g. "h264"
    duration_s: float | None  # seconds; stream duration, else container duration, else None
    rotation: int = 0  # degrees counterclockwise the decoded frames are turned to be upright

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> VideoInfo:
        """Probe ``path``, decoding at most its first frame (for the display rotation).

        Args:
            path: a video file (or an FFmpeg URL such as ``rtsp://...``).

        Returns:
            The metadata of the file's first video stream.

        Raises:
            VideoIOError: the file is missing, is a directory, is not a readable video, has no
                video stream, or declares no frame rate.
        """
        with _open_input(path) as container:
            stream = _first_video_stream(container, path)
            info = _info_from_stream(container, stream, path)
            try:
                first = next(container.decode(stream), None)
            except AV_ERRORS:  # undecodable: read_frames says so; the declared metadata stands
                first = None
            return _rotated(info, first)


def read_frames(
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] | None = None,
    max_frames: int | None = None,
    thread_type: str = "AUTO",
    audio: AudioTrack | None = None,
) -> Iterator[Frame]:
    """Decode the first video stream of ``path`` to RGB frames, lazily.

    Scaling and the conversion to RGB happen in one swscale pass
    (``frame.reformat(width, height, format="rgb24")``). Pts and time base are the source's, so
    they can be handed to :class:`~vidseg.engine.writer.VideoWriter` unchanged; where the
    source's timestamps repeat or go back they are repaired (``engine.timeline``): they
    strictly increase.

    Args:
        path: the video file (or FFmpeg URL).
        size: ``(width, height)`` in pixels to scale to (bilinear); None keeps the source size.
        max_frames: stop after this many frames (0 yields nothing); None decodes to the end.
        thread_type: decoder threading, one of ``THREAD_TYPES`` (case-insensitive): "AUTO" for
            files (parallel, adds latency), "SLICE" for live sources.

    Yields:
        Frame: ``image`` is ``(H, W, 3) uint8 RGB`` C-contiguous, ``H, W`` the source size or
        ``size``; ``index`` counts from 0.

    Raises:
        ValueError: ``size``, ``max_frames`` or ``thread_type`` is invalid (raised on the first
            ``next()``, like every error of a generator).
        VideoIOError: the file is missing, is a directory, is not a video or has no video stream.
        TruncatedVideoError: decoding failed mid-stream, or the stream ended with fewer frames
            than the container declares (edit-list discarded frames excepted). Raised after every
            frame that did decode was yielded; ``frames_decoded`` is that count.

    Example:
        >>> for frame in read_frames("clip.mp4", size=(320, 180)):  # doctest: +SKIP
        ...     print(frame.index, frame.timestamp_s, frame.image.shape)
    """
    size, max_frames = _check_read_args(size, max_frames)
    decoded = _decode(path, max_frames=max_frames, thread_type=thread_type, audio=audio)
    yield from _rgb_frames(decoded, path, size)


# larger frames are refused at open: an 8K frame (33 Mpx) runs at ~0.9 GB peak RSS through
# vidseg-run (1080p: 0.29 GB), the queues hold ~10 frames, so 16K would need several GB
MAX_FRAME_PIXELS = 8192 * 8192


def open_video(
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] | None = None,
    max_frames: int | None = None,
    thread_type: str = "AUTO",
    timeout_s: float | None = None,
    rtsp_transport: str = "tcp",
    timeline: Timeline | None = None,
    audio: AudioTrack | None = None,
) -> tuple[VideoInfo, Iterator[Frame]]:
    """Open ``path`` once: its ``VideoInfo`` now, and its frames (as :func:`read_frames`).

    For inputs that cannot be opened twice, a pipe (``"-"`` is standard input) or a live
    stream, where probing with ``VideoInfo.from_path`` and then reading would need two opens.
    The container stays open until the frame iterator is exhausted or closed.

    Args:
        timeout_s: network sources only (see :func:`is_network_source`): seconds to wait for
            the connection and then for each read; None or 0 waits forever.
        rtsp_transport: ``rtsp://`` sources only, one of ``RTSP_TRANSPORTS``.
        timeline: the clock the frames' pts follow (``engine.timeline``); pass the same one to
            each reopening of a source (a reconnect) so its timestamps continue. None: a new
            one.
        audio: where the source's first audio stream goes, demuxed with the video (one
            connection per source): hand the same track to the ``VideoWriter`` (see
            ``engine.audio``). None: the audio is not read.

    Raises:
        SourceLostError: a network source sent nothing within ``timeout_s`` (at once), or
            stopped delivering mid-stream (while iterating, after the frames that arrived): a
            read timed out, the connection dropped, or a live stream (no duration, no size:
            a camera, a server's broadcast) ended.
        VideoIOError: as :meth:`VideoInfo.from_path`, or frames over ``MAX_FRAME_PIXELS``, at
            once; decode errors as :func:`read_frames`, while iterating.
    """
    size, max_frames = _check_read_args(size, max_frames)
    container = _open_input(path, timeout_s=timeout_s, rtsp_transport=rtsp_transport)
    try:
        info = _info_from_stream(container, _first_video_stream(container, path), path)
        if info.width * info.height > MAX_FRAME_PIXELS:  # before a frame is decoded
            raise VideoIOError(
                f"cannot read video {os.fspath(path)}: {info.width}x{info.height} frames are over "
                f"the {MAX_FRAME_PIXELS // 1_000_000} Mpx limit (8192x8192; 8K, 7680x4320, is "
                "handled): scale it down first, e.g. ffmpeg -vf scale=3840:-2"
            )
    except BaseException:
        container.close()
        raise
    decoded = _decode(
        path,
        max_frames=max_frames,
        thread_type=thread_type,
        container=container,
        timeline=timeline,
        audio=audio,
    )
    first = next(decoded, None)  # its display rotation sets the upright size
    if first is not None:
        info = _rotated(info, first[1])
        decoded = prepend(first, decoded)
    return info, _rgb_frames(decoded, path, size)


def prepend(first: T, rest: Iterator[T]) -> Iterator[T]:
    """``first`` then ``rest``; closing it closes ``rest``."""
    try:
        yield first
        yield from rest
    finally:
        rest_close = getattr(rest, "close", None)
        if rest_close is not None:
            rest_close()


def _quarter_turns(av_frame: av.VideoFrame) -> int:
    """Counterclockwise quarter turns (0..3) that make ``av_frame`` upright (its display
    matrix's rotation, rounded to a multiple of 90 degrees)."""
    try:
        rotation = av_frame.rotation
    except (AttributeError, ValueError, TypeError):  # no usable display matrix
        return 0
    return round((rotation or 0) / 90) % 4


def _rotated(info: VideoInfo, av_frame: av.VideoFrame | None) -> VideoInfo:
    """``info`` for upright frames of a source whose first frame is ``av_frame``."""
    turns = 0 if av_frame is None else _quarter_turns(av_frame)
    if not turns:
        return info
    width, height = (info.height, info.width) if turns % 2 else (info.width, info.height)
    return replace(info, width=width, height=height, rotation=90 * turns)


def _check_read_args(
    size: tuple[int, int] | None, max_frames: int | None
) -> tuple[tuple[int, int] | None, int | None]:
    if size is not None:
        size = check_size(size)
    if max_frames is not None:
        max_frames = operator.index(max_frames)
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    return size, max_frames


def _rgb_frames(
    decoded: Iterator[tuple[int, av.VideoFrame, Fraction]],
    path: object,
    size: tuple[int, int] | None,
) -> Iterator[Frame]:
    """Decoded frames -> ``Frame``s: scaling and RGB conversion in one swscale pass, then the
    display rotation (``size`` is the upright frame's)."""
    width, height = size if size is not None else (None, None)
    try:
        for index, av_frame, time_base in decoded:
            turns = _quarter_turns(av_frame)
            try:
                if turns % 2:  # scale before the quarter turn: the coded frame lies on its side
                    rgb = av_frame.reformat(height, width, format="rgb24").to_ndarray()
                else:
                    rgb = av_frame.reformat(width, height, format="rgb24").to_ndarray()
            except AV_ERRORS as error:
                raise VideoIOError(
                    f"cannot convert frame {index} of {path!s} to RGB: {error_reason(error)}"
                ) from error
            if turns:
                rgb = np.rot90(rgb, turns)
            # Rows of rgb24 are padded when width*3 is not a multiple of the alignment.
            yield Frame(
                image=np.ascontiguousarray(rgb), index=index, pts=av_frame.pts, time_base=time_base
            )
    finally:
        close = getattr(decoded, "close", None)
        if close is not None:
            close()  # closes the container even when the consumer stops early


def read_label_frames(
    path: str | os.PathLike[str], *, thread_type: str = "AUTO"
) -> Iterator[np.ndarray]:
    """Read back label masks written by ``VideoWriter(..., lossless=True)``, bit-exactly.

    Yields the decoder's luma plane verbatim, without any colour conversion: H.264 4:0:0 is
    decoded by FFmpeg as ``yuv420p`` with neutral chroma, and converting that to gray through
    swscale would apply a limited-range mapping (0 -> 16 ...) and break the labels.

    Args:
        path: a lossless label video.
        thread_type: decoder threading, see :func:`read_frames`.

    Yields:
        np.ndarray: ``(H, W) uint8`` label mask, C-contiguous, one per frame.

    Raises:
        VideoIOError: as :func:`read_frames`; also when the stream's pixel format has no 8-bit
            luma plane (not a label video).
        TruncatedVideoError: as :func:`read_frames`.

    Example:
        >>> masks = list(read_label_frames("labels.mp4"))  # doctest: +SKIP
    """
    for index, av_frame, _ in _decode(path, max_frames=None, thread_type=thread_type):
        pix_fmt = av_frame.format.name
        if pix_fmt not in _LABEL_PIX_FMTS:
            raise VideoIOError(
                f"{path!s} is not a label video: frame {index} has pixel format {pix_fmt!r}, "
                "expected an 8-bit luma plane"
            )
        plane = av_frame.planes[0]
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        yield np.ascontiguousarray(rows[:, : plane.width])


def _decode(
    path: str | os.PathLike[str],
    *,
    max_frames: int | None,
    thread_type: str,
    container: av.container.InputContainer | None = None,
    timeline: Timeline | None = None,
    audio: AudioTrack | None = None,
) -> Iterator[tuple[int, av.VideoFrame, Fraction]]:
    """Yield ``(index, frame, time_base)`` for the first video stream; see read_frames' Raises.
    ``container``: already open on ``path`` (closed here when done), else ``path`` is opened.
    Timestamps go through ``timeline`` (a new one when None): they strictly increase. With
    ``audio``, the first audio stream's packets go there, demuxed in the same pass (after
    ``max_frames``, on until they cover the last frame).

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
    source = container if container is not None else _open_input(path)
    with source as container, _released(audio):  # the track lets go before the source closes
        stream = _first_video_stream(container, path)
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


STDIN: Final = "-"  # an input path that means standard input (a pipe)
MOOV_AT_END: Final = (
    "an mp4 whose index is at the end cannot be read from a pipe: pass the file, or remux it "
    "with ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4"
)


def is_network_source(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL read over a network (``NETWORK_SCHEMES``: rtsp://, http://...)."""
    scheme, sep, _ = os.fspath(path).partition("://")
    return bool(sep) and scheme.lower() in NETWORK_SCHEMES


def _network_options(name: str, timeout_s: float | None, rtsp_transport: str) -> dict[str, str]:
    """FFmpeg protocol options for a network URL: socket timeouts in microseconds (``rw_timeout``
    for http and the generic protocols, ``timeout`` for rtsp, whose ``stimeout`` FFmpeg 5
    removed) and the rtsp transport. PyAV's own ``timeout`` backs them up for every protocol."""
    options: dict[str, str] = {}
    scheme = name.partition("://")[0].lower()
    if scheme in ("rtsp", "rtsps"):
        if rtsp_transport not in RTSP_TRANSPORTS:
            raise ValueError(
                f"rtsp_transport must be one of {RTSP_TRANSPORTS}, got {rtsp_transport!r}"
            )
        options["rtsp_transport"] = rtsp_transport
        if timeout_s:
            options["timeout"] = str(round(timeout_s * _US_PER_S))
    elif timeout_s:
        options["rw_timeout"] = str(round(timeout_s * _US_PER_S))
    return options


CAMERA_INDEX_MAX = 63  # "vidseg-run 0" .. "63" name a camera; larger numbers are file names


def camera_source(name: str) -> str:
    """``name`` as ``open_video`` takes it: a bare camera index (``"0"``) becomes the V4L2 device
    ``/dev/video0`` unless a file of that name exists; anything else is returned unchanged."""
    if name.isdigit() and int(name) <= CAMERA_INDEX_MAX and not os.path.exists(name):
        return f"/dev/video{int(name)}"
    return name


def is_camera(name: str | os.PathLike[str]) -> bool:
    """``/dev/videoN``: a V4L2 camera (live: no audio to copy, cannot be read twice)."""
    return os.fspath(name).startswith("/dev/video")


def _open_input(
    path: str | os.PathLike[str], *, timeout_s: float | None = None, rtsp_transport: str = "tcp"
) -> av.container.InputContainer:
    """Open ``path`` for reading; every failure becomes a one-line VideoIOError naming the file.
    ``"-"`` reads standard input (FFmpeg's ``pipe:0``): streamable containers (.ts, .mkv,
    fragmented or faststart .mp4); ``/dev/videoN`` opens a V4L2 camera. A network URL gets
    ``timeout_s`` for the connection and for each later read (``SourceLostError`` when it
    passes with nothing received)."""
    name = os.fspath(path)
    options: dict[str, Any] = {}
    if is_network_source(name):
        options["options"] = _network_options(name, timeout_s, rtsp_transport)
        if timeout_s:
            options["timeout"] = (timeout_s, timeout_s)
    if name == STDIN:
        name = "pipe:0"
    elif name.startswith("/dev/video"):  # a V4L2 camera (not exercised in CI: no camera there)
        options["format"] = "v4l2"
    if "://" not in name and name != "pipe:0":  # plain file: a precise reason, not FFmpeg's
        if not os.path.exists(name):
            raise VideoIOError(f"cannot read video {name}: no such file")
        if os.path.isdir(name):
            raise VideoIOError(f"cannot read video {name}: is a directory")
    started = time.monotonic()
    try:
        return av.open(name, mode="r", **options)
    except AV_ERRORS as error:
        waited = time.monotonic() - started
        if timeout_s and (
            isinstance(error, (av.error.ExitError, av.error.TimeoutError)) or waited >= timeout_s
        ):
            # rtsp reports its own socket timeout as "invalid data": the clock tells
            raise SourceLostError(
                f"cannot read video {name}: nothing received within {timeout_s:g} s (timed out)",
                frames_decoded=0,
            ) from error
        raise VideoIOError(
            f"cannot read video {name}: not a readable video ({error_reason(error)})"
        ) from error


def _first_video_stream(
    container: av.container.InputContainer, path: str | os.PathLike[str]
) -> av.video.stream.VideoStream:
    """Return the container's first video stream, or raise VideoIOError when it has none."""
    if not container.streams.video:
        raise VideoIOError(f"cannot read video {os.fspath(path)}: no video stream")
    return container.streams.video[0]


def _info_from_stream(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    path: str | os.PathLike[str],
) -> VideoInfo:
    """Build VideoInfo from an open stream; raise VideoIOError when rate or time base is unknown."""
    fps = next(
        (rate for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate) if rate),
        None,
    )
    if fps is None or stream.time_base is None:
        raise VideoIOError(f"cannot read video {os.fspath(path)}: frame rate or time base unknown")
    if stream.duration is not None:
        duration_s: float | None = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration_s = container.duration / av.time_base
    else:
        duration_s = None
    return VideoInfo(
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        fps=Fraction(fps),
        time_base=Fraction(stream.time_base),
        frame_count=int(stream.frames) if stream.frames and stream.frames > 0 else None,
        codec=str(stream.codec_context.name),
        duration_s=duration_s,
    )
