"""The frame type every source yields and every stepper takes: ``Frame``, an image with its
source timestamp. It belongs to no reader: video files (PyAV), image folders, live sources and
callers' own arrays all arrive as a ``Frame``, and the engine core reads it without PyAV. Also
``prepend``, how a source puts back the frame it looked ahead at (the readers and the live
sources share it, and neither needs the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, TypeVar

import numpy as np

__all__ = ["Frame", "prepend"]
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame with its source timestamp.

    ``eq=False``: frames compare by identity (comparing pixel arrays element-wise is never what
    ``==`` should mean). The array belongs to the consumer; nothing else holds a reference.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous
    index: int  # 0-based position in decode (= presentation) order
    pts: int | None  # presentation timestamp in time_base units, from the source; None if absent
    time_base: Fraction  # seconds per pts tick (the source stream's time base)
    discontinuity: bool = False  # the source restarted here (a reconnect): the past is unrelated
    # time.monotonic_ns() when a live source received the frame (LatestFrameSource); None for
    # a file. Segmenter.step measures Result.age_ms from it: end-to-end latency.
    captured_ns: int | None = None

    @property
    def timestamp_s(self) -> float | None:
        """Presentation time in seconds (``pts * time_base``); None when the source had no pts."""
        if self.pts is None:
            return None
        return float(self.pts * self.time_base)


def prepend(first: T, rest: Iterator[T]) -> Iterator[T]:
    """``first`` then ``rest``; closing it closes ``rest``."""
    try:
        yield first
        yield from rest
    finally:
        rest_close = getattr(rest, "close", None)
        if rest_close is not None:
            rest_close()
