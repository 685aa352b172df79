"""``engine.cpuclock``: the ceiling's arithmetic, and a clock whose stages never add up to more
than the process spent (no timed assertions: the machine may be busy)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from vidseg.engine.cpuclock import STAGES, CpuClock, CpuReport, ceiling_fps, cpu_line, usable_cores


def test_ceiling_is_cores_times_1000_over_core_ms() -> None:
    assert ceiling_fps(2, 80.0) == 25.0
    assert ceiling_fps(1, 40.0) == 25.0
    assert ceiling_fps(4, 1000.0) == 4.0


@pytest.mark.parametrize("cores, ms", [(0, 10.0), (2, 0.0), (2, -1.0), (2, float("nan"))])
def test_ceiling_refuses_what_has_none(cores: int, ms: float) -> None:
    with pytest.raises(ValueError, match="core-ms per frame"):
        ceiling_fps(cores, ms)


def test_report_sums_its_stages() -> None:
    """50 frames in 2.5 s (20 fps), 80 core-ms a frame on 2 cores: ceiling 25 fps, 80% of it."""
    report = CpuReport(
        frames=50,
        wall_s=2.5,
        cores=2,
        decode_ms=5.0,
        step_ms=40.0,
        render_ms=10.0,
        encode_ms=5.0,
        other_ms=20.0,
    )
    assert report.total_ms == 80.0 and report.ceiling_fps == 25.0
    assert report.fps == 20.0 and report.of_ceiling == pytest.approx(0.8)
    summary = report.as_json()
    assert summary == {
        "cores": 2,
        "core_ms_per_frame": {
            "decode": 5.0,
            "step": 40.0,
            "render": 10.0,
            "encode": 5.0,
            "other": 20.0,
            "total": 80.0,
        },
        "ceiling_fps": 25.0,
        "fps": 20.0,
        "of_ceiling_pct": 80.0,
    }
    line = (
        "cpu per frame: decode 5.0 + step 40.0 + render 10.0 + encode 5.0 + other 20.0 = "
        "80.0 core-ms; ceiling 25.0 fps on 2 cores, 20.0 fps = 80% of it"
    )
    assert report.line() == cpu_line(summary) == line


def _spin(clock: CpuClock, stage: str, until: float) -> None:
    t0 = time.thread_time_ns()
    while time.thread_time_ns() - t0 < 2_000_000 and time.monotonic() < until:
        pass
    clock.add(stage, t0)


def test_clock_stages_fit_in_the_process() -> None:
    """Each stage counts its own thread's CPU only: with work on two threads and more outside
    any stage, every stage is >= 0, the spinning ones > 0, and their sum <= the process's."""
    clock = CpuClock()
    until = time.monotonic() + 30  # a bound, not an assertion: a starved thread still ends
    worker = threading.Thread(target=_spin, args=(clock, "render", until))
    worker.start()
    _spin(clock, "step", until)
    worker.join()
    t0 = time.thread_time_ns()
    while time.thread_time_ns() - t0 < 1_000_000 and time.monotonic() < until:
        pass  # CPU outside every stage: "other"
    report = clock.report(frames=2, wall_s=1.0, cores=2)
    assert report is not None and report.cores == 2 and report.frames == 2
    assert report.step_ms > 0 and report.render_ms > 0
    assert report.decode_ms == report.encode_ms == 0
    assert report.other_ms >= 0  # the stages' sum is within the process's CPU time
    assert report.total_ms >= report.step_ms + report.render_ms


def test_no_report_without_frames() -> None:
    clock = CpuClock()
    assert clock.report(frames=0, wall_s=1.0) is None
    assert clock.report(frames=3, wall_s=0.0) is None


def test_usable_cores() -> None:
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
    assert STAGES == ("decode", "step", "render", "encode")
