"""How :class:`~vidseg.engine.writer.VideoWriter` sets up its output, decided from the output's
suffix and the encoder settings: the codec checks, the container format, clock and muxer
options, and the video stream's encoder options. The writer owns the file and the frames; this
module owns the FFmpeg settings."""

from __future__ import annotations

import operator
from fractions import Fraction
from typing import Any, Final

import av

__all__ = [
    "MOV_SUFFIXES",
    "add_video_stream",
    "check_codec",
    "container_format",
    "container_options",
    "container_time_base",
]

MOV_SUFFIXES: Final[frozenset[str]] = frozenset({".mp4", ".m4v", ".mov"})
"""The mov muxer's suffixes: an edit list can start the audio before the first frame."""

_MATROSKA_SUFFIXES: Final[frozenset[str]] = frozenset({".mkv", ".webm"})
_MATROSKA_TIME_BASE: Final[Fraction] = Fraction(1, 1000)  # Matroska stores milliseconds
_CRF_CODECS: Final[frozenset[str]] = frozenset({"libx264", "libx265"})
_LOSSLESS_CODECS: Final[frozenset[str]] = frozenset({"libx264", "ffv1"})
_MAX_TIMESCALE: Final[int] = 2**31 - 1
_STREAM_FORMAT: Final[str] = "matroska"  # standard output, or a FIFO/device without a suffix


def check_codec(codec: str, crf: int, *, lossless: bool) -> int:
    """Return ``crf`` as an int; raise ValueError when it is out of the codec's range or the
    codec cannot write lossless label videos."""
    crf = operator.index(crf)
    if codec in _CRF_CODECS and not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf}")
    if lossless and codec not in _LOSSLESS_CODECS:
        raise ValueError(f"lossless=True supports codecs {sorted(_LOSSLESS_CODECS)}, got {codec!r}")
    return crf


def container_format(suffix: str, *, through: bool) -> str | None:
    """The FFmpeg format to force, None to let ``suffix`` choose: standard output, and a FIFO or
    device without a suffix (``through``: written in place), are streamed as Matroska."""
    return _STREAM_FORMAT if through and not suffix else None


def container_time_base(
    suffix: str, fmt: str | None, fps: Fraction, time_base: Fraction
) -> Fraction:
    """The container's clock, what its timestamps can tell apart: AVI counts frames at ``fps``,
    Matroska and WebM (and a stream, ``fmt``) store milliseconds, others keep ``time_base``."""
    if suffix.lower() == ".avi":
        return Fraction(fps.denominator, fps.numerator)
    if suffix.lower() in _MATROSKA_SUFFIXES or fmt == _STREAM_FORMAT:
        return _MATROSKA_TIME_BASE
    return time_base


def container_options(suffix: str, time_base: Fraction, *, through: bool) -> dict[str, str]:
    """The muxer's options for an output with this ``suffix`` and container ``time_base``;
    ``through``: written in place (a pipe, nothing to seek back to)."""
    options: dict[str, str] = {}
    timescale = time_base.denominator
    mov = suffix.lower() in MOV_SUFFIXES
    if mov and timescale <= _MAX_TIMESCALE:
        # The mov muxer stores the edit-list start in the movie timescale (default 1/1000),
        # which rounds a non-zero first pts (1000/12800 s -> 998 ticks). Match the track's.
        options["movie_timescale"] = str(timescale)
    if mov and through:  # a pipe cannot seek back to write the index at the end
        options["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
    return options


def add_video_stream(
    container: av.container.OutputContainer,
    codec: str,
    *,
    fps: Fraction,
    size: tuple[int, int],
    time_base: Fraction,
    lossless: bool,
    crf: int,
    preset: str,
    suffix: str,
    threads: int | None = None,
) -> Any:
    """Add the video stream to ``container`` and set its encoder up: 4:0:0 ``gray`` at ``qp=0``
    when ``lossless``, else ``yuv420p`` at ``crf``/``preset`` (``size``: the encoded, even
    size); ``threads``: the encoder's threads (None: the codec's own choice; 1: all on the
    calling thread). Raises what PyAV raises (an unknown codec, an option it refuses)."""
    stream = container.add_stream(codec, rate=fps)
    if threads is not None:
        stream.codec_context.thread_count = threads
    stream.width, stream.height = size
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    if lossless:
        stream.pix_fmt = "gray"
        if codec == "libx264":
            stream.options = {"qp": "0", "preset": preset}
        return stream
    stream.pix_fmt = "yuv420p"
    if codec in _CRF_CODECS:
        stream.options = {"crf": str(crf), "preset": preset}
    if codec == "libx264" and suffix.lower() == ".avi":
        stream.options["bf"] = "0"  # AVI has no dts: B-frames shift a slot
    if codec == "libx265":  # x265 prints its settings to stderr otherwise
        stream.options["x265-params"] = "log-level=error"
    if codec == "libvpx-vp9":  # libvpx's defaults take ~0.4 s per 540p frame
        stream.options = {
            "crf": str(crf),
            "b:v": "0",
            "deadline": "realtime",
            "cpu-used": "8",
            "row-mt": "1",
        }
    return stream
