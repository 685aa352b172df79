"""``vidseg-batch INPUTS... --out DIR``: segment a video collection on Ray.

One long-lived Ray actor per slot holds a loaded ``Segmenter`` (the model loads once per actor,
not per video). The recurrent state runs through a video in order, so a video (or a chunk of
one) is processed sequentially inside one actor; the driver hands out videos, writes the run
manifest and retries failures:

* Outputs, one per video in DIR: lossless class-id videos ``NAME.mkv`` (FFV1; exact ids, read
  back with ``engine.video.read_label_frames``), or with ``overlay`` H.264 overlays ``NAME.mp4``.
  Each is written to a temporary name and renamed when complete (``VideoWriter``).
* Chunks (``chunk_frames``): a long video is split into chunks of that many output frames; a
  chunk starts ``warmup_frames`` early, stepping the model through those frames without
  writing them, so its state is re-established (the agreement with one sequential pass per K is
  measured in docs/scale-out.md). Chunks are planned from the frame count the container
  declares, which may be wrong either way: the last chunk runs to the end of the video, and a
  chunk that starts past the end (a video that decodes fewer frames than it declares) writes
  nothing and is left out. Chunks are written as parts and concatenated without re-encoding
  (FFV1 is intra-only, so parts join exactly); the parts of a video that fails are deleted;
  overlays are never chunked.
* The run manifest ``DIR/vidseg-batch.jsonl``: one JSON line per finished video (input, output,
  frames, fps, seconds, attempts, error); a re-run skips inputs whose last line has no error and
  whose output exists.
* A failed video is retried up to ``retries`` times and then reported (a line with ``error``:
  the cause in one line, the exception's own message); a worker that dies (killed, out of
  memory) is replaced and its video re-queued; the others go on.

Ray (the ``[ray]`` extra) is imported only by ``run_batch``; the per-video work
(``segment_video_file``) is plain engine code, usable without Ray. No torch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import numpy as np

from vidseg.engine.audio import AudioTrack
from vidseg.engine.clihelp import CliParser, HelpFormatter
from vidseg.engine.errors import VideoIOError, VidsegError, run_for_cli, unwritable
from vidseg.engine.outfile import lines_to_stderr, write_text
from vidseg.engine.overlay import blend, palette_lut
from vidseg.engine.video import VideoInfo, read_frames
from vidseg.engine.writer import VideoWriter

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


def segment_range(
    segmenter: Any, frames: Iterable[Any], start: int = 0, stop: int | None = None, warmup: int = 0
) -> Iterator[tuple[Any, np.ndarray]]:
    """``(frame, labels)`` for frames ``start .. stop-1`` of ``frames`` (decoded ``Frame``s or
    arrays), the state reset first and carried from frame ``start - warmup`` on (frames before
    that are skipped undecoded by the model; warm-up frames are stepped, not yielded)."""
    segmenter.reset()
    first = max(0, start - warmup)
    for index, frame in enumerate(frames):
        if stop is not None and index >= stop:
            break
        if index < first:
            continue
        image = getattr(frame, "image", frame)
        result = segmenter.step(image)
        if index >= start:
            yield frame, result.labels


def segment_video_file(segmenter: Any, job: Job, options: BatchOptions) -> int:
    """Segment ``job`` with ``segmenter`` and write its output (the part for a chunk)
    atomically; returns the frames written: 0 for a chunk that starts past the video's end
    (the container declared more frames than it holds), which writes nothing.

    Raises:
        VideoIOError (TruncatedVideoError): the input cannot be read, holds no frame, or ends
            early (a partial output is then not kept: a batch wants whole videos).
    """
    info = VideoInfo.from_path(job.input)
    target = Path(job.part or job.output)
    stop = (
        job.stop
        if options.max_frames is None
        else min(job.stop or options.max_frames, options.max_frames)
    )
    lut = palette_lut(segmenter.manifest.palette) if options.overlay else None
    # the overlay's audio, from the video's own demuxer (a chunk's part is video only)
    audio = AudioTrack() if options.overlay and job.part is None else None
    writer: VideoWriter | None = None
    with ExitStack() as stack:
        frames = read_frames(job.input, audio=audio)
        try:
            for frame, labels in segment_range(
                segmenter, frames, job.start, stop, options.warmup_frames
            ):
                if writer is None:  # opened on the first frame: an empty chunk leaves no file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    writer = stack.enter_context(
                        VideoWriter(
                            target,
                            width=info.width,
                            height=info.height,
                            fps=info.fps,
                            time_base=info.time_base,
                            lossless=not options.overlay,
                            codec="libx264" if options.overlay else "ffv1",
                            audio=audio,
                        )
                    )
                image = (
                    blend(frame.image, labels, lut, options.alpha) if lut is not None else labels
                )
                writer.write(image, pts=frame.pts)
        finally:  # the source first, then the writer finishes (as without chunks)
            frames.close()
    if writer is not None:
        return writer.frames_written
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


class Worker:
    """The body of one Ray actor: a ``Segmenter`` loaded once, then jobs one after another."""

    def __init__(self, options: BatchOptions) -> None:
        from vidseg.engine.segmenter import Segmenter

        self.options = options
        self.name = f"{os.getpid()}@{os.uname().nodename}"
        self.segmenter: Segmenter | None = None
        self.load_error: str | None = None  # reported by every job (the actor stays up)
        try:
            self.segmenter = Segmenter(options.model, threads=options.threads)
        except Exception as exc:
            self.load_error = f"cannot load the model: {failure_reason(exc)}"

    def run(self, job: Job) -> JobResult:
        """Do ``job``; any error is reported in the result (one line), never raised."""
        t0 = time.perf_counter_ns()
        try:
            if self.segmenter is None:
                raise VidsegError(self.load_error)
            frames = segment_video_file(self.segmenter, job, self.options)
        except Exception as exc:
            return JobResult(
                job,
                error=failure_reason(exc),
                worker=self.name,
                seconds=(time.perf_counter_ns() - t0) / 1e9,
            )
        return JobResult(job, frames, (time.perf_counter_ns() - t0) / 1e9, worker=self.name)

    def pid(self) -> int:
        return os.getpid()


def read_manifest(path: Path) -> dict[str, dict]:
    """The last record of each input in a run manifest (a torn last line is ignored)."""
    records: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                records[record["input"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return records


def finished_inputs(out_dir: Path) -> set[str]:
    """Inputs a previous run finished: last record without error, output still there."""
    return {
        item
        for item, r in read_manifest(out_dir / RUN_MANIFEST).items()
        if r.get("error") is None and Path(r.get("output", "")).is_file()
    }


def _append(path: Path, record: VideoRecord) -> None:
    with path.open("a") as f:
        f.write(json.dumps(asdict(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass
class _Video:
    jobs: list[Job]
    done: dict[int, JobResult] = field(default_factory=dict)  # chunk index -> result
    attempts: int = 1
    failed: str | None = None


@dataclass(frozen=True)
class BatchSummary:
    """What ``run_batch`` did."""

    records: list[VideoRecord]  # this run's videos, in input order
    skipped: list[str]  # inputs a previous run finished
    seconds: float  # wall time of the run (actors started to last record)
    workers: int
    worker_restarts: int

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.records if r.error is None)

    @property
    def failed(self) -> list[VideoRecord]:
        return [r for r in self.records if r.error is not None]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "videos": [asdict(r) for r in self.records],
            "skipped": self.skipped,
            "frames": self.frames,
            "seconds": self.seconds,
            "throughput_fps": self.fps,
            "failures": len(self.failed),
            "workers": self.workers,
            "worker_restarts": self.worker_restarts,
        }


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise VidsegError(f"vidseg-batch needs Ray ({EXTRA_HINT}): {exc}") from None
    return ray


def run_batch(
    inputs: list[str],
    options: BatchOptions,
    *,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
    observer: Callable[[str, Job, Any], None] | None = None,
) -> BatchSummary:
    """Segment ``inputs`` on Ray with ``workers`` actors; see the module docstring.

    Connects to the cluster at ``address``, or uses the Ray instance this process already
    started, or starts a local one. ``observer(event, job, actor)`` is told "start" when a job
    is handed to an actor and "done"/"failed"/"lost" when it comes back (progress display).

    Raises:
        VidsegError: Ray missing or unreachable, or no inputs.
    """
    ray = _ray()
    out_dir = Path(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / RUN_MANIFEST
    done_before = finished_inputs(out_dir)
    todo = [i for i in inputs if i not in done_before]
    skipped = [i for i in inputs if i in done_before]
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise VidsegError(f"cannot start or reach Ray ({address or 'local'}): {exc}") from None
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=0)(Worker)
    videos = {i: _Video(jobs) for i, jobs in zip(todo, plan_jobs(todo, options))}
    queue: deque[Job] = deque(job for v in videos.values() for job in v.jobs)
    records: dict[str, VideoRecord] = {}
    restarts = 0
    t0 = time.perf_counter_ns()
    actors = [actor_cls.remote(options) for _ in range(min(workers, max(1, len(queue))))]
    idle = list(actors)
    running: dict[Any, tuple[Job, Any]] = {}
    notify = observer or (lambda event, job, actor: None)

    def finish(item: str) -> None:
        video = videos[item]
        results = [video.done[k] for k in sorted(video.done)]
        record = VideoRecord(
            item,
            video.jobs[0].output,
            attempts=video.attempts,
            chunks=len(video.jobs),
            error=video.failed,
        )
        if video.failed is None:
            if len(video.jobs) > 1:  # the parts that have frames (past the end: none)
                written = [r.job.part for r in results if r.frames and r.job.part]
                try:
                    concatenate_parts(written, record.output)
                except VidsegError as exc:
                    record.error = failure_reason(exc)
            record.frames = sum(r.frames for r in results)
            record.seconds = sum(r.seconds for r in results)
            record.fps = record.frames / record.seconds if record.seconds else 0.0
        if record.error is not None:  # nothing of a failed video is left behind
            remove_parts(j.part for j in video.jobs if j.part)
        records[item] = record
        _append(manifest_path, record)

    def retry_or_fail(job: Job, reason: str) -> None:
        video = videos[job.input]
        if video.failed is not None:
            return
        if job.attempt <= options.retries:
            video.attempts = max(video.attempts, job.attempt + 1)
            queue.append(replace(job, attempt=job.attempt + 1))
            return
        video.failed = reason
        pending = any(j.input == job.input for j, _ in running.values()) or any(
            j.input == job.input for j in queue
        )
        if not pending:
            finish(job.input)

    while queue or running:
        while queue and idle:
            job = queue.popleft()
            if videos[job.input].failed is not None:
                continue
            actor = idle.pop()
            running[actor.run.remote(job)] = (job, actor)
            notify("start", job, actor)
        if not running:
            break
        [ref], _ = ray.wait(list(running), num_returns=1)
        job, actor = running.pop(ref)
        try:
            result: JobResult = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # the worker died: replace it, re-queue
            notify("lost", job, actor)
            restarts += 1
            reason = failure_reason(exc)
            logger.warning("worker lost on %s: %s", job.input, reason)
            idle.append(actor_cls.remote(options))
            retry_or_fail(job, f"worker lost: {reason}")
            continue
        except ray.exceptions.RayError as exc:
            idle.append(actor)
            notify("failed", job, actor)
            retry_or_fail(job, failure_reason(exc))
            continue
        idle.append(actor)
        video = videos[job.input]
        if result.error is not None:
            notify("failed", job, actor)
            retry_or_fail(job, result.error)
            continue
        notify("done", job, actor)
        video.done[video.jobs.index(replace(job, attempt=1))] = result
        if len(video.done) == len(video.jobs) and video.failed is None:
            finish(job.input)
    for item, video in videos.items():  # failed while other chunks were still running
        if item not in records and video.failed is not None:
            finish(item)
    seconds = (time.perf_counter_ns() - t0) / 1e9
    for actor in actors + idle:
        ray.kill(actor)
    ordered = [records[i] for i in todo if i in records]
    return BatchSummary(ordered, skipped, seconds, len(actors), restarts)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="vidseg-batch",
        description="Segment a collection of videos on Ray (one "
        "long-lived worker per slot, each video in order inside one worker).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, folders of videos, or .txt lists (one path per line)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help=f"output directory: NAME.mkv class ids (or NAME.mp4 with --overlay) "
        f"and the run manifest {RUN_MANIFEST}",
    )
    p.add_argument("--model", help="model bundle (default: the bundled model)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="actors (default: the cluster's CPUs)")
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs each actor reserves (fractions share a GPU)",
    )
    p.add_argument("--threads", type=int, default=1, help="inference threads per worker")
    p.add_argument(
        "--chunk-frames",
        type=int,
        metavar="N",
        help="split videos longer than N frames into chunks run in parallel",
    )
    p.add_argument(
        "--warmup-frames",
        type=int,
        default=DEFAULT_WARMUP_FRAMES,
        metavar="K",
        help="frames a chunk runs before its first output (state re-established)",
    )
    p.add_argument(
        "--overlay",
        action="store_true",
        help="write H.264 overlays (.mp4) instead of lossless class ids (.mkv)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help="extra attempts for a failed video before it is reported",
    )
    p.add_argument("--max-frames", type=int, help="only the first N frames of each video")
    p.add_argument(
        "--json", metavar="PATH", help="run summary: per-video FPS, throughput, failures"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no per-video lines")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("workers", "threads", "chunk_frames", "max_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup_frames < 0 or args.retries < 0 or args.gpus_per_worker < 0:
        parser.error("--warmup-frames, --retries and --gpus-per-worker must be >= 0")
    if args.chunk_frames and args.overlay:
        parser.error(
            "--chunk-frames writes class-id parts joined without re-encoding; "
            "it does not go with --overlay"
        )
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be within 0..1, got {args.alpha}")
    why = unwritable(args.json) if args.json else None
    if why:  # before the run, not after it
        parser.error(f"--json: {why}")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    options = BatchOptions(
        Path(args.out),
        args.model,
        args.overlay,
        args.alpha,
        args.chunk_frames,
        args.warmup_frames,
        args.retries,
        args.threads,
        args.max_frames,
    )

    def report(event: str, job: Job, actor: Any) -> None:
        if not args.quiet and event in ("failed", "lost"):
            print(f"vidseg-batch: {event}: {job.input} (attempt {job.attempt})", file=sys.stderr)

    def go() -> BatchSummary:
        from vidseg.engine.bundle import default_bundle_path, load_bundle

        load_bundle(args.model or default_bundle_path())  # a bad bundle fails before Ray starts
        inputs = expand_inputs(args.inputs)
        return run_batch(
            inputs,
            options,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            address=args.address,
            observer=report,
        )

    code, summary = run_for_cli(
        "vidseg-batch",
        go,
        debug=args.debug,
        interrupted="interrupted; finished videos are in the manifest",
    )
    if summary is None:
        return code
    with lines_to_stderr(args.json) as stdout:  # --json -: the summary alone on stdout
        if not args.quiet:
            for r in summary.records:
                state = f"error: {r.error}" if r.error else f"{r.frames} frames, {r.fps:.1f} FPS"
                print(f"{r.input} -> {r.output}: {state}")
        if args.json:
            text = json.dumps(summary.to_json(), indent=2) + "\n"
            write = lambda: write_text(args.json, text, stdout=stdout)  # noqa: E731
            code, _ = run_for_cli("vidseg-batch", write, debug=args.debug)
            if code:
                return code
        print(
            f"vidseg-batch: {len(summary.records) - len(summary.failed)} done, "
            f"{len(summary.failed)} failed, {len(summary.skipped)} skipped (finished before); "
            f"{summary.frames} frames in {summary.seconds:.1f} s = {summary.fps:.1f} FPS on "
            f"{summary.workers} worker(s), {summary.worker_restarts} restarted"
        )
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
