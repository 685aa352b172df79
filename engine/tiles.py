"""The engine's tile inputs: which view of the frame a tile-memory model runs next, and that view.

A tile-memory bundle (``vidseg-export CHECKPOINT --tiles RxC``, ``vidseg.models.tiles``) runs its
per-frame network on one view per frame: the whole frame, downscaled (a *key* view), or one of
R x C overlapping tiles of it at the network's input resolution. After a reset (a stream's
start, a cut, a reconnect) the first frame is a key view, which fills the whole memory; the
tiles then follow in order, one per frame, round and round.

Two providers follow that one cycle (each stream has one of each, reset together and called
once per frame, so they stay in step):

* ``tile_cycle``: a one-hot vector of R x C + 1 entries, ``[i] = 1`` for tile i, the last entry
  for the key view (where the graph places the view's probabilities);
* ``tile_view``: the view itself, (h, w, 3) uint8 cut from the frame (or the frame resized, for
  a key view), so the graph never handles the whole frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

TILE_CYCLE = "tile_cycle"  # the providers' names in a manifest's aux_inputs
TILE_VIEW = "tile_view"


class _TileClock:
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

    def __init__(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 1 or shape[0] < 2:
            raise ValueError(f"tile_cycle shape must be (tiles + 1,) with tiles >= 1, got {shape}")
        self.tiles = shape[0] - 1
        self._clock = _TileClock(self.tiles)

    def reset(self) -> None:
        self._clock.reset()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` is not read: the view depends only on the frames since the last reset."""
        view = self._clock.tick()
        out = np.zeros((1, self.tiles + 1), np.float32)
        out[0, self.tiles if view is None else view] = 1.0
        return out


class TileViewProvider:
    """The ``tile_view`` aux input of one stream: for shape ``(h, w, 3)`` and the tiles' top-left
    ``offsets`` [(y, x), ...] in the frame, the (1, h, w, 3) uint8 view of each frame: the frame
    resized to (h, w) (bilinear) for a key view, else the next tile's crop."""

    def __init__(self, shape: tuple[int, ...], offsets: Sequence[Sequence[int]] = ()) -> None:
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"tile_view shape must be (h, w, 3), got {shape}")
        tiles = [tuple(o) for o in offsets]
        if not tiles or not all(len(o) == 2 and all(isinstance(v, int) and v >= 0 for v in o)
                                for o in tiles):  # fmt: skip
            raise ValueError(f"tile_view offsets must list (y, x) pairs of ints >= 0, "
                             f"got {list(offsets)}")  # fmt: skip
        self.size = (shape[0], shape[1])
        self.offsets = tiles
        self._clock = _TileClock(len(tiles))

    def reset(self) -> None:
        self._clock.reset()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame``: (H, W, 3) uint8 RGB at the model input size (the whole frame).

        Raises:
            ValueError: a tile does not fit in the frame.
        """
        h, w = self.size
        view = self._clock.tick()
        if view is None:
            return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)[None]
        y, x = self.offsets[view]
        if y + h > frame.shape[0] or x + w > frame.shape[1]:
            raise ValueError(f"tile {view} at ({y}, {x}) of {h}x{w} does not fit a frame of "
                             f"{frame.shape[0]}x{frame.shape[1]}")  # fmt: skip
        return np.ascontiguousarray(frame[y : y + h, x : x + w])[None]
