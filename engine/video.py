"""Video decode and encode for the streaming engine, on PyAV (FFmpeg).

Readers are plain generators; writers are context managers that publish their output atomically.
Time is carried as integer pts in a rational ``time_base`` (``Fraction``), never as float fps, so
29.97 fps material stays ``Fraction(30000, 1001)`` from decode to encode.

Public API:

* :class:`VideoInfo` -- container/stream metadata (``VideoInfo.from_path``).
* :class:`Frame` and :func:`read_frames` -- decode to ``(H, W, 3) uint8 RGB`` with source pts.
* :class:`VideoWriter` -- atomic H.264 writer for RGB frames, or lossless for ``(H, W) uint8``
  label masks (read those back exactly with :func:`read_label_frames`).
* :class:`MaskSequenceWriter` -- atomic directory of ``000000.png, 000001.png, ...`` label masks.

Errors: anything wrong with a source or sink (missing, not a video, encoder or disk failure) raises
:class:`~vidseg.engine.errors.VideoIOError`; a source that stops early raises its subclass
:class:`~vidseg.engine.errors.TruncatedVideoError` after every decodable frame was yielded.
Arguments that break the documented contract (wrong array shape or dtype, non-positive sizes,
non-increasing pts) raise ``ValueError``/``TypeError``: those are caller bugs, not I/O failures.
"""

from __future__ import annotations

import logging
import numbers
import operator
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import av
import av.error
import cv2
import numpy as np

from vidseg.engine.errors import SourceLostError, TruncatedVideoError, VideoIOError

__all__ = [
    "Frame",
    "MaskSequenceWriter",
    "VideoInfo",
    "VideoWriter",
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

_AV_ERRORS: Final = (av.error.FFmpegError, OSError)
"""What PyAV raises for I/O, demux, decode and encode failures (FFmpegError subclasses
ValueError/OSError in av 18)."""

_LABEL_PIX_FMTS: Final[frozenset[str]] = frozenset(
    {"gray", "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"}
)
"""8-bit pixel formats whose plane 0 is the luma plane, read verbatim by read_label_frames."""

_MOV_SUFFIXES: Final[frozenset[str]] = frozenset({".mp4", ".m4v", ".mov"})
_CRF_CODECS: Final[frozenset[str]] = frozenset({"libx264", "libx265"})
_LOSSLESS_CODECS: Final[frozenset[str]] = frozenset({"libx264", "ffv1"})
_MAX_TIMESCALE: Final[int] = 2**31 - 1
_US_PER_S: Final[int] = 1_000_000

NETWORK_SCHEMES: Final[frozenset[str]] = frozenset(
    {"http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "tcp", "udp", "hls"}
)
"""URL schemes read over a network: they get open/read timeouts, and a failure after the first
frame is a lost source (``SourceLostError``), not a damaged file."""

RTSP_TRANSPORTS: Final[tuple[str, ...]] = ("tcp", "udp", "udp_multicast", "http")
"""FFmpeg's ``rtsp_transport`` values; tcp (the default here) survives lossy networks and NAT."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


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
            except _AV_ERRORS:  # undecodable: read_frames says so; the declared metadata stands
                first = None
            return _rotated(info, first)


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame with its source timestamp.

    ``eq=False``: frames compare by identity (comparing pixel arrays element-wise is never what
    ``==`` should mean). The array belongs to the consumer; nothing else holds a reference.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous
    index: int  # 0-based position in decode (= presentation) order
    pts: int | None  # presentation timestamp in time_base units, from the source; None if absent
    time_base: Fraction  # seconds per pts tick (the source stream's time base)
    discontinuity: bool = False  # the source restarted here (a reconnect): the past is unrelated

    @property
    def timestamp_s(self) -> float | None:
        """Presentation time in seconds (``pts * time_base``); None when the source had no pts."""
        if self.pts is None:
            return None
        return float(self.pts * self.time_base)


def read_frames(
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] | None = None,
    max_frames: int | None = None,
    thread_type: str = "AUTO",
) -> Iterator[Frame]:
    """Decode the first video stream of ``path`` to RGB frames, lazily.

    Scaling and the conversion to RGB happen in one swscale pass
    (``frame.reformat(width, height, format="rgb24")``). Pts and time base are the source's, so
    they can be handed to :class:`VideoWriter` unchanged.

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
    yield from _rgb_frames(_decode(path, max_frames=max_frames, thread_type=thread_type), path,
                           size)  # fmt: skip


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
) -> tuple[VideoInfo, Iterator[Frame]]:
    """Open ``path`` once: its ``VideoInfo`` now, and its frames (as :func:`read_frames`).

    For inputs that cannot be opened twice, a pipe (``"-"`` is standard input) or a live
    stream, where probing with ``VideoInfo.from_path`` and then reading would need two opens.
    The container stays open until the frame iterator is exhausted or closed.

    Args:
        timeout_s: network sources only (see :func:`is_network_source`): seconds to wait for
            the connection and then for each read; None or 0 waits forever.
        rtsp_transport: ``rtsp://`` sources only, one of ``RTSP_TRANSPORTS``.

    Raises:
        SourceLostError: a network source sent nothing within ``timeout_s`` (at once), or
            stopped delivering mid-stream (while iterating, after the frames that arrived).
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
    decoded = _decode(path, max_frames=max_frames, thread_type=thread_type, container=container)
    first = next(decoded, None)  # its display rotation sets the upright size
    if first is not None:
        info = _rotated(info, first[1])
        decoded = _prepend(first, decoded)
    return info, _rgb_frames(decoded, path, size)


def _prepend(first: T, rest: Iterator[T]) -> Iterator[T]:
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


def _check_read_args(size: tuple[int, int] | None,
                     max_frames: int | None) -> tuple[tuple[int, int] | None, int | None]:  # fmt: skip
    if size is not None:
        size = _check_size(size)
    if max_frames is not None:
        max_frames = operator.index(max_frames)
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    return size, max_frames


def _rgb_frames(decoded: Iterator[tuple[int, av.VideoFrame, Fraction]], path: object,
                size: tuple[int, int] | None) -> Iterator[Frame]:  # fmt: skip
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
            except _AV_ERRORS as error:
                raise VideoIOError(
                    f"cannot convert frame {index} of {path!s} to RGB: {_reason(error)}"
                ) from error
            if turns:
                rgb = np.rot90(rgb, turns)
            # Rows of rgb24 are padded when width*3 is not a multiple of the alignment.
            yield Frame(image=np.ascontiguousarray(rgb), index=index, pts=av_frame.pts,
                        time_base=time_base)  # fmt: skip
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
) -> Iterator[tuple[int, av.VideoFrame, Fraction]]:
    """Yield ``(index, frame, time_base)`` for the first video stream; see read_frames' Raises.
    ``container``: already open on ``path`` (closed here when done), else ``path`` is opened.

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
    with container if container is not None else _open_input(path) as container:
        stream = _first_video_stream(container, path)
        time_base = stream.time_base
        if time_base is None:
            raise VideoIOError(f"cannot read video {path!s}: the video stream has no time base")
        stream.thread_type = thread_name
        declared = stream.frames if stream.frames and stream.frames > 0 else None
        decoded = discarded = corrupt = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
                if packet is None:
                    break
                if packet.size > 0:  # the final empty packet only flushes the decoder
                    discarded += packet.is_discard
                    corrupt += packet.is_corrupt
                av_frames = packet.decode()
            except _AV_ERRORS as error:
                if is_network_source(path):  # a dropped connection or a read timeout
                    reason = ("nothing received within the read timeout (timed out)"
                              if isinstance(error, av.error.ExitError) else _reason(error))  # fmt: skip
                    raise SourceLostError(
                        f"lost {path!s} after {decoded} frames: {reason}",
                        frames_decoded=decoded,
                    ) from error
                raise TruncatedVideoError(
                    f"decoding {path!s} failed after {decoded} frames: {_reason(error)}",
                    frames_decoded=decoded,
                ) from error
            for av_frame in av_frames:
                yield decoded, av_frame, time_base
                decoded += 1
                if max_frames is not None and decoded >= max_frames:
                    return
        if declared is not None and decoded < declared - discarded:
            raise TruncatedVideoError(
                f"{path!s} ended after {decoded} of {declared - discarded} declared frames "
                "(file truncated or damaged)",
                frames_decoded=decoded,
            )
        if corrupt:  # the decoder concealed the damage and delivered every frame
            logger.warning("%s: demuxer flagged %d corrupt packet(s)", path, corrupt)
        logger.debug("%s: decoded %d frames (%d discarded by edit list)", path, decoded, discarded)


STDIN: Final = "-"  # an input path that means standard input (a pipe)


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
    except _AV_ERRORS as error:
        waited = time.monotonic() - started
        if timeout_s and (isinstance(error, (av.error.ExitError, av.error.TimeoutError))
                          or waited >= timeout_s):  # fmt: skip
            # rtsp reports its own socket timeout as "invalid data": the clock tells
            raise SourceLostError(
                f"cannot read video {name}: nothing received within {timeout_s:g} s (timed out)",
                frames_decoded=0,
            ) from error
        raise VideoIOError(
            f"cannot read video {name}: not a readable video ({_reason(error)})"
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


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class VideoWriter:
    """H.264 (libx264) writer; context manager; atomic.

    Frames go to a hidden temporary file beside ``path`` (``.NAME.partial.SUFFIX``, same
    directory so the final rename is atomic, same suffix so FFmpeg picks the same muxer). When the
    with-block exits cleanly, the encoder is flushed (``stream.encode()`` with no frame, remaining
    packets muxed), the container is closed and the temp file is renamed onto ``path`` (an
    existing file there is replaced, unless ``overwrite=False``: then it is kept and the exit
    raises). When the block raises, the container is closed without flushing, the temp file is
    deleted, nothing appears at ``path`` and the exception propagates.

    Two modes:

    * ``lossless=False``: ``write`` takes ``(H, W, 3) uint8 RGB``; encoded as ``yuv420p`` with
      ``crf``/``preset``. yuv420p needs even sizes, so an odd width/height is padded by one pixel
      (the last column/row is repeated): the output is ``output_size`` =
      ``(width + width % 2, height + height % 2)``.
    * ``lossless=True``: ``write`` takes ``(H, W) uint8`` label masks; encoded as 4:0:0 ``gray``
      with ``qp=0`` (libx264, or ``codec="ffv1"`` for .mkv). Bit-exact, any size (no padding);
      read back with :func:`read_label_frames`.

    Timestamps: ``pts`` are integers in ``time_base`` units (default ``1/fps``). Passing a source's
    pts together with ``time_base=source.time_base`` preserves them: the read-back frames carry
    the same timestamps (mp4/mov store them exactly; Matroska stores milliseconds).

    Attributes:
        path: the final output path.
        fps: the declared frame rate.
        time_base: seconds per pts tick of ``write``'s ``pts``.

    Raises (constructor):
        ValueError: non-positive size, float/non-positive fps or time_base, crf out of range,
            unsupported lossless codec.
        VideoIOError: the output directory does not exist or is not writable, ``path`` is a
            directory, or ``path`` exists and ``overwrite`` is False.

    Example:
        >>> info = VideoInfo.from_path("in.mp4")  # doctest: +SKIP
        >>> with VideoWriter("out.mp4", width=info.width, height=info.height, fps=info.fps,
        ...                  time_base=info.time_base) as writer:  # doctest: +SKIP
        ...     for frame in read_frames("in.mp4"):
        ...         writer.write(frame.image, pts=frame.pts)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction | None = None,
        codec: str = "libx264",
        crf: int = 23,
        preset: str = "veryfast",
        lossless: bool = False,
        audio_from: str | os.PathLike[str] | None = None,
        audio_timeout_s: float | None = None,
        overwrite: bool = True,
    ) -> None:
        self.path: Path = Path(path)
        self._audio_from = audio_from  # copy this file's audio into the output
        self._audio_timeout_s = audio_timeout_s  # open/read timeout when audio_from is a URL
        self._overwrite = bool(overwrite)  # False: an existing file at path is never replaced
        self._audio: tuple[Any, Any, Any] | None = None
        self._width, self._height = _check_size((width, height))
        self.fps: Fraction = _check_rational("fps", fps)
        self.time_base: Fraction = (
            Fraction(self.fps.denominator, self.fps.numerator)
            if time_base is None
            else _check_rational("time_base", time_base)
        )
        crf = operator.index(crf)
        if codec in _CRF_CODECS and not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        if lossless and codec not in _LOSSLESS_CODECS:
            raise ValueError(
                f"lossless=True supports codecs {sorted(_LOSSLESS_CODECS)}, got {codec!r}"
            )
        self._codec = codec
        self._crf = crf
        self._preset = preset
        self._lossless = bool(lossless)
        if self._lossless:  # 4:0:0 has no chroma subsampling: any size works
            self._out_width, self._out_height = self._width, self._height
        else:
            self._out_width = self._width + self._width % 2
            self._out_height = self._height + self._height % 2
        self._temp_path = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._frame_step = 1 / (self.fps * self.time_base)  # pts ticks per frame
        self._frames_written = 0
        self._last_pts: int | None = None
        self._explicit_pts = False
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        _check_output_parent(self.path)
        if self.path.is_dir():
            raise VideoIOError(f"cannot write video {self.path}: is a directory")
        self._check_not_there()

    def _check_not_there(self) -> None:
        """Raise VideoIOError when ``path`` exists and may not be replaced."""
        if not self._overwrite and os.path.lexists(self.path):
            raise VideoIOError(f"cannot write video {self.path}: exists (overwrite=False)")

    @property
    def frames_written(self) -> int:
        """Number of frames accepted by ``write`` so far."""
        return self._frames_written

    @property
    def output_size(self) -> tuple[int, int]:
        """``(width, height)`` of the encoded video (odd sizes padded to even unless lossless)."""
        return self._out_width, self._out_height

    def __enter__(self) -> VideoWriter:
        """Open the temporary output and configure the encoder.

        Raises:
            RuntimeError: the writer is already open.
            VideoIOError: the container or encoder cannot be created (unknown suffix, codec
                missing from this FFmpeg build, unsupported option).
        """
        if self._container is not None:
            raise RuntimeError("VideoWriter is already open")
        _check_output_parent(self.path)
        options: dict[str, str] = {}
        timescale = self.time_base.denominator
        if self.path.suffix.lower() in _MOV_SUFFIXES and timescale <= _MAX_TIMESCALE:
            # The mov muxer stores the edit-list start in the movie timescale (default 1/1000),
            # which rounds a non-zero first pts (1000/12800 s -> 998 ticks). Match the track's.
            options["movie_timescale"] = str(timescale)
        try:
            container = av.open(str(self._temp_path), mode="w", options=options)
        except _AV_ERRORS as error:
            raise VideoIOError(f"cannot create video {self.path}: {_reason(error)}") from error
        except ValueError as error:  # PyAV: "Could not determine output format"
            raise VideoIOError(
                f"cannot create video {self.path}: no container format for suffix "
                f"{self.path.suffix!r} ({_reason(error)})"
            ) from error
        try:
            stream = container.add_stream(self._codec, rate=self.fps)
            stream.width = self._out_width
            stream.height = self._out_height
            stream.time_base = self.time_base
            stream.codec_context.time_base = self.time_base
            if self._lossless:
                stream.pix_fmt = "gray"
                if self._codec == "libx264":
                    stream.options = {"qp": "0", "preset": self._preset}
            else:
                stream.pix_fmt = "yuv420p"
                if self._codec in _CRF_CODECS:
                    stream.options = {"crf": str(self._crf), "preset": self._preset}
                if self._codec == "libx265":  # x265 prints its settings to stderr otherwise
                    stream.options["x265-params"] = "log-level=error"
        except (*_AV_ERRORS, ValueError, TypeError) as error:
            container.close()
            _remove_quietly(self._temp_path)
            reason = (
                "codec not available in this FFmpeg build"
                if isinstance(error, av.codec.codec.UnknownCodecError)
                else _reason(error)
            )
            raise VideoIOError(
                f"cannot configure encoder {self._codec!r} for {self.path}: {reason}"
            ) from error
        self._container, self._stream = container, stream
        self._audio = self._open_audio(container) if self._audio_from is not None else None
        logger.debug(
            "writing %s via %s: %dx%d, fps %s, time base %s, codec %s, lossless %s",
            self.path,
            self._temp_path.name,
            self._out_width,
            self._out_height,
            self.fps,
            self.time_base,
            self._codec,
            self._lossless,
        )
        return self

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one frame.

        Args:
            image: ``(height, width, 3) uint8 RGB``, or ``(height, width) uint8`` label mask when
                the writer is lossless; ``height, width`` as given to the constructor.
            pts: presentation timestamp in ``time_base`` units, strictly greater than the previous
                one. None continues from the previous frame by one frame duration
                (``1 / (fps * time_base)`` ticks; with the default time base, pts = running index).

        Raises:
            RuntimeError: called outside the with-block.
            TypeError / ValueError: wrong dtype or shape, or pts not increasing.
            VideoIOError: the encoder or the OS failed (e.g. disk full).
        """
        if self._container is None or self._stream is None:
            raise RuntimeError("VideoWriter.write() called outside its with-block")
        pixels = self._check_image(image)
        frame_pts = self._next_pts(pts)
        if pixels.shape[:2] != (self._out_height, self._out_width):
            pad = ((0, self._out_height - self._height), (0, self._out_width - self._width))
            pixels = np.pad(pixels, pad + ((0, 0),) * (pixels.ndim - 2), mode="edge")
        try:
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(pixels), format="gray" if self._lossless else "rgb24"
            )
            frame.pts = frame_pts
            frame.time_base = self.time_base
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except _AV_ERRORS as error:
            raise VideoIOError(
                f"cannot write frame {self._frames_written} to {self.path}: {_reason(error)}"
            ) from error
        self._last_pts = frame_pts
        self._frames_written += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Finish or abandon the output; see the class docstring.

        Raises:
            VideoIOError: (clean exit only) flushing, closing or renaming failed, or no frame was
                written (FFmpeg writes no file then); the temp file is deleted.
        """
        container, stream = self._container, self._stream
        self._container = self._stream = None
        if container is None or stream is None:
            return
        if exc_type is not None:
            # The output is discarded anyway: skip the flush (it would encode every buffered
            # frame, and may fail again if the encoder was the cause) and just release.
            try:
                container.close()
                if self._audio is not None:
                    self._audio[0].close()
            except _AV_ERRORS as error:
                logger.debug("closing abandoned %s failed: %s", self._temp_path, error)
            _remove_quietly(self._temp_path)
            logger.debug("discarded %s after %s", self._temp_path, exc_type.__name__)
            return
        try:
            try:
                if self._frames_written:
                    for packet in stream.encode(None):
                        container.mux(packet)
                    self._copy_audio(container)
            finally:
                container.close()
                if self._audio is not None:
                    self._audio[0].close()
        except _AV_ERRORS as error:
            _remove_quietly(self._temp_path)
            raise VideoIOError(f"cannot finish video {self.path}: {_reason(error)}") from error
        except BaseException:
            _remove_quietly(self._temp_path)
            raise
        if self._frames_written == 0:
            _remove_quietly(self._temp_path)
            raise VideoIOError(f"no frames were written to {self.path}; no file was created")
        try:
            self._check_not_there()
            os.replace(self._temp_path, self.path)
        except VideoIOError:
            _remove_quietly(self._temp_path)
            raise
        except OSError as error:
            _remove_quietly(self._temp_path)
            raise VideoIOError(
                f"cannot move finished video onto {self.path}: {_reason(error)}"
            ) from error
        logger.debug("wrote %d frames to %s", self._frames_written, self.path)

    def _open_audio(self, container: av.container.OutputContainer) -> tuple[Any, Any, Any] | None:
        """Add an output stream copying the first audio stream of ``audio_from`` (if it has one).

        Returns (source container, source stream, output stream), or None without audio.
        """
        name = os.fspath(self._audio_from)
        timeout = self._audio_timeout_s if is_network_source(name) else None
        try:
            source = av.open(name, mode="r", timeout=timeout or None)
        except _AV_ERRORS as error:
            raise VideoIOError(f"cannot read audio from {self._audio_from}: {_reason(error)}") \
                from error  # fmt: skip
        if not source.streams.audio:
            source.close()
            return None
        src_stream = source.streams.audio[0]
        try:
            out_stream = container.add_stream_from_template(src_stream)
        except (*_AV_ERRORS, ValueError) as error:
            source.close()
            logger.warning("audio of %s cannot go into %s (%s): writing video only",
                           self._audio_from, self.path.name, _reason(error))  # fmt: skip
            return None
        return source, src_stream, out_stream

    def _copy_audio(self, container: av.container.OutputContainer) -> None:
        """Remux the source's audio packets untouched, up to the end of the last video frame
        (so an interrupted run's shorter video does not carry the full soundtrack)."""
        if self._audio is None or self._last_pts is None:
            return
        source, src_stream, out_stream = self._audio
        end_s = (self._last_pts + self._frame_step) * self.time_base
        for packet in source.demux(src_stream):
            if packet.dts is None or packet.size == 0:
                continue  # the demuxer's flush packet
            if packet.pts is not None and packet.pts * packet.time_base >= end_s:
                break
            packet.stream = out_stream
            container.mux(packet)

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        """Validate dtype and shape against the writer's mode and size; return the array."""
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise TypeError(f"image must be uint8, got {image.dtype}")
        expected = (self._height, self._width) if self._lossless else (self._height, self._width, 3)
        if image.shape != expected:
            kind = "(H, W) label mask" if self._lossless else "(H, W, 3) RGB image"
            raise ValueError(f"expected a {kind} of shape {expected}, got {image.shape}")
        return image

    def _next_pts(self, pts: int | None) -> int:
        """Resolve the pts of the next frame and check it increases."""
        if pts is None:
            if self._last_pts is None:
                return 0
            if not self._explicit_pts:
                return round(self._frames_written * self._frame_step)
            return self._last_pts + max(1, round(self._frame_step))
        value = operator.index(pts)
        if self._last_pts is not None and value <= self._last_pts:
            raise ValueError(f"pts must increase: got {value} after {self._last_pts}")
        self._explicit_pts = True
        return value


class MaskSequenceWriter:
    """Write ``(H, W) uint8`` label masks as ``000000.png, 000001.png, ...``; atomic directory.

    Files go into ``DIR.partial/`` beside ``DIR``; a clean exit of the with-block renames it to
    ``DIR``. An existing ``DIR`` that is empty is replaced; a non-empty one is replaced only with
    ``overwrite=True`` (it is moved aside first, then deleted after the rename). When the block
    raises, ``DIR.partial/`` is deleted, ``DIR`` is untouched and the exception propagates.
    PNG is lossless, so every label value 0..255 round-trips exactly (``cv2.imread(p,
    cv2.IMREAD_UNCHANGED)``).

    Raises (constructor):
        VideoIOError: the parent directory does not exist, ``DIR`` is a file, or ``DIR`` is a
            non-empty directory and ``overwrite`` is False.

    Example:
        >>> with MaskSequenceWriter("out/masks") as sink:  # doctest: +SKIP
        ...     sink.write(np.zeros((48, 64), np.uint8))
    """

    def __init__(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.directory: Path = Path(directory)
        self.overwrite: bool = bool(overwrite)
        self._partial = self.directory.with_name(self.directory.name + ".partial")
        self._frames_written = 0
        self._open = False
        _check_output_parent(self.directory)
        self._check_target()

    @property
    def frames_written(self) -> int:
        """Number of masks written so far."""
        return self._frames_written

    def __enter__(self) -> MaskSequenceWriter:
        """Create the ``DIR.partial`` staging directory (a stale one is removed first).

        Raises:
            RuntimeError: already open.
            VideoIOError: the staging directory cannot be created.
        """
        if self._open:
            raise RuntimeError("MaskSequenceWriter is already open")
        _check_output_parent(self.directory)
        try:
            if self._partial.exists():
                logger.warning("removing stale %s", self._partial)
                shutil.rmtree(self._partial)
            self._partial.mkdir()
        except OSError as error:
            raise VideoIOError(f"cannot create {self._partial}: {_reason(error)}") from error
        self._open = True
        return self

    def write(self, mask: np.ndarray, pts: int | None = None) -> None:
        """Write the next mask as ``{index:06d}.png``.

        Args:
            mask: ``(H, W) uint8`` labels.
            pts: accepted for interface parity with :class:`VideoWriter`; PNG files carry no
                timestamps, so it is not stored.

        Raises:
            RuntimeError: called outside the with-block.
            TypeError / ValueError: not a 2-D uint8 array.
            VideoIOError: the PNG could not be written (e.g. disk full, file size limit).
        """
        if not self._open:
            raise RuntimeError("MaskSequenceWriter.write() called outside its with-block")
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"mask must be a numpy array, got {type(mask).__name__}")
        if mask.dtype != np.uint8:
            raise TypeError(f"mask must be uint8, got {mask.dtype}")
        if mask.ndim != 2 or mask.size == 0:
            raise ValueError(f"mask must be a non-empty (H, W) array, got shape {mask.shape}")
        file = self._partial / f"{self._frames_written:06d}.png"
        # encoded in memory and written by Python, whose write/close raise on a full disk:
        # cv2.imwrite can report success for a PNG the file system cut short
        try:
            ok, png = cv2.imencode(".png", np.ascontiguousarray(mask))
        except cv2.error as error:
            raise VideoIOError(f"cannot write mask {file}: {_reason(error)}") from error
        if not ok:
            raise VideoIOError(f"cannot write mask {file}: PNG encoding failed")
        try:
            with open(file, "wb") as handle:
                handle.write(png.tobytes())
        except OSError as error:
            _remove_quietly(file)
            raise VideoIOError(f"cannot write mask {file}: {_reason(error)}") from error
        self._frames_written += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Publish ``DIR.partial`` as ``DIR`` on a clean exit, delete it otherwise.

        Raises:
            VideoIOError: (clean exit only) ``DIR`` became non-empty meanwhile without
                ``overwrite``, or a rename failed; the staging directory is deleted.
        """
        if not self._open:
            return
        self._open = False
        if exc_type is not None:
            shutil.rmtree(self._partial, ignore_errors=True)
            logger.debug("discarded %s after %s", self._partial, exc_type.__name__)
            return
        try:
            self._check_target()
            self._publish()
        except BaseException:
            shutil.rmtree(self._partial, ignore_errors=True)
            raise
        logger.debug("wrote %d masks to %s", self._frames_written, self.directory)

    def _check_target(self) -> None:
        """Raise VideoIOError when ``DIR`` exists and may not be replaced."""
        if not self.directory.exists():
            return
        if not self.directory.is_dir():
            raise VideoIOError(
                f"cannot write masks to {self.directory}: exists and is not a directory"
            )
        if not self.overwrite and any(self.directory.iterdir()):
            raise VideoIOError(
                f"cannot write masks to {self.directory}: directory is not empty "
                "(pass overwrite=True to replace it)"
            )

    def _publish(self) -> None:
        """Rename the staging directory onto ``DIR``, moving a non-empty old ``DIR`` aside."""
        old = self.directory.with_name(f".{self.directory.name}.old")
        try:
            if self.directory.exists() and any(self.directory.iterdir()):
                if old.exists():
                    shutil.rmtree(old)
                os.replace(self.directory, old)
            os.replace(self._partial, self.directory)  # replaces an empty DIR atomically
        except OSError as error:
            raise VideoIOError(
                f"cannot move masks onto {self.directory}: {_reason(error)}"
            ) from error
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Return ``(width, height)`` as ints; raise ValueError unless both are positive integers."""
    try:
        width, height = (operator.index(value) for value in size)
    except (TypeError, ValueError) as error:
        raise ValueError(f"size must be (width, height) integers, got {size!r}") from error
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {width}x{height}")
    return width, height


def _check_rational(name: str, value: Fraction | int) -> Fraction:
    """Return ``value`` as a positive Fraction; floats are refused (29.97 is not 30000/1001)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Rational):
        raise ValueError(
            f"{name} must be a Fraction or int (e.g. Fraction(30000, 1001)), got {value!r}"
        )
    result = Fraction(value)
    if result <= 0:
        raise ValueError(f"{name} must be positive, got {result}")
    return result


def _check_output_parent(path: Path) -> None:
    """Raise VideoIOError unless ``path``'s parent directory exists and is writable."""
    parent = path.parent
    if not parent.is_dir():
        raise VideoIOError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VideoIOError(f"output directory is not writable: {parent}")


def _reason(error: BaseException) -> str:
    """One-line reason of an FFmpeg/OS error, without PyAV's errno and function-name noise."""
    return " ".join(str(getattr(error, "strerror", None) or error).split())


def _remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; log (do not raise) when that fails."""
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        logger.warning("cannot remove temporary file %s: %s", path, error)
