"""The ``dis_flow`` aux input: DIS optical flow (OpenCV) on downscaled grey frames.

One function serves training (``vidseg.models`` computes flow for synthetic clips with it) and
the engine (the ``dis_flow`` aux-input provider), so the model sees the same flow in both.

Convention: ``flow[:, y, x] = (dx, dy)`` in pixels of the flow's own (h, w) grid, from the
*current* frame to the *previous* one: ``current(x, y) ~ previous(x + dx, y + dy)``. That is
the direction backward warping needs (sample the previous features at the displaced position).
"""

from __future__ import annotations

import cv2
import numpy as np

from vidseg.engine.aux_inputs import DIS_FLOW

__all__ = ["DIS_FLOW", "DIS_PRESET", "DisFlowProvider", "dis_flow", "grey", "warp_mismatch"]

DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST
# the warp check (``warp_mismatch``): on a grid this many times coarser than the flow's, a cell
# the previous frame, warped by the flow, misses by more than this many grey levels (0..255)
MISMATCH_SCALE = 4
MISMATCH_GREY = 20


def grey(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, w) uint8 grey at ``size`` = (h, w) (area downscale)."""
    h, w = size
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if g.shape != (h, w):
        g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
    return g


def dis_flow(
    previous: np.ndarray,
    current: np.ndarray,
    size: tuple[int, int],
    dis: cv2.DISOpticalFlow | None = None,
) -> np.ndarray:
    """Flow from ``current`` to ``previous`` (both (H, W, 3) uint8 RGB) as (2, h, w) float32."""
    dis = dis or cv2.DISOpticalFlow_create(DIS_PRESET)
    flow = dis.calc(grey(current, size), grey(previous, size), None)  # (h, w, 2)
    return np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)


def warp_mismatch(previous: np.ndarray, current: np.ndarray, flow: np.ndarray) -> float:
    """The share of ``current``'s cells that ``previous`` warped by ``flow`` misses by more than
    ``MISMATCH_GREY`` grey levels: how much of the frame its past fails to explain (a few % from
    one video frame to the next; most of it after a cut).

    Args:
        previous, current: (h, w) uint8 grey frames on the same grid.
        flow: (fh, fw, 2) float32 from ``current`` to ``previous`` on the flow's own grid, which
            may be finer: it is sampled at the cells' centres (a whole multiple of the frames'
            grid) or resized, its displacements scaled to the frames' cells.
    """
    h, w = current.shape
    fh, fw = flow.shape[:2]
    if fh % h == 0 and fw % w == 0:  # a sample per cell (DIS flow is smooth)
        sy, sx = fh // h, fw // w
        flow = flow[sy // 2 :: sy, sx // 2 :: sx]
    else:
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    xs, ys = _grid(h, w)
    warped = cv2.remap(
        previous,
        xs + flow[..., 0] * np.float32(w / fw),
        ys + flow[..., 1] * np.float32(h / fh),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return float((cv2.absdiff(warped, current) > MISMATCH_GREY).mean())


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's (x, y) of an (h, w) grid as float32 maps (cached: read-only)."""
    if (h, w) not in _GRIDS:
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        xs.flags.writeable = ys.flags.writeable = False
        _GRIDS[(h, w)] = (xs, ys)
    return _GRIDS[(h, w)]


class DisFlowProvider:
    """The engine's ``dis_flow`` aux input: flow of each frame against the stream's previous one.

    Stateful per stream: ``reset()`` on a new stream/cut (the next flow is zeros, as on the
    first frame). Output (1, 2, h, w) float32 for shape ``(2, h, w)``.

    After each call, ``mismatch`` is the share of the frame that the previous one, warped by the
    flow, fails to explain (:func:`warp_mismatch` on a grid ``MISMATCH_SCALE`` times coarser
    than the flow's), or None on a first frame: the evidence ``engine.refresh`` judges a stale
    memory by.
    """

    replaces_frame = False  # the graph reads the frame too

    def __init__(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or shape[0] != 2:
            raise ValueError(f"dis_flow shape must be (2, h, w), got {shape}")
        self.size = (shape[1], shape[2])
        self._check = tuple(max(1, v // MISMATCH_SCALE) for v in self.size)
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESET)
        self._previous: np.ndarray | None = None
        self._previous_small: np.ndarray | None = None
        self.mismatch: float | None = None

    def reset(self) -> None:
        self._previous = self._previous_small = self.mismatch = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame``: (H, W, 3) uint8 RGB at the model input size."""
        g = grey(frame, self.size)
        h, w = self._check
        small = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
        if self._previous is None:
            flow = np.zeros((2, *self.size), np.float32)
            self.mismatch = None
        else:
            calc = self._dis.calc(g, self._previous, None)
            self.mismatch = warp_mismatch(self._previous_small, small, calc)
            flow = calc.transpose(2, 0, 1)
        self._previous, self._previous_small = g, small
        return np.ascontiguousarray(flow, dtype=np.float32)[None]
