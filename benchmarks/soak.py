"""``vidseg-bench --soak N``: N frames through the threaded pipeline, looking for what grows.

The sample clip's frames (decoded once) are fed again and again through ``segment_video`` (decode
thread, model on the caller, encode thread with a sink that renders and drops) with the state
carried throughout. Every ``every`` frames the encode thread samples the process's RSS (now, not
the peak), its Python threads and the segmenter's step p99 over the last 300 frames. Growth is the
last sample against the first (taken after ``every`` frames, so warm-up allocations are out):
the issue's goal is RSS growth < 5 % and p99 drift < 10 % over 10 000 frames.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vidseg.engine.frame import Frame
from vidseg.engine.pipeline import segment_video
from vidseg.engine.segmenter import Result, Segmenter
from vidseg.engine.video import read_frames

SOAK_SAMPLE_EVERY = 500  # frames between samples (fewer for runs under 5000 frames)


def rss_mb() -> float:
    """The process's resident set size now (Linux /proc), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cycled(images: list[np.ndarray], frames: int, time_base: Fraction) -> Iterator[Frame]:
    for index, image in zip(range(frames), itertools.cycle(images)):
        yield Frame(image.copy(), index, index, time_base)  # a fresh array, as a decoder makes


def soak(
    segmenter: Segmenter,
    clip: str | Path,
    frames: int,
    every: int | None = None,
    clip_frames: int = 50,
) -> dict[str, Any]:
    """Run ``frames`` frames (the first ``clip_frames`` of ``clip``, cycled) through the
    pipeline; RSS, threads and step p99 every ``every`` frames. Returns the report."""
    if frames < 1:
        raise ValueError(f"soak frames must be >= 1, got {frames}")
    every = every or (
        SOAK_SAMPLE_EVERY if frames >= 10 * SOAK_SAMPLE_EVERY else max(1, frames // 10)
    )
    images = [f.image for f in read_frames(clip, max_frames=clip_frames)]
    threads_before = threading.active_count()
    samples: list[dict[str, float]] = []
    started = time.perf_counter()

    done = 0

    def on_frame(result: Result) -> None:  # the encode thread, in frame order
        nonlocal done
        done += 1
        if done % every == 0 or done == frames:
            stats = segmenter.stats()
            samples.append(
                {
                    "frame": done,
                    "rss_mb": round(rss_mb(), 1),
                    "threads": threading.active_count(),
                    "step_ms_p99": stats.step_ms_p99,
                    "wall_s": round(time.perf_counter() - started, 2),
                }
            )

    run = segment_video(
        segmenter,
        _cycled(images, frames, Fraction(1, 25)),
        _NullSink(),
        lambda frame, result: result.labels,
        on_frame=on_frame,
    )
    threads_after = threading.active_count()
    first, last = samples[0], samples[-1]

    def growth(key: str) -> float | None:
        a, b = first[key], last[key]
        return None if a is None or b is None or not a else round(100 * (b - a) / a, 2)

    return {
        "frames": run.frames,
        "every": every,
        "wall_s": round(run.wall_s, 2),
        "fps": round(run.fps, 2),
        "samples": samples,
        "rss_growth_pct": growth("rss_mb"),
        "p99_drift_pct": growth("step_ms_p99"),
        "threads_before": threads_before,
        "threads_after": threads_after,
        "thread_leak": threads_after - threads_before,
    }


class _NullSink:
    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        pass


def soak_lines(report: dict[str, Any]) -> list[str]:
    """The report for a terminal: one line per sample, then the verdict."""
    lines = [
        f"  frame {s['frame']:6d}  rss {s['rss_mb']:8.1f} MB  threads {s['threads']}  "
        f"step p99 {s['step_ms_p99'] or 0:7.2f} ms  {s['wall_s']:.1f} s"
        for s in report["samples"]
    ]
    lines.append(
        f"soak: {report['frames']} frames at {report['fps']:.1f} fps; RSS growth "
        f"{report['rss_growth_pct']} % (goal < 5), p99 drift {report['p99_drift_pct']} % "
        f"(goal < 10), threads {report['threads_before']} -> "
        f"{report['threads_after']}"
    )
    return lines
