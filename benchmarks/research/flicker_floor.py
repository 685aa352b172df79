"""``python benchmarks/research/flicker_floor.py --data CAMVID``: what ``vidseg-eval``'s scores give
the true labels themselves, degraded the ways a prediction is.

A bundle's excess flicker (pixels whose prediction changes while their truth does not) mixes
two things: labels that flip from frame to frame, which a memory can hold still, and predicted
edges that sit off the true ones, which move as the camera moves whatever the memory does. This
measures the second kind on the truth alone, so a bundle's numbers can be read against it:

* ``grid HxW``: the truth as a perfect model at that label grid would give it: each class's
  share of every cell (area-averaged one-hot labels), upsampled crisply to the frame as the
  engine upsamples logits (``engine.upsample``). The grid of a 320x448 input at stride 4 is
  80x112; a tile memory at 1.4x keeps 112x160.
* ``shift S``: each frame's truth moved by a random whole-pixel offset in [-S, S] on each axis.
* ``held``: every other frame shows the frame before it (a prediction one frame late).

With the frames (unless ``--no-flow``), rows about a memory, on the engine's DIS flow:

* ``carried``: each frame shows the truth of the frame before, moved onto it by the flow (what
  a memory that only carries what it saw would show);
* ``steadied``: the truth, relabelled where both neighbours, carried onto the frame, agree on
  another label: what the annotation's own frame-to-frame jitter is worth;
* ``perfect`` / ``shift 1``, ``per frame`` and ``tile memory``: a network that answers with the
  truth (or the truth a random pixel off, the same draw for both), per frame on the label grid
  of a 320x448 input at stride 4, and through the tile memory (``models.tiles.TileMemory``,
  2x2 tiles at 1.4x, the engine's providers cutting its views): what the memory itself does
  to a network's edges, whatever the network.

With ``--bundle B``, rows about a real network: ``B``'s labels through the engine (state carried,
as ``vidseg-eval`` gives them), then the same labels put to a vote over a window of frames, the
neighbours' labels carried onto each frame by chained DIS flow (``vote of N``: each neighbour
has a vote, the frame's own label 1.5, so a lone neighbour never overrules it). With frames before
only, it is a memory that votes over what it has seen; with frames after too, a filter no
streaming engine can run (it waits for the future): how far carrying labels with this flow can
calm this bundle at all.

Each row is scored as ``vidseg-eval`` scores a bundle (mIoU, trimap IoU, flicker, excess
flicker, the share of it undone a frame later, errors persisting) over the val drive; the truth
itself scores 100 and no excess. Where a shifted or held
label is void, the frame's own truth stands in (a prediction never says void).

The numbers in benchmarks/research/NOTES.md were made with::

    python benchmarks/research/flicker_floor.py --data CAMVID --grid 80x112 112x160 180x240 \\
        --bundle runs/ftA_twin320.vidseg runs/ftA_tilesV.vidseg --threads 2
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from vidseg.benchmarks.accuracy import FrameScorer, score_table
from vidseg.engine.aux_inputs.dis_flow import dis_flow
from vidseg.engine.errors import VidsegError, run_for_cli
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.models.data import load_split

NUM_CLASSES = 11  # CamVid's classes; void (11) and above are never scored
TILE_INPUT = (320, 448)  # the network input of the tile memory measured (ftA_tilesV's)


def cell_shares(truth: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) truth -> (K, h, w) float32: each class's share of every cell of ``grid`` = (h, w)
    (area-averaged one-hot labels; void counts for no class)."""
    h, w = grid
    onehot = (truth[None] == np.arange(NUM_CLASSES)[:, None, None]).astype(np.float32)
    return np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA) for c in onehot])


def crisp(logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, h, w) logits -> (H, W) labels, upsampled as the engine upsamples a bundle's."""
    labels, _ = upsample(GraphOutputs(logits.argmax(0).astype(np.uint8), None, logits), *shape)
    return labels


def through_grid(truth: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) truth -> the labels of a perfect model at ``grid`` = (h, w), upsampled crisply."""
    return crisp(np.log(np.maximum(cell_shares(truth, grid), 1e-4)), truth.shape)


def shifted(truth: np.ndarray, rng: np.random.Generator, radius: int) -> np.ndarray:
    """``truth`` rolled by a random offset in [-radius, radius] on each axis."""
    dy, dx = rng.integers(-radius, radius + 1, size=2)
    return np.roll(truth, (int(dy), int(dx)), axis=(0, 1))


def carried(labels: list[np.ndarray], flows: list[np.ndarray]) -> list[np.ndarray]:
    """Each frame's truth as the frame before's, moved onto it by ``flows[i]`` (frame i to
    frame i - 1, :func:`frame_flows`), nearest label: a memory that only carries what it saw."""
    out = [labels[0]]
    for before, flow in zip(labels, flows[1:]):
        h, w = before.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        out.append(
            cv2.remap(
                before,
                xx + flow[0],
                yy + flow[1],
                cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_REPLICATE,
            )
        )
    return out


Flows = tuple[list[np.ndarray], list[np.ndarray]]  # both_flows: forward, then backward


def voted(labels: list[np.ndarray], flows: Flows, before: int, after: int) -> list[np.ndarray]:
    """Each frame's labels replaced by the majority of its own and of its ``before`` previous and
    ``after`` next frames' labels, each carried onto it by chained flow (:func:`carried`);
    ``flows``: :func:`both_flows` of the frames. Each neighbour has
    a vote and the frame's own label 1.5, so a lone neighbour never overrules it. With
    ``after`` = 0 it is causal: what a memory that votes over what it has seen could show."""
    forward, backward = flows
    views, chain = [], labels
    for _ in range(before):
        chain = carried(chain, forward)
        views.append(chain)
    chain = labels[::-1]
    for _ in range(after):
        chain = carried(chain, backward)
        views.append(chain[::-1])
    ids = np.arange(NUM_CLASSES + 1)[:, None, None]  # the classes and void
    out = []
    for i, own in enumerate(labels):
        votes = 1.5 * (own[None] == ids)
        for view in views:
            votes += view[i][None] == ids
        out.append(np.where(votes.max(0) > 1.5, votes.argmax(0), own).astype(np.uint8))
    return out


def steadied(labels: list[np.ndarray], flows: Flows) -> list[np.ndarray]:
    """Each frame's truth, but where both neighbours, carried onto it by the flow
    (:func:`both_flows`), agree on a label it lacks, that label: the annotation's own
    frame-to-frame jitter taken out."""
    return voted(labels, flows, 1, 1)


def both_flows(frames: list[np.ndarray]) -> Flows:
    """(:func:`frame_flows` of the frames, of the frames in reverse): each frame's flow to the
    frame before it, and (listed last frame first) to the frame after it."""
    return frame_flows(frames), frame_flows(frames[::-1])


def frame_flows(frames: list[np.ndarray]) -> list[np.ndarray]:
    """DIS flow (``engine.aux_inputs.dis_flow.dis_flow``, the engine's preset) of each frame to
    the one before, at the frames' own size; zeros for the first."""
    size = frames[0].shape[:2]
    return [np.zeros((2, *size), np.float32)] + [
        dis_flow(prev, cur, size) for prev, cur in zip(frames, frames[1:])
    ]


def through_tiles(
    frames: list[np.ndarray], truths: list[np.ndarray], input_size: tuple[int, int] = TILE_INPUT
) -> list[np.ndarray]:
    """The labels of a tile memory (``models.tiles.TileMemory`` with its defaults, 2x2 tiles at
    1.4x, as ``vidseg-export --tiles 2x2`` wraps a network of ``input_size``) around a network
    that answers every view with ``truths[i]``'s cell shares: what the memory alone does to a
    network's labels. The engine's providers cut the views and compute the flow on ``frames``."""
    import torch
    from torch import nn

    from vidseg.engine.aux_inputs import make_provider
    from vidseg.models.registry import ModelCfg
    from vidseg.models.tiles import TILE, TileMemory

    class Oracle(nn.Module):
        """A per-frame "network" that returns the logits it was handed."""

        def __init__(self) -> None:
            super().__init__()
            self.cfg = ModelCfg("perframe-oracle", "perframe", input_size, 32, NUM_CLASSES)
            self.answer: torch.Tensor | None = None

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            h, w = x.shape[-2] // 4, x.shape[-1] // 4
            return [torch.zeros(1, NUM_CLASSES, h, w) if self.answer is None else self.answer]

    oracle = Oracle()
    tiles = TileMemory(oracle)  # type: ignore[arg-type]
    providers = {spec.name: make_provider(spec) for spec in tiles.aux_specs}
    (height, width), cell, key = tiles.cfg.input_size, tiles.cell, len(tiles.offsets)
    th, tw = input_size
    state, out = None, []
    for frame, truth in zip(frames, truths):
        big = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        aux = {name: p(big) for name, p in providers.items()}
        view = int(aux[TILE][0].argmax())
        if view == key:  # the whole frame at the network's grid
            shares = cell_shares(truth, (th // cell, tw // cell))
        else:
            y, x = (v // cell for v in tiles.offsets[view])
            cells = cell_shares(truth, tiles.memory_size)
            shares = cells[:, y : y + th // cell, x : x + tw // cell]
        oracle.answer = torch.from_numpy(np.log(np.maximum(shares, 1e-4)))[None]
        with torch.no_grad():
            logits, state = tiles.stream_logits(
                torch.from_numpy(big)[None],
                state,
                {name: torch.from_numpy(v) for name, v in aux.items()},
            )
        out.append(crisp(logits[0].numpy(), truth.shape))
    return out


def score(labels: list[np.ndarray], predict: Callable[[int], np.ndarray]) -> dict[str, float]:
    """``predict(i)`` for every frame i, scored against ``labels`` (one drive, in order)."""
    scorer = FrameScorer(NUM_CLASSES)
    for i, truth in enumerate(labels):
        pred = predict(i)
        pred = np.where(pred < NUM_CLASSES, pred, np.where(truth < NUM_CLASSES, truth, 0))
        scorer.add(pred.astype(np.uint8), truth)
    return scorer.scores()


def floor_rows(
    labels: list[np.ndarray],
    grids: list[tuple[int, int]],
    shifts: list[int],
    seed: int = 0,
    frames: list[np.ndarray] | None = None,
    flows: Flows | None = None,
) -> Iterator[tuple[str, dict[str, float]]]:
    """(row name, scores) for the truth, each grid, each shift and the held truth; with the
    ``frames`` too, the truth carried by the flow and steadied by it (``flows``, the frames'
    :func:`both_flows`, computed here when not given), and a perfect network and one a pixel off
    at random, each per frame at the tile memory's network input and through the tile memory
    (:func:`through_tiles`)."""
    yield "truth", score(labels, lambda i: labels[i])
    for grid in grids:
        yield (
            f"grid {grid[0]}x{grid[1]}",
            score(labels, lambda i, g=grid: through_grid(labels[i], g)),
        )
    for radius in shifts:
        rng = np.random.default_rng(seed)
        yield f"shift {radius}", score(labels, lambda i, r=rng, s=radius: shifted(labels[i], r, s))
    yield "held", score(labels, lambda i: labels[i - i % 2])
    if frames is None:
        return
    flows = flows or both_flows(frames)
    moved = carried(labels, flows[0])
    yield "carried", score(labels, lambda i: moved[i])
    steady = steadied(labels, flows)
    yield "steadied", score(labels, lambda i: steady[i])
    rng = np.random.default_rng(seed)
    off = [shifted(truth, rng, 1) for truth in labels]
    grid = (TILE_INPUT[0] // 4, TILE_INPUT[1] // 4)
    for name, truths in (("perfect", labels), ("shift 1", off)):
        yield f"{name}, per frame", score(labels, lambda i, t=truths: through_grid(t[i], grid))
        tiled = through_tiles(frames, truths)
        yield f"{name}, tile memory", score(labels, lambda i, t=tiled: t[i])


VOTES = ((2, 0), (3, 0), (1, 1), (2, 2))  # (frames before, after) of --bundle's vote rows


def bundle_rows(
    bundle: str,
    labels: list[np.ndarray],
    frames: list[np.ndarray],
    flows: Flows,
    threads: int | None = None,
) -> Iterator[tuple[str, dict[str, float]]]:
    """(row name, scores) for ``bundle``'s labels through the engine (state carried, as
    ``vidseg-eval`` scores it), then for the same labels :func:`voted` over each window of
    :data:`VOTES` (``flows``: the frames' :func:`both_flows`): how much any filter that carries
    labels with the engine's flow could calm this bundle, with the frames before it and, not
    causal, the frames after."""
    from vidseg.engine.segmenter import Segmenter

    segmenter = Segmenter(bundle, threads=threads)
    preds = [segmenter.step(frame).labels for frame in frames]
    name = Path(bundle).name.removesuffix(".vidseg")
    yield name, score(labels, preds.__getitem__)
    for before, after in VOTES:
        out = voted(preds, flows, before, after)
        window = f"{before} before" + (f", {after} after" if after else "")
        yield f"{name}, vote of {before + after + 1} ({window})", score(labels, out.__getitem__)


def _grid(text: str) -> tuple[int, int]:
    h, sep, w = text.partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or not int(h) or not int(w):
        raise argparse.ArgumentTypeError(f"grid {text!r}: expected HxW, e.g. 80x112")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="flicker_floor.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="CamVid root with val/ and valannot/")
    p.add_argument(
        "--grid",
        type=_grid,
        nargs="*",
        default=[(80, 112), (112, 160)],
        help="label grids HxW of a perfect model",
    )
    p.add_argument("--shift", type=int, nargs="*", default=[1, 2], help="random offsets in pixels")
    p.add_argument(
        "--no-flow",
        action="store_true",
        help="leave out the truth's rows that need the frames' flow (and torch)",
    )
    p.add_argument(
        "--bundle",
        nargs="+",
        default=[],
        metavar="BUNDLE",
        help="also score these bundles' labels, and their labels voted over "
        "flow-carried neighbour frames",
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (--bundle)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)

    def run() -> None:
        split = load_split(args.data, "val")
        labels, frames = list(split.labels), list(split.images)
        if not labels:
            raise VidsegError(f"{args.data}: no val labels")
        flows = both_flows(frames) if args.bundle or not args.no_flow else None
        rows = floor_rows(
            labels, args.grid, args.shift, frames=None if args.no_flow else frames, flows=flows
        )
        for bundle in args.bundle:
            rows = itertools.chain(rows, bundle_rows(bundle, labels, frames, flows, args.threads))
        print(score_table("labels" if args.bundle else "truth as", rows))

    code, _ = run_for_cli("flicker_floor", run, debug=args.debug)
    return code


if __name__ == "__main__":
    sys.exit(main())
