"""Segment a video: one library call, the run behind ``vidseg-run``.

    >>> from vidseg.engine.outputs import Masks, Overlay
    >>> from vidseg.engine.run import segment
    >>> stats = segment("input.mp4", [Overlay("seg.mp4"), Masks("masks/")])  # doctest: +SKIP
    >>> stats.frames, round(stats.fps)  # doctest: +SKIP
    (300, 24)

``segment`` opens the source (a file, a URL, a camera, ``-`` for standard input, a folder of
images), wraps it as the options ask (reconnect, stride, rate limit, newest frame only), loads
the model unless one is given, opens every output and runs the frame loop
(``engine.pipeline.segment_video``: decode, render and encode in their own threads, the model on
the calling thread). ``vidseg-run`` is this call with its flags as ``RunOptions``;
``vidseg-batch``'s workers and the Triton client run the same call with their own stepper.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from vidseg.engine.audio import AudioTrack
from vidseg.engine.avinput import STDIN, is_camera, is_network_source
from vidseg.engine.bundle import Bundle, default_bundle_path
from vidseg.engine.folder import open_image_folder
from vidseg.engine.frame import Frame
from vidseg.engine.outputs import (
    Encoding,
    Output,
    Overlay,
    check_outputs,
    open_outputs,
    output_size,
    written_size,
)
from vidseg.engine.pipeline import QUEUE_DEPTH, RunStats, Stepper, segment_video
from vidseg.engine.schedule import Schedule
from vidseg.engine.segmenter import Result, Segmenter
from vidseg.engine.sources import (
    LatestFrameSource,
    ReconnectingSource,
    paced,
    rate_limited,
    strided,
)
from vidseg.engine.timeline import Timeline
from vidseg.engine.video import VideoInfo, open_video

DEFAULT_TIMEOUT_S = 10.0  # network sources: a silent camera fails instead of hanging
RECONNECT_BACKOFF_S = 0.5  # first wait before reopening a lost source, doubled per attempt


@dataclass(frozen=True)
class RunOptions:
    """How ``segment`` reads, runs and writes; the defaults are ``vidseg-run``'s."""

    # the model, when segment loads it (a stepper passed in brings its own)
    backend: str = "ort"
    device: str = "cpu"
    threads: int | None = None  # inference threads (None: the runtime's default)
    resize: str = "stretch"  # stretch, letterbox or crop (engine.geometry)
    memory: bool = True  # False: every frame as a stream's first (Segmenter(memory=False))
    schedule: Schedule | None = None  # a keyframe bundle's schedule (None: the bundle's)
    # reading
    max_frames: int | None = None  # read at most this many frames of the input
    skip_frames: int = 0  # read and pass over the first frames, unsegmented
    warmup_frames: int = 0  # then step this many (the state carried) without writing them
    vid_stride: int = 1  # segment every Nth frame
    max_fps: float | None = None  # at most this many frames per second of the source's time
    live: bool = False  # newest frame only (a file plays at its own rate)
    reconnect: int = 0  # reopen a lost network source up to N times in a row
    timeout_s: float | None = DEFAULT_TIMEOUT_S  # network sources: connect and read deadline
    rtsp_transport: str = "tcp"
    # writing
    out_size: tuple[int, int] | None = None  # (W, H), a 0 side from the aspect; None: input's
    alpha: float = 0.5  # overlay opacity
    crf: int = 23
    preset: str = "veryfast"
    encoder_threads: int | None = None  # threads of each video encoder (None: the codec's)
    # OpenCV's threads (resizes, flow, blending) during the run, restored after (None: OpenCV's
    # own, one per core): the pipeline's stages already keep the cores busy, and OpenCV's pool
    # only adds hand-offs (``benchmarks/README.md``)
    opencv_threads: int | None = 1
    audio: bool = True  # copy the input's audio into an overlay
    overwrite: bool = False  # replace existing outputs (else they are an error)
    zero_start: bool = True  # videos start at 0 (False: the source's timestamps kept)
    keep_partial: bool = True  # keep what a source that ends early delivered (False: nothing)
    # reporting
    progress: bool = False  # a progress bar on stderr
    stats_every: int | None = None  # a status line on stderr every N frames


@dataclass
class _Reading:
    """What every opening of the input shares (a reconnect opens it again): its continuous
    clock, and the audio its demuxer hands to an overlay (None: no audio is read)."""

    timeline: Timeline
    audio: AudioTrack | None


def _open(
    source: str, options: RunOptions, max_frames: int | None, reading: _Reading
) -> tuple[VideoInfo, Iterator[Frame]]:
    if os.path.isdir(source):  # a folder of frames (engine/folder.py)
        return open_image_folder(source, max_frames=max_frames)
    live = is_network_source(source) or is_camera(source) or options.live
    return open_video(
        source,
        max_frames=max_frames,
        thread_type="SLICE" if live else "AUTO",
        timeout_s=options.timeout_s or None,
        rtsp_transport=options.rtsp_transport,
        timeline=reading.timeline,
        audio=reading.audio,
    )


def _skipped(frames: Iterator[Frame], count: int) -> Iterator[Frame]:
    """``frames`` after the first ``count``; closing this closes ``frames``."""
    try:
        for index, frame in enumerate(frames):
            if index >= count:
                yield frame
    finally:
        frames.close()


class _NothingWritten(Exception):
    """Leaves the outputs' block when no frame was written, so that none is kept."""


def segment(
    source: str | os.PathLike[str],
    outputs: Sequence[Output],
    model: Stepper | Bundle | str | os.PathLike[str] | None = None,
    options: RunOptions = RunOptions(),
) -> RunStats:
    """Segment ``source`` with ``model`` and write ``outputs``.

    ``model``: a bundle (a directory or a loaded ``Bundle``; None: the shipped default), loaded
    after the source opens with the options' backend, device, threads, resize, memory and
    schedule; or a ready stepper (``Segmenter``, ``TritonSegmenter``), used as it is.

    Ctrl-C stops between frames: the frames done are written and ``stats.interrupted`` is set.
    A source that ends early (``stats.truncated``: a cut file, a lost stream) keeps every frame
    it delivered (unless ``keep_partial`` is off). When no frame was written, no output is kept
    and ``stats.frames`` is 0.

    Raises:
        UsageError: an output that cannot be written as given (``outputs.check_outputs``), or
            that the model cannot serve (scores without a scores output).
        VideoIOError: the source cannot be opened or read, an output cannot be written.
        BundleError, BackendError: the model cannot be loaded.
    """
    source = str(source)
    check_outputs(outputs, overwrite=options.overwrite)
    overlay_audio = options.audio and any(isinstance(o, Overlay) for o in outputs)
    # opened once (a pipe cannot be reopened); a bad input fails before the model loads; the
    # overlay's audio comes from the same demuxer as the video
    reading = _Reading(Timeline(source), AudioTrack() if overlay_audio else None)
    info, frames = _open(source, options, options.max_frames, reading)
    try:
        stepper = (
            model
            if hasattr(model, "step")
            else Segmenter(
                model or default_bundle_path(),
                backend=options.backend,
                device=options.device,
                threads=options.threads,
                schedule=options.schedule,
                resize=options.resize,
                memory=options.memory,
            )
        )
        with _opencv_threads(options.opencv_threads):
            return _run(source, info, frames, reading, outputs, stepper, options)
    finally:  # close the input if the run never started; the pipeline closes it otherwise
        with suppress(ValueError):  # "generator already executing": a decode thread that
            frames.close()  # did not stop in time (Ctrl-C) still owns it: closed when collected


@contextmanager
def _opencv_threads(threads: int | None) -> Iterator[None]:
    """OpenCV's thread count set to ``threads`` (None: left alone) inside, restored after."""
    if threads is None:
        yield
        return
    import cv2  # the engine's core imports no OpenCV (a run does, through its providers)

    before = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _run(
    source: str,
    info: VideoInfo,
    frames: Iterator[Frame],
    reading: _Reading,
    outputs: Sequence[Output],
    stepper: Stepper,
    options: RunOptions,
) -> RunStats:
    width, height = output_size(options.out_size, info.width, info.height)
    fps = info.fps / options.vid_stride  # what an AVI, which counts frames, declares
    if options.max_fps:
        fps = min(fps, type(fps)(options.max_fps).limit_denominator(1001))
    encoding = Encoding(
        width,
        height,
        fps,
        info.time_base,
        crf=options.crf,
        preset=options.preset,
        threads=options.encoder_threads,
        overwrite=options.overwrite,
        zero_start=options.zero_start,
    )
    sink = open_outputs(
        outputs, stepper.manifest, encoding, alpha=options.alpha, audio=reading.audio
    )
    stats = RunStats()
    try:
        with ExitStack() as stack:
            stack.enter_context(sink)
            bar = stack.enter_context(
                tqdm(
                    total=_expected(info, options),
                    unit="frame",
                    disable=not options.progress,
                    desc=Path(source).name,
                    file=sys.stderr,
                )
            )
            done = 0

            def on_frame(result: Result) -> None:  # the render thread, in frame order
                nonlocal done
                done += 1
                bar.update(1)
                if options.stats_every and done % options.stats_every == 0:
                    line = getattr(stepper, "stats", None)
                    if line is not None:
                        bar.write(f"vidseg-run: {line().line()}", file=sys.stderr)

            stats = _loop(source, frames, reading, stepper, sink, on_frame, options)
            stats.output_size = written_size(outputs, width, height)
            if not stats.frames or (stats.truncated and not options.keep_partial):
                raise _NothingWritten  # nothing to keep: every output is discarded
    except _NothingWritten:
        pass
    return stats


def _expected(info: VideoInfo, options: RunOptions) -> int | None:
    """The frames the run will write, as far as the container tells (for the progress bar)."""
    total = info.frame_count
    if options.max_frames is not None:
        total = min(total, options.max_frames) if total else options.max_frames
    if total:
        total = max(0, total - options.skip_frames - options.warmup_frames)
        if options.vid_stride > 1:
            total = -(-total // options.vid_stride)
    return total or None


def _loop(
    source: str,
    frames: Iterator[Frame],
    reading: _Reading,
    stepper: Stepper,
    sink: Any,
    on_frame: Callable[[Result], None],
    options: RunOptions,
) -> RunStats:
    """The source wrapped as the options ask, through ``segment_video``."""
    frames_in: Iterable[Frame] = frames
    if options.skip_frames:
        frames_in = _skipped(frames, options.skip_frames)
    reconnecting = newest = None
    if options.reconnect:

        def reopen() -> Iterator[Frame]:
            # the frames still wanted: the reader stops there (and reads the audio to the
            # last one's end)
            left = None
            if options.max_frames is not None and reconnecting is not None:
                left = max(1, options.max_frames - reconnecting.delivered)
            return _open(source, options, left, reading)[1]

        frames_in = reconnecting = ReconnectingSource(
            iter(frames_in),
            reopen,
            retries=options.reconnect,
            backoff_s=RECONNECT_BACKOFF_S,
            max_frames=options.max_frames,
            name=source,
        )
    if options.vid_stride > 1:
        frames_in = strided(frames_in, options.vid_stride)
    if options.max_fps:
        frames_in = rate_limited(frames_in, options.max_fps)
    with ExitStack() as live_source:
        if options.live:
            if not (is_network_source(source) or is_camera(source) or source == STDIN):
                frames_in = paced(frames_in)  # a file stands in for a camera
            frames_in = newest = live_source.enter_context(LatestFrameSource(frames_in))
        stats = segment_video(
            stepper,
            frames_in,
            sink,
            sink.render,
            on_frame=on_frame,
            depth=1 if options.live else QUEUE_DEPTH,
            warmup=options.warmup_frames,
        )
    stats.dropped = newest.dropped if newest else 0
    stats.reconnects = reconnecting.reconnects if reconnecting else 0
    return stats
