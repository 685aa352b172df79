"""Opening a video source with PyAV: what a source name means and the options each kind gets.

A name is a file, ``"-"`` (standard input, a pipe), a V4L2 camera (``/dev/videoN``, or a bare
index such as ``"0"`` on the command line: :func:`camera_source`) or a network URL
(``NETWORK_SCHEMES``: rtsp://, http://...), which gets connection and read timeouts and, for
rtsp, a transport. Every failure to open is a one-line
:class:`~vidseg.engine.errors.VideoIOError` naming the source (a network source silent past its
timeout: :class:`~vidseg.engine.errors.SourceLostError`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

import av
import av.error

from vidseg.engine.avutil import AV_ERRORS, error_reason
from vidseg.engine.errors import SourceLostError, VideoIOError

__all__ = [
    "CAMERA_INDEX_MAX",
    "MOOV_AT_END",
    "NETWORK_SCHEMES",
    "RTSP_TRANSPORTS",
    "STDIN",
    "camera_source",
    "first_video_stream",
    "is_camera",
    "is_network_source",
    "network_options",
    "open_input",
]

_US_PER_S: Final[int] = 1_000_000  # FFmpeg socket timeouts are in microseconds

STDIN: Final = "-"  # an input path that means standard input (a pipe)
MOOV_AT_END: Final = (
    "an mp4 whose index is at the end cannot be read from a pipe: pass the file, or remux it "
    "with ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4"
)

NETWORK_SCHEMES: Final[frozenset[str]] = frozenset(
    {"http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "tcp", "udp", "hls"}
)
"""URL schemes read over a network: they get open/read timeouts, and a failure after the first
frame is a lost source (``SourceLostError``), not a damaged file."""

RTSP_TRANSPORTS: Final[tuple[str, ...]] = ("tcp", "udp", "udp_multicast", "http")
"""FFmpeg's ``rtsp_transport`` values; tcp (the default here) survives lossy networks and NAT."""

CAMERA_INDEX_MAX = 63  # "vidseg-run 0" .. "63" name a camera; larger numbers are file names


def is_network_source(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL read over a network (``NETWORK_SCHEMES``: rtsp://, http://...)."""
    scheme, sep, _ = os.fspath(path).partition("://")
    return bool(sep) and scheme.lower() in NETWORK_SCHEMES


def network_options(name: str, timeout_s: float | None, rtsp_transport: str) -> dict[str, str]:
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


def camera_source(name: str) -> str:
    """``name`` as ``open_video`` takes it: a bare camera index (``"0"``) becomes the V4L2 device
    ``/dev/video0`` unless a file of that name exists; anything else is returned unchanged."""
    if name.isdigit() and int(name) <= CAMERA_INDEX_MAX and not os.path.exists(name):
        return f"/dev/video{int(name)}"
    return name


def is_camera(name: str | os.PathLike[str]) -> bool:
    """``/dev/videoN``: a V4L2 camera (live: no audio to copy, cannot be read twice)."""
    return os.fspath(name).startswith("/dev/video")


def open_input(
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
        options["options"] = network_options(name, timeout_s, rtsp_transport)
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


def first_video_stream(
    container: av.container.InputContainer, path: str | os.PathLike[str]
) -> av.video.stream.VideoStream:
    """Return the container's first video stream, or raise VideoIOError when it has none."""
    if not container.streams.video:
        raise VideoIOError(f"cannot read video {os.fspath(path)}: no video stream")
    return container.streams.video[0]
