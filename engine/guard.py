"""When one stream's carried state must be forgotten before a frame runs on it.

The one rule for every way into the engine (``Segmenter.step`` and ``stream``, ``vidseg-run``'s
pipeline, each row of ``MultiStreamSegmenter``):

* a cut: the frame says ``discontinuity`` (its source restarted: a reconnect), or its size
  differs from the previous frame's (the stream changed resolution: a new scene);
* a poisoned state: the state or key-frame cache holds NaN or Inf (a model that overflowed, a
  corrupted buffer);
* a stale memory (``engine.refresh``): the frame's timestamp too far from the previous one's
  (``stale``), or, once the aux-input providers have seen the frame, too much of it that its
  past fails to explain (``unexplained``: then the owner resets and asks them again);
* no memory (``memory=False``): before every frame, not counted as a reset.

The guard decides, logs one line and counts; its owner resets the state.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from vidseg.engine.refresh import Refresh

logger = logging.getLogger(__name__)
# frames between checks of a state held in device memory for NaN/Inf (each check copies it to
# the host); a state on the host is checked before every frame (30-75 us for the default's)
NONFINITE_CHECK_EVERY = 30


class StreamGuard:
    """The rules for one stream; see the module docstring.

    Args:
        device: where the state lives ("cpu": checked for NaN/Inf before every frame; elsewhere
            every ``NONFINITE_CHECK_EVERY`` frames).
        name: prefix of the log lines (``"stream 2"`` for a row of a multi-stream batch).
        memory: False: the owner resets the stream before every frame (``memory``).
        refresh: when the memory is stale (default ``Refresh()``; ``Refresh.off()``: never).
        carries: False for a bundle with no state, cache or aux input: nothing can go stale, so
            it is never refreshed, whatever ``refresh`` says.
    """

    def __init__(
        self,
        device: str = "cpu",
        name: str = "",
        memory: bool = True,
        refresh: Refresh | None = None,
        carries: bool = True,
    ) -> None:
        self._prefix = f"{name}: " if name else ""
        self._every = 1 if device == "cpu" else NONFINITE_CHECK_EVERY
        self.memory = memory
        if not carries:
            refresh = Refresh.off()
        self.refresh = Refresh() if refresh is None else refresh
        self.size: tuple[int, int] | None = None  # (H, W) of the last frame since a reset
        self.timestamp: float | None = None  # seconds, of the last frame since a reset
        self.cut_resets = 0  # resets at a discontinuity or a change of frame size
        self.nonfinite_resets = 0  # resets because the state held NaN or Inf
        self.refreshes = 0  # resets because the memory was stale

    def forget(self) -> None:
        """The stream starts over (its owner reset it): the next frame is nobody's successor."""
        self.size = self.timestamp = None

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

    def stale(self, index: int, timestamp: float | None, fresh: bool = False) -> bool:
        """Whether frame ``index`` at ``timestamp`` (seconds, or None) finds the memory stale
        by time after the previous frame (``Refresh.stale_by_time``): counted in
        ``refreshes``. Every frame's timestamp is recorded; ``fresh``: the owner resets the
        state before this frame anyway (nothing else is done)."""
        previous, self.timestamp = self.timestamp, timestamp
        if fresh or not self.memory or not self.refresh.stale_by_time(previous, timestamp):
            return False
        logger.debug(
            "%sframe %d: %.3f s after the previous frame (at %.3f s); memory refreshed",
            self._prefix,
            index,
            timestamp - previous,  # type: ignore[operator]
            previous,
        )
        self.refreshes += 1
        return True

    def unexplained(self, index: int, providers: Iterable[Any]) -> bool:
        """Whether the aux-input ``providers``, having seen frame ``index``, report more of it
        unexplained by its past than the refresh rule allows (``Refresh.stale_by_content``):
        counted in ``refreshes``; the owner then resets and asks them again."""
        if not self.memory:
            return False
        mismatch = self.refresh.stale_by_content(providers)
        if mismatch is None:
            return False
        logger.debug(
            "%sframe %d: %.0f %% of it unexplained by the previous frame; memory refreshed",
            self._prefix,
            index,
            100 * mismatch,
        )
        self.refreshes += 1
        return True
