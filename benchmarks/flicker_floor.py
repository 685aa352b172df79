"""``python -m vidseg.benchmarks.flicker_floor --data CAMVID``: what ``vidseg-eval``'s scores give
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

Each row is scored as ``vidseg-eval`` scores a bundle (mIoU, trimap IoU, flicker, excess
flicker) over the val drive; the truth itself scores 100 and no excess. Where a shifted or held
label is void, the frame's own truth stands in (a prediction never says void).

The numbers in docs/accuracy.md were made with::

    python -m vidseg.benchmarks.flicker_floor --data ../shared/data/camvid --grid 80x112 112x160 180x240
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from vidseg.benchmarks.accuracy import FrameScorer, score_table
from vidseg.engine.errors import VidsegError, run_for_cli
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.models.data import load_split

NUM_CLASSES = 11  # CamVid's classes; void (11) and above are never scored


def through_grid(truth: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) truth -> the labels of a perfect model at ``grid`` = (h, w), upsampled crisply."""
    height, width = truth.shape
    h, w = grid
    onehot = (truth[None] == np.arange(NUM_CLASSES)[:, None, None]).astype(np.float32)
    shares = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA) for c in onehot])
    logits = np.log(np.maximum(shares, 1e-4))
    labels, _ = upsample(GraphOutputs(logits.argmax(0).astype(np.uint8), None, logits),
                         height, width)  # fmt: skip
    return labels


def shifted(truth: np.ndarray, rng: np.random.Generator, radius: int) -> np.ndarray:
    """``truth`` rolled by a random offset in [-radius, radius] on each axis."""
    dy, dx = rng.integers(-radius, radius + 1, size=2)
    return np.roll(truth, (int(dy), int(dx)), axis=(0, 1))


def score(labels: list[np.ndarray],
          predict: Callable[[int], np.ndarray]) -> dict[str, float]:  # fmt: skip
    """``predict(i)`` for every frame i, scored against ``labels`` (one drive, in order)."""
    scorer = FrameScorer(NUM_CLASSES)
    for i, truth in enumerate(labels):
        pred = predict(i)
        pred = np.where(pred < NUM_CLASSES, pred, np.where(truth < NUM_CLASSES, truth, 0))
        scorer.add(pred.astype(np.uint8), truth)
    return scorer.scores()


def floor_rows(labels: list[np.ndarray], grids: list[tuple[int, int]], shifts: list[int],
               seed: int = 0) -> Iterator[tuple[str, dict[str, float]]]:  # fmt: skip
    """(row name, scores) for the truth, each grid, each shift and the held truth."""
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


def _grid(text: str) -> tuple[int, int]:
    h, sep, w = text.partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or not int(h) or not int(w):
        raise argparse.ArgumentTypeError(f"grid {text!r}: expected HxW, e.g. 80x112")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="flicker_floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="CamVid root with val/ and valannot/")
    p.add_argument("--grid", type=_grid, nargs="*", default=[(80, 112), (112, 160)],
                   help="label grids HxW of a perfect model")  # fmt: skip
    p.add_argument("--shift", type=int, nargs="*", default=[1, 2],
                   help="random offsets in pixels")  # fmt: skip
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)

    def run() -> None:
        labels = [lb for lb in load_split(args.data, "val").labels]
        if not labels:
            raise VidsegError(f"{args.data}: no val labels")
        print(score_table("truth as", floor_rows(labels, args.grid, args.shift)))

    code, _ = run_for_cli("flicker_floor", run, debug=args.debug)
    return code


if __name__ == "__main__":
    sys.exit(main())
