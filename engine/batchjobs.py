"""What ``vidseg-batch`` does to one video, without Ray: its jobs (a whole video, or chunks of a
long one with a warm-up), the work on each (``segment_video_file``: ``engine.run.segment`` with
the chunk's frames), the joining of chunk parts, and a failure's reason in one line."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import av

from vidseg.engine.errors import VideoIOError, VidsegError
from vidseg.engine.outputs import Masks, Overlay
from vidseg.engine.run import RunOptions, segment
from vidseg.engine.video import VideoInfo

logger = logging.getLogger(__name__)

RUN_MANIFEST = "vidseg-batch.jsonl"
PARTS_DIR = ".parts"  # chunk outputs before concatenation
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".mpg", ".mpeg")
DEFAULT_WARMUP_FRAMES = 8  # chunk warm-up: see docs/scale-out.md for the measurement
DEFAULT_RETRIES = 1
EXTRA_HINT = "pip install 'vidseg[ray]'"


@dataclass(frozen=True)
class BatchOptions:
    """How videos are segmented and written (the same for every video of a run)."""

    out_dir: Path
    model: str | None = None  # bundle directory; None: the bundled default
    overlay: bool = False  # H.264 overlay .mp4 instead of lossless class-id .mkv
    alpha: float = 0.5  # overlay opacity
    chunk_frames: int | None = None  # split videos longer than this into chunks (ids only)
    warmup_frames: int = DEFAULT_WARMUP_FRAMES  # frames a chunk runs before its first output
    retries: int = DEFAULT_RETRIES  # extra attempts for a video that failed
    threads: int | None = 1  # inference threads per worker
    max_frames: int | None = None  # first N frames of each video (tests, trials)


@dataclass(frozen=True)
class Job:
    """One unit of work for a worker: a whole video, or one chunk of it."""

    input: str
    output: str  # the video's final output path
    start: int = 0  # first output frame
    stop: int | None = None  # one past the last output frame; None: to the end (last chunk)
    part: str | None = None  # chunk output path (None: write ``output`` directly)
    attempt: int = 1


@dataclass(frozen=True)
class JobResult:
    """What a worker did with a ``Job`` (an error is reported, never raised)."""

    job: Job
    frames: int = 0  # output frames written (0: a chunk that starts past the video's end)
    seconds: float = 0.0  # wall time of the job, decode to the output's rename
    error: str | None = None  # one line; None when it succeeded
    worker: str = ""  # which worker (pid@host)


@dataclass
class VideoRecord:
    """A run-manifest line: one video, after its last attempt."""

    input: str
    output: str
    frames: int = 0
    fps: float = 0.0  # output frames per second of worker time
    seconds: float = 0.0
    attempts: int = 1
    chunks: int = 1
    error: str | None = None
    finished: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))


def expand_inputs(items: Iterable[str]) -> list[str]:
    """Files, folders (their videos, sorted, not recursive) and ``.txt`` lists (one path per
    line, ``#`` comments) -> input paths in order, without duplicates.

    Raises:
        VideoIOError: an item that does not exist.
    """
    found: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = (line.strip() for line in path.read_text().splitlines())
            found += [line for line in lines if line and not line.startswith("#")]
        elif path.exists():
            found.append(str(path))
        else:
            raise VideoIOError(f"input not found: {item}")
    return list(dict.fromkeys(found))


def output_paths(inputs: list[str], out_dir: Path, overlay: bool) -> dict[str, str]:
    """Input -> output path in ``out_dir``: the input's stem, plus a short hash of its full
    path where two inputs share a stem."""
    suffix = ".mp4" if overlay else ".mkv"
    stems = [Path(i).stem for i in inputs]
    paths = {}
    for item, stem in zip(inputs, stems):
        if stems.count(stem) > 1:
            stem = f"{stem}-{hashlib.sha1(str(Path(item).resolve()).encode()).hexdigest()[:8]}"
        paths[item] = str(out_dir / f"{stem}{suffix}")
    return paths


def plan_chunks(frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """``[start, stop)`` output ranges covering ``frames`` frames, ``chunk_frames`` each (the
    last may be shorter)."""
    return [(s, min(s + chunk_frames, frames)) for s in range(0, frames, chunk_frames)]


def plan_jobs(inputs: list[str], options: BatchOptions) -> list[list[Job]]:
    """The jobs of each video: one, or its chunks when ``chunk_frames`` is set and the
    container declares more frames than that (an unknown count: one job). The last chunk runs
    to the end, however many frames the video really holds."""
    outputs = output_paths(inputs, options.out_dir, options.overlay)
    plans = []
    for item in inputs:
        output = outputs[item]
        frames = _declared_frames(item) if options.chunk_frames else None
        if options.max_frames is not None and frames is not None:
            frames = min(frames, options.max_frames)
        if not options.chunk_frames or frames is None or frames <= options.chunk_frames:
            plans.append([Job(item, output)])
            continue
        parts = Path(options.out_dir) / PARTS_DIR / Path(output).stem
        chunks = plan_chunks(frames, options.chunk_frames)
        last = len(chunks) - 1
        plans.append(
            [
                Job(item, output, start, None if i == last else stop, str(parts / f"{i:05d}.mkv"))
                for i, (start, stop) in enumerate(chunks)
            ]
        )
    return plans


def _declared_frames(item: str) -> int | None:
    try:
        return VideoInfo.from_path(item).frame_count
    except VidsegError:
        return None  # the job itself reports the error


def segment_video_file(segmenter: Any, job: Job, options: BatchOptions) -> int:
    """Segment ``job`` with ``segmenter`` (``engine.run.segment``) and write its output (the
    part for a chunk) atomically: the state reset, carried from ``warmup_frames`` before the
    chunk's first frame (those are stepped, not written; the frames before them are decoded and
    passed over). Returns the frames written: 0 for a chunk that starts past the video's end
    (the container declared more frames than it holds), which writes nothing.

    Raises:
        VideoIOError (TruncatedVideoError): the input cannot be read, holds no frame, or ends
            early (a partial output is then not kept: a batch wants whole videos).
    """
    target = Path(job.part or job.output)
    stop = (
        job.stop
        if options.max_frames is None
        else min(job.stop or options.max_frames, options.max_frames)
    )
    first = max(0, job.start - options.warmup_frames)
    target.parent.mkdir(parents=True, exist_ok=True)
    output = Overlay(str(target), "libx264") if options.overlay else Masks(str(target))
    run = RunOptions(
        max_frames=stop,
        skip_frames=first,
        warmup_frames=job.start - first,
        alpha=options.alpha,
        audio=job.part is None,  # the overlay's audio (a chunk's part is video only)
        overwrite=True,
        zero_start=False,  # the source's timestamps: chunk parts join on them
        keep_partial=False,  # a batch wants whole videos
    )
    stats = segment(job.input, [output], segmenter, run)
    if stats.truncated is not None:
        raise stats.truncated
    if stats.interrupted:
        raise KeyboardInterrupt
    if stats.frames:
        return stats.frames
    if job.start > 0:
        logger.info(
            "%s: no frame from %d on (the container declared more than it holds): chunk left out",
            job.input,
            job.start,
        )
        return 0
    raise VideoIOError(f"{job.input}: no frame decoded; nothing written")


def concatenate_parts(parts: list[str], output: str) -> None:
    """Join FFV1 .mkv parts into ``output`` by remuxing their packets (no re-encode; the parts
    keep the source's timestamps), atomically; the parts are deleted afterwards.

    Raises:
        VideoIOError: a part is missing or unreadable.
    """
    out = Path(output)
    temp = out.with_name(f".{out.stem}.partial{out.suffix}")
    try:
        with av.open(str(temp), "w") as container:
            stream = None
            for part in parts:
                with av.open(part) as source:
                    src = source.streams.video[0]
                    if stream is None:
                        stream = container.add_stream_from_template(src)
                    for packet in source.demux(src):
                        if packet.size == 0:
                            continue
                        packet.stream = stream
                        container.mux(packet)
        os.replace(temp, out)
    except (OSError, av.FFmpegError) as exc:
        temp.unlink(missing_ok=True)
        raise VideoIOError(f"cannot join the parts of {out}: {exc}") from exc
    remove_parts(parts)


def remove_parts(parts: Iterable[str]) -> None:
    """Delete chunk parts, and their folders under ``PARTS_DIR`` once empty."""
    folders: set[Path] = set()
    for part in parts:
        Path(part).unlink(missing_ok=True)
        folders.add(Path(part).parent)
    for folder in sorted(folders) + sorted({f.parent for f in folders}):
        try:
            folder.rmdir()
        except OSError:  # not empty (another video's parts), or gone
            pass


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(error: BaseException) -> str:
    """Why a job failed, in one line: the exception's own message (prefixed by its type
    unless it is a ``VidsegError``). For a Ray error, the error the worker raised: not Ray's
    coloured ``ray::Worker.run() (pid=...)`` header."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException) and cause is not error:  # RayTaskError: the original
        return failure_reason(cause)
    lines = [ln.strip() for ln in _ANSI.sub("", str(error)).splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and "creation task" in lines[0]:  # a worker that failed to start
        return f"worker failed to start: {lines[-1]}"  # the traceback's last line: the error
    if isinstance(error, VidsegError) or type(error).__module__.startswith("ray"):
        return lines[0]
    return f"{type(error).__name__}: {lines[0]}"
