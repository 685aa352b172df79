"""Tile memory: a per-frame network's high-resolution tiles, one per frame, kept in a memory of
class probabilities that DIS flow carries from frame to frame.

A per-frame model sees small objects better at a larger input (benchmarks/research/NOTES.md,
"What the input size is worth"), but a larger input costs its pixels. A tile-memory model keeps
the network's cost and spends its memory on resolution instead: the frame comes in at ``scale``
x the network's input size and is cut into R x C overlapping tiles of exactly that input size.
Each frame runs the network once, on one view that the engine cuts from the frame
(``engine.aux_inputs``: the ``tile_view`` input, the view itself; ``tile_cycle``, which view it is):

* a **key view**, the whole frame downscaled to the network's input, after every reset: it fills
  the whole memory (the per-frame model as it is, so a reset every frame is its per-frame twin);
* otherwise the next **tile**, in a fixed order, round and round.

The memory is the class probabilities at the network's output stride on the large frame's grid.
Each frame it is warped onto the new frame with the engine's DIS flow
(``engine.aux_inputs.dis_flow``; computed at ``flow_factor`` x the memory's resolution, by default
the input's, and averaged down: moving cars keep their place only with a fine flow), then the
view's probabilities are blended in: ``memory = w * view + (1 - w) * warped``, with ``w`` =
``blend`` inside a tile, ramping to 0 over ``ramp`` cells at the tile's inner edges (1 everywhere
for a key view). The graph outputs the log of the memory as its logits, so its labels, confidence
and crisp upsampling are those of any bundle.

Family ``recurrent``: the memory is the one state tensor (``memory_in``/``memory_out``), the flow,
the tile choice and the view are aux inputs; the graph has no frame input (the engine resizes
the frame to the large size, computes the flow on it and cuts the view, so the graph never
normalises or resizes the whole frame: 1.8 ms less per step at 448x640 on two cores). Nothing
is trained: ``vidseg-export CHECKPOINT --tiles RxC`` wraps a trained per-frame checkpoint
(``TileMemory``), and parity checks the wrapper like any model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidseg.engine.aux_inputs import DIS_FLOW, TILE_CYCLE, TILE_VIEW
from vidseg.engine.bundle import AuxSpec
from vidseg.engine.errors import VidsegError
from vidseg.models.layers import channel_softmax, normalize
from vidseg.models.losses import CROSS_ENTROPY, SegLoss
from vidseg.models.netwarp import gather_warp
from vidseg.models.protocol import GraphSpec, TemporalModule
from vidseg.models.registry import ModelCfg, StateCfg

FLOW, TILE, VIEW = "flow", "tile", "view"  # the step graph's aux input names
MEMORY = "memory"  # the state's name
PROB_FLOOR = 1e-6  # log(memory) never sees 0


def tile_offsets(size: int, tile: int, count: int, cell: int) -> list[int]:
    """``count`` tile starts (multiples of ``cell``) spreading tiles of ``tile`` over ``size``,
    the first at 0 and the last at ``size - tile``."""
    if count == 1:
        return [0]
    return [round(i * (size - tile) / (count - 1) / cell) * cell for i in range(count)]


def feather(shape: tuple[int, int], box: tuple[int, int, int, int], ramp: int) -> np.ndarray:
    """(h, w) float32 weights of a tile at ``box`` = (y, x, th, tw) cells on a grid of ``shape``:
    1 inside, rising linearly over ``ramp`` cells from edges that are not the grid's edges."""
    h, w = shape
    y, x, th, tw = box
    out = np.zeros(shape, np.float32)
    rise = np.linspace(0, 1, ramp + 2, dtype=np.float32)[1:-1]
    wy, wx = np.ones(th, np.float32), np.ones(tw, np.float32)
    if ramp:
        if y > 0:
            wy[:ramp] = np.minimum(wy[:ramp], rise)
        if y + th < h:
            wy[-ramp:] = np.minimum(wy[-ramp:], rise[::-1])
        if x > 0:
            wx[:ramp] = np.minimum(wx[:ramp], rise)
        if x + tw < w:
            wx[-ramp:] = np.minimum(wx[-ramp:], rise[::-1])
    out[y : y + th, x : x + tw] = wy[:, None] * wx[None]
    return out


class TileMemory(TemporalModule):
    """A per-frame ``inner`` model run on one view per frame (module docstring).

    Args:
        inner: a per-frame model (no state); its input size is each view's.
        grid: (rows, columns) of tiles; together they must cover the large frame.
        scale: the large frame's size over ``inner``'s input size (each side rounded to
            multiples of its stride).
        blend: weight of a tile's probabilities against the warped memory, in (0, 1].
        ramp: cells over which a tile's weight rises from its inner edges.
        flow_factor: the flow's resolution over the memory's (4: the network's output stride
            of 4, so the input's own).

    Raises:
        VidsegError: ``inner`` carries state, or the grid does not cover the frame.
    """

    clip_state = False

    def __init__(
        self,
        inner: TemporalModule,
        grid: tuple[int, int] = (2, 2),
        scale: float = 1.4,
        blend: float = 0.5,
        ramp: int = 4,
        flow_factor: int = 4,
    ) -> None:
        super().__init__()
        if inner.cfg.temporal:
            raise VidsegError(f"--tiles wraps a per-frame model; {inner.cfg.name} carries state")
        if not 0 < blend <= 1:
            raise VidsegError(f"--tile-blend {blend}: must be in (0, 1]")
        self.inner = inner
        h, w = inner.cfg.input_size
        stride = inner.cfg.stride
        big = tuple(max(v, round(v * scale / stride) * stride) for v in (h, w))
        rows, cols = grid
        if rows < 1 or cols < 1 or rows * cols < 2:
            raise VidsegError(f"--tiles {rows}x{cols}: at least two tiles")
        if rows * h < big[0] or cols * w < big[1]:
            raise VidsegError(
                f"--tiles {rows}x{cols} of {h}x{w} do not cover the frame at "
                f"--tile-scale {scale:g} ({big[0]}x{big[1]}): more tiles or a "
                "smaller scale"
            )
        with torch.no_grad():
            out = inner.eval()(torch.zeros(1, 3, h, w))[0]
        cell = h // out.shape[-2]  # the network's output stride: one memory cell
        self.view = (h, w)
        self.cell = cell
        self.memory_size = (big[0] // cell, big[1] // cell)
        ys, xs = tile_offsets(big[0], h, rows, cell), tile_offsets(big[1], w, cols, cell)
        if len(set(ys)) < rows or len(set(xs)) < cols:
            raise VidsegError(
                f"--tiles {rows}x{cols} at --tile-scale {scale:g}: the frame is "
                f"{big[0]}x{big[1]} for tiles of {h}x{w}, so tiles would repeat "
                "(fewer tiles or a larger scale)"
            )
        # snake order: consecutive tiles are neighbours
        self.offsets = [(y, x) for r, y in enumerate(ys) for x in (xs if r % 2 == 0 else xs[::-1])]
        weights = [
            blend * feather(self.memory_size, (y // cell, x // cell, h // cell, w // cell), ramp)
            for y, x in self.offsets
        ]
        weights.append(np.ones(self.memory_size, np.float32))  # the key view fills it all
        self.register_buffer("weights", torch.from_numpy(np.stack(weights)[:, None]))
        self.tiles = (rows, cols)
        self.scale, self.blend, self.ramp, self.flow_factor = scale, blend, ramp, flow_factor
        k = inner.cfg.num_classes
        self.cfg = ModelCfg(
            name="recurrent-tiles-" + inner.cfg.name.removeprefix("perframe-"),
            family="recurrent",
            input_size=big,  # type: ignore[arg-type]
            stride=stride,
            num_classes=k,
            state=(StateCfg(MEMORY, k, cell),),
            pretrained=inner.cfg.pretrained,
        )

    @property
    def aux_specs(self) -> tuple[AuxSpec, AuxSpec, AuxSpec]:
        """The flow (2, f h, f w) at ``flow_factor`` x the memory's (h, w), the tile choice
        (tiles + 1,) and the view (h', w', 3) that the engine cuts from the frame."""
        mh, mw = self.memory_size
        f = self.flow_factor
        return (
            AuxSpec(FLOW, DIS_FLOW, (2, f * mh, f * mw)),
            AuxSpec(TILE, TILE_CYCLE, (len(self.offsets) + 1,)),
            AuxSpec(
                VIEW,
                TILE_VIEW,
                (*self.view, 3),
                "uint8",
                {"offsets": [list(o) for o in self.offsets]},
            ),
        )

    def describe(self) -> dict:
        """The manifest's ``train.tiles`` entry (the tiles' offsets are the ``tile_view``
        provider's args, :attr:`aux_specs`)."""
        return {
            "grid": list(self.tiles),
            "scale": self.scale,
            "blend": self.blend,
            "ramp_cells": self.ramp,
            "flow_factor": self.flow_factor,
            "view": list(self.view),
        }

    def forward(
        self, flow: torch.Tensor, tile: torch.Tensor, view: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """flow (N, 2, f h, f w), tile (N, n + 1) one-hot, view (N, h', w', 3) uint8 (the
        engine's ``tile_view``: the tile, or the whole frame resized), memory (N, K, h, w) ->
        (log memory, memory), both (N, K, h, w)."""
        n = view.shape[0]
        pick = [tile[:, j].view(n, 1, 1, 1) for j in range(tile.shape[1])]
        probs = channel_softmax(self.inner(normalize(view))[0])
        mh, mw = self.memory_size
        placed = pick[-1] * F.interpolate(
            probs, size=(mh, mw), mode="bilinear", align_corners=False
        )
        ph, pw = probs.shape[-2:]
        for p, (y, x0) in zip(pick, self.offsets):
            top, left = y // self.cell, x0 // self.cell
            placed = placed + p * F.pad(probs, (left, mw - left - pw, top, mh - top - ph))
        weight = (tile.view(n, -1, 1, 1, 1) * self.weights).sum(1)
        f = self.flow_factor
        warped = gather_warp(memory, F.avg_pool2d(flow, f) / f if f > 1 else flow)
        memory = weight * placed + (1 - weight) * warped
        return torch.log(memory.clamp_min(PROB_FLOOR)), memory

    def export_graphs(self) -> dict[str, GraphSpec]:
        state = self.cfg.state
        return {"step": GraphSpec(self, state, state, aux=self.aux_specs, reads_frame=False)}

    def training_loss(
        self, frames: torch.Tensor, labels: torch.Tensor, criterion: SegLoss = CROSS_ENTROPY
    ) -> torch.Tensor:
        raise VidsegError(
            f"{self.cfg.name} is not trained: train its per-frame model and add "
            "the tiles at export (vidseg-export CHECKPOINT --tiles RxC)"
        )


def wrap_tiles(inner: nn.Module, grid: tuple[int, int], scale: float, blend: float) -> TileMemory:
    """``vidseg-export --tiles``: ``inner`` (a per-frame checkpoint's model) in a tile memory."""
    return TileMemory(inner, grid, scale, blend).eval()  # type: ignore[arg-type]
