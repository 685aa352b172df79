"""The engine's ``tile_cycle`` aux input: which view of the frame a tile-memory model runs next.

A tile-memory bundle (``vidseg-export CHECKPOINT --tiles RxC``, ``vidseg.models.tiles``) runs its
per-frame network on one view per frame: the whole frame, downscaled (a *key* view), or one of
R x C overlapping tiles of it at the bundle's input resolution. The view is chosen by this input,
a one-hot vector of R x C + 1 entries: ``[i] = 1`` runs tile i, the last entry the key view.

After a reset (a stream's start, a cut, a reconnect) the first frame is a key view, which fills
the whole memory; the tiles then follow in order, one per frame, round and round.
"""

from __future__ import annotations

import numpy as np

TILE_CYCLE = "tile_cycle"  # the provider's name in a manifest's aux_inputs


class TileCycleProvider:
    """The ``tile_cycle`` aux input of one stream: a key view after ``reset()``, then tiles
    0, 1, ..., n - 1, 0, ... Output (1, n + 1) float32 one-hot for shape ``(n + 1,)``."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 1 or shape[0] < 2:
            raise ValueError(f"tile_cycle shape must be (tiles + 1,) with tiles >= 1, got {shape}")
        self.tiles = shape[0] - 1
        self._next: int | None = None  # None: the key view next

    def reset(self) -> None:
        self._next = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` is not read: the view depends only on the frames since the last reset."""
        view = self.tiles if self._next is None else self._next
        self._next = 0 if self._next is None else (self._next + 1) % self.tiles
        out = np.zeros((1, self.tiles + 1), np.float32)
        out[0, view] = 1.0
        return out
