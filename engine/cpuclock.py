"""CPU time per pipeline stage and the throughput it allows: ``CpuClock`` collects it during a
run, ``CpuReport`` is the result (core-milliseconds per frame and the ceiling they set).

Each pipeline thread adds its own CPU time (``time.thread_time_ns``) around its work on each
frame: ``decode`` (reading the frame and ``prepare``, in the decode thread), ``step`` (the
model thread's ``step`` call), ``render`` and ``encode`` (the call into the sink's ``write``).
Work on threads the pipeline does not own -- ONNX Runtime's intra-op pool, FFmpeg's decoder
threads, x264's threads, a live source's reader -- and the hand-offs between the stages is the
process's CPU time (``time.process_time_ns``) over the same window less the four stages:
``other``. Those threads are not told apart: ONNX Runtime and x264 leave theirs unnamed.

A frame that costs ``total_ms`` core-milliseconds (a millisecond of one core) lets ``cores``
cores give at most ``cores * 1000 / total_ms`` frames per second, the ceiling; the measured
FPS over it is the share of the cores the run kept busy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

STAGES = ("decode", "step", "render", "encode")  # the pipeline's threads, in frame order


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one (Linux),
    else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def ceiling_fps(cores: int, core_ms_per_frame: float) -> float:
    """The most frames per second ``cores`` cores can give when a frame costs
    ``core_ms_per_frame`` core-milliseconds of CPU: ``cores * 1000 / core_ms_per_frame``.

    Raises:
        ValueError: ``cores`` < 1 or ``core_ms_per_frame`` <= 0.
    """
    if cores < 1 or not core_ms_per_frame > 0:
        raise ValueError(
            f"need cores >= 1 and core-ms per frame > 0, got {cores} and {core_ms_per_frame}"
        )
    return cores * 1000.0 / core_ms_per_frame


@dataclass(frozen=True)
class CpuReport:
    """A run's CPU time per frame written, in core-milliseconds, by stage (see the module).

    ``other_ms`` is the process's CPU time less the four stages' threads: ONNX Runtime's pool,
    the codecs' threads, the hand-offs. Frames decoded and stepped but not written (warm-up)
    count in their stages but not in ``frames``. The window is the frame loop's, as ``wall_s``:
    frames an encoder still holds at its end (x264's look-ahead) are encoded after it.
    """

    frames: int  # frames written
    wall_s: float  # the window's wall time
    cores: int  # cores the process may run on (usable_cores)
    decode_ms: float  # decode thread: reading the frame + prepare
    step_ms: float  # model thread: step
    render_ms: float  # render thread: labels to the output size, the overlay
    encode_ms: float  # encode thread: the call into the encoder (its own threads in other)
    other_ms: float  # every other thread of the process

    @property
    def total_ms(self) -> float:
        """The process's CPU time per frame: the four stages and ``other``."""
        return self.decode_ms + self.step_ms + self.render_ms + self.encode_ms + self.other_ms

    @property
    def ceiling_fps(self) -> float:
        return ceiling_fps(self.cores, self.total_ms)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def of_ceiling(self) -> float:
        """Measured FPS / the ceiling (0..1): the share of the cores the run kept busy."""
        return self.fps / self.ceiling_fps

    def as_json(self) -> dict[str, Any]:
        """The report for a JSON summary, ms rounded to µs."""
        stages = {name: getattr(self, f"{name}_ms") for name in (*STAGES, "other")}
        return {
            "cores": self.cores,
            "core_ms_per_frame": {k: round(v, 3) for k, v in stages.items()}
            | {"total": round(self.total_ms, 3)},
            "ceiling_fps": round(self.ceiling_fps, 2),
            "fps": round(self.fps, 2),
            "of_ceiling_pct": round(100 * self.of_ceiling, 1),
        }

    def line(self) -> str:
        """One human line (``cpu_line``)."""
        return cpu_line(self.as_json())


def cpu_line(cpu: Mapping[str, Any]) -> str:
    """A report as ``CpuReport.as_json`` gives it (a run's ``--json``, a bench report), as one
    human line: ``cpu per frame: decode 2.1 + step 30.5 + ... = 62.9 core-ms; ceiling 31.8 fps
    on 2 cores, 27.0 fps = 85% of it``."""
    ms = cpu["core_ms_per_frame"]
    parts = " + ".join(f"{name} {ms[name]:.1f}" for name in (*STAGES, "other"))
    return (
        f"cpu per frame: {parts} = {ms['total']:.1f} core-ms; ceiling {cpu['ceiling_fps']:.1f} "
        f"fps on {cpu['cores']} cores, {cpu['fps']:.1f} fps = {cpu['of_ceiling_pct']:.0f}% of it"
    )


class CpuClock:
    """The CPU time of a run's stages, and of the whole process, since the clock was made.

    Each stage's thread calls ``add(stage, t0)`` with a ``time.thread_time_ns()`` it read
    before the work; a stage is added to from one thread only, so no lock is needed.
    """

    def __init__(self) -> None:
        self._stage_ns = dict.fromkeys(STAGES, 0)
        self._process_ns = time.process_time_ns()

    def add(self, stage: str, since_ns: int) -> None:
        """Add the calling thread's CPU time since ``since_ns`` (its ``thread_time_ns``)."""
        self._stage_ns[stage] += time.thread_time_ns() - since_ns

    def report(self, frames: int, wall_s: float, cores: int | None = None) -> CpuReport | None:
        """The CPU time so far per frame written (None when ``frames`` or ``wall_s`` is 0);
        ``cores``: the cores the ceiling counts (default: ``usable_cores()``)."""
        stage_ns = dict(self._stage_ns)  # before the process: it holds all of these
        process_ns = time.process_time_ns() - self._process_ns
        if frames < 1 or not wall_s > 0:
            return None
        per_frame = {name: ns / frames / 1e6 for name, ns in stage_ns.items()}
        return CpuReport(
            frames=frames,
            wall_s=wall_s,
            cores=cores or usable_cores(),
            **{f"{name}_ms": ms for name, ms in per_frame.items()},
            other_ms=process_ns / frames / 1e6 - sum(per_frame.values()),
        )
