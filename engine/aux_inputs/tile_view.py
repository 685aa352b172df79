"""The ``tile_view`` aux input: the view of the frame a tile-memory model runs on this frame.

The view follows the cycle of :mod:`.tile_cycle` (a key view after a reset, then each tile in
turn): the whole frame resized to the view size for a key view, else the tile's crop, (h, w, 3)
uint8, so the graph never handles the whole frame. A graph that reads this input has no frame
input (``replaces_frame``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vidseg.engine.aux_inputs import TILE_VIEW
from vidseg.engine.aux_inputs.tile_cycle import TileClock

__all__ = ["TILE_VIEW", "TileViewProvider"]


class TileViewProvider:
    """The ``tile_view`` aux input of one stream: for shape ``(h, w, 3)`` and the tiles' top-left
    ``offsets`` [(y, x), ...] in the frame, the (1, h, w, 3) uint8 view of each frame: the frame
    resized to (h, w) (bilinear) for a key view, else the next tile's crop."""

    replaces_frame = True  # the graph reads the view the engine cut, not the frame

    def __init__(self, shape: tuple[int, ...], offsets: Sequence[Sequence[int]] = ()) -> None:
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"tile_view shape must be (h, w, 3), got {shape}")
        tiles = [tuple(o) for o in offsets]
        if not tiles or not all(
            len(o) == 2 and all(isinstance(v, int) and v >= 0 for v in o) for o in tiles
        ):
            raise ValueError(
                f"tile_view offsets must list (y, x) pairs of ints >= 0, got {list(offsets)}"
            )
        self.size = (shape[0], shape[1])
        self.offsets = tiles
        self._clock = TileClock(len(tiles))

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
            raise ValueError(
                f"tile {view} at ({y}, {x}) of {h}x{w} does not fit a frame of "
                f"{frame.shape[0]}x{frame.shape[1]}"
            )
        return np.ascontiguousarray(frame[y : y + h, x : x + w])[None]
