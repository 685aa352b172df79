"""Video decode for the streaming engine, on PyAV (FFmpeg): the reader side.

Readers are plain generators. Time is carried as integer pts in a rational ``time_base``
(``Fraction``), never as float fps, so 29.97 fps material stays ``Fraction(30000, 1001)`` from
decode to encode (the writers: ``engine.writer``, ``engine.masks``). What a source name means
and how it is opened (files, standard input, cameras, network URLs) is ``engine.avinput``'s;
the demux/decode loop under every reader, ``engine.decode``'s.

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
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Final

import av
import numpy as np

from vidseg.engine.audio import AudioTrack
from vidseg.engine.avinput import first_video_stream, open_input
from vidseg.engine.avutil import AV_ERRORS, check_size, error_reason
from vidseg.engine.decode import decode_frames
from vidseg.engine.errors import VideoIOError
from vidseg.engine.frame import Frame, prepend
from vidseg.engine.timeline import Timeline

__all__ = ["VideoInfo", "open_video", "read_frames", "read_label_frames"]


logger = logging.getLogger(__name__)

_LABEL_PIX_FMTS: Final[frozenset[str]] = frozenset(
    {"gray", "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"}
)
"""8-bit pixel formats whose plane 0 is the luma plane, read verbatim by read_label_frames."""


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
        with open_input(path) as container:
            stream = first_video_stream(container, path)
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
        thread_type: decoder threading, one of ``engine.decode.THREAD_TYPES``
            (case-insensitive): "AUTO" for files (parallel, adds latency), "SLICE" for live
            sources.

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
    decoded = decode_frames(path, max_frames=max_frames, thread_type=thread_type, audio=audio)
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
        timeout_s: network sources only (see
            :func:`~vidseg.engine.avinput.is_network_source`): seconds to wait for the
            connection and then for each read; None or 0 waits forever.
        rtsp_transport: ``rtsp://`` sources only, one of ``engine.avinput.RTSP_TRANSPORTS``.
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
    container = open_input(path, timeout_s=timeout_s, rtsp_transport=rtsp_transport)
    try:
        info = _info_from_stream(container, first_video_stream(container, path), path)
        if info.width * info.height > MAX_FRAME_PIXELS:  # before a frame is decoded
            raise VideoIOError(
                f"cannot read video {os.fspath(path)}: {info.width}x{info.height} frames are over "
                f"the {MAX_FRAME_PIXELS // 1_000_000} Mpx limit (8192x8192; 8K, 7680x4320, is "
                "handled): scale it down first, e.g. ffmpeg -vf scale=3840:-2"
            )
    except BaseException:
        container.close()
        raise
    decoded = decode_frames(
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
    for index, av_frame, _ in decode_frames(path, max_frames=None, thread_type=thread_type):
        pix_fmt = av_frame.format.name
        if pix_fmt not in _LABEL_PIX_FMTS:
            raise VideoIOError(
                f"{path!s} is not a label video: frame {index} has pixel format {pix_fmt!r}, "
                "expected an 8-bit luma plane"
            )
        plane = av_frame.planes[0]
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        yield np.ascontiguousarray(rows[:, : plane.width])


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
