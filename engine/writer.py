"""Atomic video writer (:class:`VideoWriter`) on PyAV: H.264/H.265 RGB video, or lossless 4:0:0
label videos (libx264 ``qp=0`` or FFV1) read back with
:func:`~vidseg.engine.video.read_label_frames`; optional audio passthrough from the source's own
demuxer (``engine.audio``, muxed by ``engine.audiomux``).

The FFmpeg settings (container format, clock and options; the encoder's options) are
``engine.encoder``'s, the frames' timestamps ``engine.writerclock``'s. Time is carried as integer
pts in a rational ``time_base`` (``Fraction``), never as float fps.
Sink failures raise :class:`~vidseg.engine.errors.VideoIOError`; contract violations (shape,
dtype, non-increasing pts) raise ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from vidseg.engine.audio import AudioTrack
from vidseg.engine.audiomux import AudioOut
from vidseg.engine.avutil import (
    AV_ERRORS,
    check_output_parent,
    check_rational,
    check_size,
    error_reason,
    remove_quietly,
)
from vidseg.engine.encoder import (
    MOV_SUFFIXES,
    add_video_stream,
    check_codec,
    container_format,
    container_options,
    container_time_base,
)
from vidseg.engine.errors import VideoIOError
from vidseg.engine.outfile import final_path, is_stdout, writes_through
from vidseg.engine.writerclock import WriterClock

__all__ = ["VideoWriter"]

logger = logging.getLogger(__name__)


class VideoWriter:
    """H.264 (libx264) writer; context manager; atomic.

    Frames go to a hidden temporary file beside ``path`` (``.NAME.partial.SUFFIX``, same
    directory so the final rename is atomic, same suffix so FFmpeg picks the same muxer). When the
    with-block exits cleanly, the encoder is flushed (``stream.encode()`` with no frame, remaining
    packets muxed), the container is closed and the temp file is renamed onto ``path`` (an
    existing file there is replaced, unless ``overwrite=False``: then it is kept and the exit
    raises). When the block raises, the container is closed without flushing, the temp file is
    deleted, nothing appears at ``path`` and the exception propagates. Paths follow
    ``engine.outfile``'s rule: a symlink to a file keeps the link (the file it points to is
    replaced); ``-`` (standard output), a FIFO or a device is written in place, never renamed
    over or deleted, Matroska where the name gives no container, a fragmented MP4 for
    .mp4/.mov (nothing to seek back to).

    Audio: with ``audio`` (an :class:`~vidseg.engine.audio.AudioTrack` the source's reader
    fills, ``open_video(..., audio=track)``), the source's audio is copied untouched over the
    video's span: from the first frame written to the end of the last (see
    :class:`~vidseg.engine.audiomux.AudioOut`); a container that cannot hold it gets video only
    and one warning.

    Two modes:

    * ``lossless=False``: ``write`` takes ``(H, W, 3) uint8 RGB``; encoded as ``yuv420p`` with
      ``crf``/``preset``. yuv420p needs even sizes, so an odd width/height is padded by one pixel
      (the last column/row is repeated): the output is ``output_size`` =
      ``(width + width % 2, height + height % 2)``.
    * ``lossless=True``: ``write`` takes ``(H, W) uint8`` label masks; encoded as 4:0:0 ``gray``
      with ``qp=0`` (libx264, or ``codec="ffv1"`` for .mkv). Bit-exact, any size (no padding);
      read back with :func:`~vidseg.engine.video.read_label_frames`.

    ``threads``: the encoder's threads (None: the codec's own choice, which for x264 is about
    1.5 per core; 1: all encoding on the thread that calls ``write``).

    Timestamps: ``pts`` are integers in ``time_base`` units (default ``1/fps``). Passing a source's
    pts together with ``time_base=source.time_base`` preserves them: the read-back frames carry
    the same timestamps (mp4/mov store them exactly; Matroska and WebM store milliseconds; AVI
    counts frames at ``fps``, so it declares ``fps`` and each frame lands on the nearest
    ``1/fps`` slot). Where that rounding would give two frames the same time, the later one
    moves to the next tick of the container: the output's timestamps always increase.
    ``zero_start=True`` shifts the output (video and audio alike) so its first frame is at 0 (a
    source that starts at 1.48 s, as MPEG-TS does, gives no empty lead-in).

    Attributes:
        path: the final output path.
        fps: the declared frame rate.
        time_base: seconds per pts tick of ``write``'s ``pts``.

    Raises (constructor):
        ValueError: non-positive size, float/non-positive fps or time_base, crf out of range,
            threads < 1, unsupported lossless codec.
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
        threads: int | None = None,
        lossless: bool = False,
        audio: AudioTrack | None = None,
        overwrite: bool = True,
        zero_start: bool = False,
    ) -> None:
        self.path: Path = Path(path)
        self._audio_track = audio  # the source's audio, from its reader
        self._overwrite = bool(overwrite)  # False: an existing file at path is never replaced
        self._audio: AudioOut | None = None
        self._width, self._height = check_size((width, height))
        self.fps: Fraction = check_rational("fps", fps)
        self.time_base: Fraction = (
            Fraction(self.fps.denominator, self.fps.numerator)
            if time_base is None
            else check_rational("time_base", time_base)
        )
        self._codec = codec
        self._crf = check_codec(codec, crf, lossless=lossless)
        self._preset = preset
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self._threads = threads
        self._lossless = bool(lossless)
        if self._lossless:  # 4:0:0 has no chroma subsampling: any size works
            self._out_width, self._out_height = self._width, self._height
        else:
            self._out_width = self._width + self._width % 2
            self._out_height = self._height + self._height % 2
        # engine.outfile's rule: "-", a FIFO or a device is written in place; a file (or the
        # file a symlink points to) is written beside itself and renamed onto it at the end
        self._through = writes_through(self.path)
        target = final_path(self.path)
        self._target = target
        self._temp_path = (
            self.path
            if self._through
            else target.with_name(f".{target.stem}.partial{target.suffix}")
        )
        self._format = container_format(self.path.suffix, through=self._through)
        self._out_time_base = container_time_base(  # what the container's timestamps tell apart
            self.path.suffix, self._format, self.fps, self.time_base
        )
        self._clock = WriterClock(
            self.fps,
            self.time_base,
            self._out_time_base,
            zero_start=bool(zero_start),
            name=self.path.name,
        )
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        if not is_stdout(self.path):
            check_output_parent(self._target)
        if self.path.is_dir():
            raise VideoIOError(f"cannot write video {self.path}: is a directory")
        self._check_not_there()

    def _check_not_there(self) -> None:
        """Raise VideoIOError when ``path`` exists and may not be replaced."""
        if not (self._overwrite or self._through) and os.path.lexists(self._target):
            raise VideoIOError(f"cannot write video {self.path}: exists (overwrite=False)")

    def _open_container(self, options: dict[str, str]) -> av.container.OutputContainer:
        """The output container: the temporary file, or (written through) the path itself,
        ``pipe:1`` for standard output."""
        name = "pipe:1" if is_stdout(self.path) else str(self._temp_path)
        return av.open(name, mode="w", format=self._format, options=options)

    @property
    def frames_written(self) -> int:
        """Number of frames accepted by ``write`` so far."""
        return self._clock.frames

    @property
    def output_size(self) -> tuple[int, int]:
        """``(width, height)`` of the encoded video (odd sizes padded to even unless lossless)."""
        return self._out_width, self._out_height

    def __enter__(self) -> VideoWriter:
        """Open the temporary output and configure the encoder (``engine.encoder``).

        Raises:
            RuntimeError: the writer is already open.
            VideoIOError: the container or encoder cannot be created (unknown suffix, codec
                missing from this FFmpeg build, unsupported option).
        """
        if self._container is not None:
            raise RuntimeError("VideoWriter is already open")
        if not is_stdout(self.path):
            check_output_parent(self._target)
        options = container_options(self.path.suffix, self._out_time_base, through=self._through)
        try:
            container = self._open_container(options)
        except AV_ERRORS as error:
            raise VideoIOError(f"cannot create video {self.path}: {error_reason(error)}") from error
        except ValueError as error:  # PyAV: "Could not determine output format"
            raise VideoIOError(
                f"cannot create video {self.path}: no container format for suffix "
                f"{self.path.suffix!r} ({error_reason(error)})"
            ) from error
        try:
            stream = add_video_stream(
                container,
                self._codec,
                fps=self.fps,
                size=(self._out_width, self._out_height),
                time_base=self._out_time_base,
                lossless=self._lossless,
                crf=self._crf,
                preset=self._preset,
                suffix=self.path.suffix,
                threads=self._threads,
            )
        except (*AV_ERRORS, ValueError, TypeError) as error:
            container.close()
            self._discard()
            reason = (
                "codec not available in this FFmpeg build"
                if isinstance(error, av.codec.codec.UnknownCodecError)
                else error_reason(error)
            )
            raise VideoIOError(
                f"cannot configure encoder {self._codec!r} for {self.path}: {reason}"
            ) from error
        self._container, self._stream = container, stream
        if self._audio_track is not None:
            self._audio = AudioOut(
                self._audio_track,
                container,
                self.path.name,
                negative_start=self.path.suffix.lower() in MOV_SUFFIXES,
            )
            if self._audio_track.bound:
                self._audio.add_stream()
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
        clock = self._clock
        frame_pts = clock.next(pts)
        if pixels.shape[:2] != (self._out_height, self._out_width):
            pad = ((0, self._out_height - self._height), (0, self._out_width - self._width))
            pixels = np.pad(pixels, pad + ((0, 0),) * (pixels.ndim - 2), mode="edge")
        try:
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(pixels), format="gray" if self._lossless else "rgb24"
            )
            frame.pts = clock.out(frame_pts)
            frame.time_base = self._out_time_base
            if self._audio is not None and clock.frames == 0:  # before the header
                self._audio.start(frame_pts * self.time_base, clock.start_pts * self.time_base)
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.mux(frame_pts * self.time_base)
        except AV_ERRORS as error:
            raise VideoIOError(
                f"cannot write frame {clock.frames} to {self.path}: {error_reason(error)}"
            ) from error
        clock.advance(frame_pts, frame.pts)

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
            except AV_ERRORS as error:
                logger.debug("closing abandoned %s failed: %s", self._temp_path, error)
            self._discard()
            logger.debug("discarded %s after %s", self._temp_path, exc_type.__name__)
            return
        try:
            try:
                clock = self._clock
                if clock.frames:
                    for packet in stream.encode(None):
                        container.mux(packet)
                    if self._audio is not None and clock.last_pts is not None:
                        self._audio.finish((clock.last_pts + clock.frame_step) * self.time_base)
            finally:
                container.close()
                if self._audio_track is not None:
                    self._audio_track.close()
        except AV_ERRORS as error:
            self._discard()
            raise VideoIOError(f"cannot finish video {self.path}: {error_reason(error)}") from error
        except BaseException:
            self._discard()
            raise
        if self._clock.frames == 0:
            self._discard()
            raise VideoIOError(f"no frames were written to {self.path}; no file was created")
        if self._through:
            logger.debug("wrote %d frames through to %s", self._clock.frames, self.path)
            return
        try:
            self._check_not_there()
            os.replace(self._temp_path, self._target)
        except VideoIOError:
            remove_quietly(self._temp_path)
            raise
        except OSError as error:
            remove_quietly(self._temp_path)
            raise VideoIOError(
                f"cannot move finished video onto {self.path}: {error_reason(error)}"
            ) from error
        logger.debug("wrote %d frames to %s", self._clock.frames, self.path)

    def _discard(self) -> None:
        """Delete the temporary file; a written-through path (a FIFO, a device) is left alone."""
        if not self._through:
            remove_quietly(self._temp_path)

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
