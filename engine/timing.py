"""Per-frame timing: ``FrameTimings`` (the stages of one step, in ms) and ``elapsed_ms``, shared by
``Segmenter`` and ``MultiStreamSegmenter``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrameTimings:
    """Wall time of each stage of one frame's segmentation, in milliseconds
    (``perf_counter_ns``): ``pre_ms`` and ``infer_ms`` are the ``step``; ``post_ms`` is the
    labels' way from the graph's label stride to the result's size, which happens when they
    are first read (``Result.labels``/``scores``), so a ``Result`` reports 0 until then. For a
    ``PreparedFrame`` the resize (and a split bundle's encoder) ran in ``prepare`` and is not
    counted here: ``infer_ms`` is then the step graph alone."""

    pre_ms: float  # resize to the model input, aux inputs (optical flow), key-frame decision
    infer_ms: float  # backend run (device-synchronised)
    post_ms: float  # labels and confidence to the result's size, when read (0 until then)

    @property
    def total_ms(self) -> float:
        """The step, and the labels' upsampling once they have been read."""
        return self.pre_ms + self.infer_ms + self.post_ms


def elapsed_ms(t0: int, t1: int) -> float:
    """Milliseconds from ``t0`` to ``t1``, both ``time.perf_counter_ns()`` values."""
    return (t1 - t0) / 1e6
