"""The ``tile_cycle`` aux input: which view of the frame a tile-memory model runs next.

A tile-memory bundle (``vidseg-export CHECKPOINT --tiles RxC``, ``vidseg.models.tiles``) runs its
per-frame network on one view per frame: the whole frame, downscaled (a *key* view), or one of
R x C overlapping tiles of it at the network's input resolution. After a reset (a stream's
start, a cut, a reconnect) the first frame is a key view, which fills the whole memory; the
tiles then follow in order, one per frame, round and round (:class:`TileClock`).

Two providers follow that one cycle (each stream has one of each, reset together and called
once per frame, so they stay in step):

* ``tile_cycle`` (here): a one-hot vector of R x C + 1 entries, ``[i] = 1`` for tile i, the last
  entry for the key view (where the graph places the view's probabilities);
* ``tile_view`` (:mod:`.tile_view`): the view itself, cut from the frame.
"""

from __future__ import annotations

import numpy as np

from vidseg.engine.aux_inputs import TILE_CYCLE

__all__ = ["TILE_CYCLE", "TileClock", "TileCycleProvider"]


class TileClock:
    """The view due on the next frame: None (the key view) after ``reset()``, then tiles
    0, 1, ..., n - 1, 0, ..."""

    def __init__(self, tiles: int) -> None:
        self.tiles = tiles
        self._next: int | None = None

    def reset(self) -> None:
        self._next = None

    def tick(self) -> int | None:
        """The view of this frame (None: the key view); advances to the next."""
        view = self._next
        self._next = 0 if view is None else (view + 1) % self.tiles
        return view


class TileCycleProvider:
    """The ``tile_cycle`` aux input of one stream. Output (1, n + 1) float32 one-hot for shape
    ``(n + 1,)``."""

    replaces_frame = False  # a vector beside whatever else the graph reads

    def __init__(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 1 or shape[0] < 2:
            raise ValueError(f"tile_cycle shape must be (tiles + 1,) with tiles >= 1, got {shape}")
        self.tiles = shape[0] - 1
        self._clock = TileClock(self.tiles)

    def reset(self) -> None:
        self._clock.reset()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` is not read: the view depends only on the frames since the last reset."""
        view = self._clock.tick()
        out = np.zeros((1, self.tiles + 1), np.float32)
        out[0, self.tiles if view is None else view] = 1.0
        return out
