"""Running numbers for a perception loop: step latency percentiles over the last frames, rolling
FPS, result age, resets and drops. ``Segmenter.stats()`` returns a ``StatsSnapshot``.

Cheap enough for every frame: one deque append per step; the percentiles are computed only when
a snapshot is taken.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vidseg.engine.stats import percentiles

STATS_WINDOW = 300  # frames the percentiles and the rolling FPS cover (12 s at 25 FPS)


@dataclass(frozen=True)
class StatsSnapshot:
    """A segmenter's numbers at one moment. Percentiles and ``fps`` cover the last ``window``
    frames (None before the first frame; ``fps`` needs two)."""

    frames: int  # frames stepped since the segmenter was made
    resets: int  # resets after a frame had been stepped (a seek, a cut, a reconnect)
    dropped: int  # frames the source dropped before they reached the model (note_dropped)
    window: int  # frames the figures below cover
    step_ms_p50: float | None  # Segmenter.step wall time (pre + infer; labels sized when read)
    step_ms_p99: float | None
    age_ms_p50: float | None  # capture (or decode) to the end of the step
    age_ms_p99: float | None
    fps: float | None  # frames in the window / the wall time between their results

    def line(self) -> str:
        """One human line: ``frames 250 | 31.2 fps | step p50 24.1 ms p99 30.2 ms | ...``."""

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        fps = "-" if self.fps is None else f"{self.fps:.1f}"
        return (
            f"frames {self.frames} | {fps} fps | step p50 {ms(self.step_ms_p50)} ms "
            f"p99 {ms(self.step_ms_p99)} ms | age p50 {ms(self.age_ms_p50)} ms | dropped "
            f"{self.dropped} | resets {self.resets}"
        )


class Telemetry:
    """Collects one stream's per-frame numbers from the segmenter's thread; ``snapshot`` may
    be taken from another thread (a pipeline's encode thread)."""

    def __init__(self, window: int = STATS_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._steps: deque[tuple[int, float, float]] = deque(maxlen=window)  # (end ns, ms, age)
        self.frames = 0
        self.resets = 0
        self.dropped = 0
        self._since_reset = 0

    def record(self, step_ms: float, age_ms: float, end_ns: int | None = None) -> None:
        end = time.perf_counter_ns() if end_ns is None else end_ns
        self._steps.append((end, step_ms, age_ms))
        self.frames += 1
        self._since_reset += 1

    def note_reset(self) -> None:
        """Count a reset that follows at least one frame (a fresh stream's reset is not one)."""
        if self._since_reset:
            self.resets += 1
        self._since_reset = 0

    def note_dropped(self, frames: int) -> None:
        if frames < 0:
            raise ValueError(f"dropped frames must be >= 0, got {frames}")
        self.dropped += frames

    def snapshot(self) -> StatsSnapshot:
        # tuple(): one C-level copy, safe while another thread records
        return _snapshot(self.frames, self.resets, self.dropped, tuple(self._steps))

    @staticmethod
    def combined(parts: Sequence["Telemetry"]) -> StatsSnapshot:
        """One snapshot of several streams (a multi-stream batch): counts summed, percentiles
        over every stream's window, ``fps`` the results of all streams per second."""
        recent = sorted(step for t in parts for step in tuple(t._steps))
        return _snapshot(
            sum(t.frames for t in parts),
            sum(t.resets for t in parts),
            sum(t.dropped for t in parts),
            tuple(recent),
        )


def _snapshot(
    frames: int, resets: int, dropped: int, recent: tuple[tuple[int, float, float], ...]
) -> StatsSnapshot:
    """The snapshot of counters and (end ns, step ms, age ms) results in end order."""
    n = len(recent)
    if not n:
        return StatsSnapshot(frames, resets, dropped, 0, *(None,) * 5)
    ends, steps, ages = (np.asarray(v, np.float64) for v in zip(*recent))
    step_q, age_q = percentiles(steps, (50, 99)), percentiles(ages, (50, 99))
    p50, p99, a50, a99 = step_q["p50"], step_q["p99"], age_q["p50"], age_q["p99"]
    span_s = (ends[-1] - ends[0]) / 1e9
    fps = round((n - 1) / span_s, 2) if n > 1 and span_s > 0 else None
    return StatsSnapshot(frames, resets, dropped, n, p50, p99, a50, a99, fps)


class SourceDrops:
    """Frames a source dropped since the last look, from its running ``dropped`` count (as
    ``LatestFrameSource`` keeps; a source without one drops nothing)."""

    def __init__(self, source: object) -> None:
        self._source = source
        self._seen = 0

    def new(self) -> int:
        """Frames dropped since the previous call."""
        dropped = getattr(self._source, "dropped", 0)
        fresh, self._seen = max(0, dropped - self._seen), max(dropped, self._seen)
        return fresh
