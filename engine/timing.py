"""Per-frame timing: ``FrameTimings`` (the stages of one step, in ms) and ``elapsed_ms``, shared by
``Segmenter`` and ``MultiStreamSegmenter``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrameTimings:
    """Wall time of each stage of one ``step``, in milliseconds (``perf_counter_ns``). For a
    ``PreparedFrame`` the resize (and a split bundle's encoder) ran in ``prepare`` and is not
    counted here: ``infer_ms`` is then the step graph alone."""

    pre_ms: float  # resize to the model input, aux inputs (optical flow), key-frame decision
    infer_ms: float  # backend run (device-synchronised)
    post_ms: float  # labels back to the frame size

    @property
    def total_ms(self) -> float:
        return self.pre_ms + self.infer_ms + self.post_ms


def elapsed_ms(t0: int, t1: int) -> float:
    """Milliseconds from ``t0`` to ``t1``, both ``time.perf_counter_ns()`` values."""
    return (t1 - t0) / 1e6
