"""``python benchmarks/research/output_filter.py --model BUNDLE --data CAMVID``: what a memory at
the output is worth, with no training.

Each frame's class probabilities (the bundle's logits at its label stride, softmaxed) are
blended with the previous frame's filtered probabilities, warped onto it with DIS flow::

    P~_t = (1 - a) P_t + a warp(P~_(t-1))

The flow is the engine's DIS (``engine.aux_inputs.dis_flow.dis_flow``) computed at twice the
logits' size and average-pooled to it. The filtered probabilities are upsampled crisply to the
label size (``engine.upsample``) and scored as ``vidseg-eval`` scores (mIoU, trimap IoU, flicker,
excess flicker) on the labelled frames in order, the filter and the bundle's own state reset where
the drive changes. ``a = 0`` is the bundle as it ships, so its row equals ``vidseg-eval``'s.

The numbers in benchmarks/research/NOTES.md were made with::

    python benchmarks/research/output_filter.py --model runs/twinA.vidseg \\
        --data CAMVID --alpha 0 0.3 0.5
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from vidseg.benchmarks.accuracy import (
    EDGE_PX,
    FrameScorer,
    boundary_band,
    score_table,
    sequence_of,
    truth_ids,
)
from vidseg.engine.aux_inputs.dis_flow import dis_flow
from vidseg.engine.errors import VidsegError, run_for_cli
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.models.data import load_split


def softmax(logits: np.ndarray) -> np.ndarray:
    """(K, h, w) logits -> probabilities over K."""
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


def pooled_flow(previous: np.ndarray, current: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """DIS flow from ``current`` to ``previous`` at twice ``size``, averaged down to ``size``
    = (h, w): (2, h, w) in pixels of that grid."""
    h, w = size
    fine = dis_flow(previous, current, (2 * h, 2 * w))
    return fine.reshape(2, h, 2, w, 2).mean(axis=(2, 4)) / 2


def sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x + dx, y + dy) of every pixel of (2, h, w) ``flow`` (``engine.aux_inputs.dis_flow``'s
    convention): where :func:`warp` samples the previous frame."""
    _, h, w = flow.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return gx + flow[0], gy + flow[1]


def warp(x: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Backward warp of (K, h, w) ``x``: the result at (x, y) is ``x`` sampled bilinearly at
    ``maps`` (:func:`sample_maps`), edges replicated."""
    mx, my = maps
    return np.stack(
        [cv2.remap(c, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for c in x]
    )


def filter_scores(
    segmenter: Segmenter, data_root: str, alphas: list[float], split: str = "val"
) -> list[dict[str, float]]:
    """One row per ``a`` in ``alphas``: miou, trimap_iou, flicker, excess_flicker (percent).

    Raises:
        VidsegError: the bundle has no logits output, or an ``a`` is outside [0, 1).
    """
    if segmenter.model.logits_name is None:
        raise VidsegError("the bundle has no logits output (vidseg-export BUNDLE --add-logits)")
    if not all(0 <= a < 1 for a in alphas):
        raise VidsegError(f"--alpha {alphas}: every value must be in [0, 1)")
    data = load_split(data_root, split)
    k = len(segmenter.manifest.classes)
    ignore = segmenter.manifest.ignore_index
    scorers = [FrameScorer(k) for _ in alphas]
    filtered: list[np.ndarray | None] = [None] * len(alphas)
    previous, sequence = None, None
    for name, image, label in zip(data.names, data.images, data.labels):
        if sequence_of(name) != sequence or previous is None:
            sequence, previous = sequence_of(name), None
            segmenter.reset()
            filtered = [None] * len(alphas)
            for scorer in scorers:
                scorer.cut()
        outputs = segmenter.step(image).outputs
        logits = outputs.logits.astype(np.float32)
        probs = softmax(logits)
        maps = (
            None if previous is None else sample_maps(pooled_flow(previous, image, probs.shape[1:]))
        )
        previous = image
        truth = truth_ids(label, ignore, k)
        band, edges = boundary_band(truth, k), boundary_band(truth, k, EDGE_PX)  # one truth
        for i, a in enumerate(alphas):
            last = filtered[i]
            p = probs if last is None or maps is None else (1 - a) * probs + a * warp(last, maps)
            filtered[i] = p
            scores = logits if p is probs else np.log(p + 1e-6)  # as shipped where unfiltered
            out = GraphOutputs(p.argmax(0).astype(np.uint8), None, scores)
            pred, _ = upsample(out, *label.shape)
            scorers[i].add(pred, truth, band, edges)
    return [{"alpha": a, **scorer.scores()} for a, scorer in zip(alphas, scorers)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="output_filter.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="bundle with a logits output (default: the bundled one)")
    p.add_argument("--data", required=True, help="CamVid root with val/ and valannot/")
    p.add_argument(
        "--alpha",
        type=float,
        nargs="+",
        default=[0.0, 0.3, 0.5],
        help="weights a of the warped past, in [0, 1)",
    )
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)

    def run() -> None:
        rows = filter_scores(Segmenter(args.model, threads=args.threads), args.data, args.alpha)
        print(score_table("a", [(f"{r['alpha']:g}", r) for r in rows]))

    code, _ = run_for_cli("output_filter", run, debug=args.debug)
    return code


if __name__ == "__main__":
    sys.exit(main())
