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

import json
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from vidseg.engine.errors import VidsegError

logger = logging.getLogger(__name__)

from vidseg.engine.batchjobs import (
    EXTRA_HINT,
    RUN_MANIFEST,
    BatchOptions,
    Job,
    JobResult,
    VideoRecord,
    concatenate_parts,
    failure_reason,
    plan_jobs,
    remove_parts,
    segment_video_file,
)


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
