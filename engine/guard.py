"""When one stream's carried state must be forgotten before a frame runs on it.

The one rule for every way into the engine (``Segmenter.step`` and ``stream``, ``vidseg-run``'s
pipeline, each row of ``MultiStreamSegmenter``):

* a cut: the frame says ``discontinuity`` (its source restarted: a reconnect), or its size
  differs from the previous frame's (the stream changed resolution: a new scene);
* a poisoned state: the state or key-frame cache holds NaN or Inf (a model that overflowed, a
  corrupted buffer).

The guard decides, logs one line and counts; its owner resets the state.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)
# frames between checks of a state held in device memory for NaN/Inf (each check copies it to
# the host); a state on the host is checked before every frame (30-75 us for the default's)
NONFINITE_CHECK_EVERY = 30


class StreamGuard:
    """The cut and NaN/Inf rules for one stream; see the module docstring.

    Args:
        device: where the state lives ("cpu": checked for NaN/Inf before every frame; elsewhere
            every ``NONFINITE_CHECK_EVERY`` frames).
        name: prefix of the log lines (``"stream 2"`` for a row of a multi-stream batch).
    """

    def __init__(self, device: str = "cpu", name: str = "") -> None:
        self._prefix = f"{name}: " if name else ""
        self._every = 1 if device == "cpu" else NONFINITE_CHECK_EVERY
        self.size: tuple[int, int] | None = None  # (H, W) of the last frame since a reset
        self.cut_resets = 0  # resets at a discontinuity or a change of frame size
        self.nonfinite_resets = 0  # resets because the state held NaN or Inf

    def forget(self) -> None:
        """The stream starts over (its owner reset it): the next frame is nobody's successor."""
        self.size = None

    def cut(self, index: int, size: tuple[int, int], discontinuity: bool) -> bool:
        """Whether frame ``index`` of ``size`` (H, W) starts a new scene after the frames seen
        since the last ``forget``: logged and counted when it does. The first frame after a
        ``forget`` never does (the state is fresh already)."""
        previous, self.size = self.size, size
        if previous is None:
            return False
        if discontinuity:
            logger.info("%sframe %d: the source restarted; state reset", self._prefix, index)
        elif size != previous:
            logger.warning(
                "%sframe %d: frame size changed from %dx%d to %dx%d; state reset",
                self._prefix,
                index,
                previous[1],
                previous[0],
                size[1],
                size[0],
            )
        else:
            return False
        self.cut_resets += 1
        return True

    def poisoned(self, index: int, state: Any, cache: Any, row: int | None = None) -> bool:
        """Whether ``state`` or ``cache`` (``StreamState``; ``row`` of a batch) holds NaN or Inf
        before frame ``index`` runs on it (checked on this frame's turn only): logged the first
        time and every 100th, counted."""
        if index % self._every:
            return False
        bad = state.nonfinite(row) or cache.nonfinite(row)
        if bad is None:
            return False
        self.nonfinite_resets += 1
        if self.nonfinite_resets == 1 or self.nonfinite_resets % 100 == 0:
            logger.warning(
                "%sframe %d: the recurrent state %r holds NaN or Inf; state reset (%d so far)",
                self._prefix,
                index,
                bad,
                self.nonfinite_resets,
            )
        return True
