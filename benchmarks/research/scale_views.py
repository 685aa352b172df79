"""``python benchmarks/research/scale_views.py --checkpoint CKPT --data CAMVID``: what a larger
input and test-time views would be worth to a per-frame checkpoint, before paying for them.

Every CamVid val frame is run at each scale s of ``--scales``: the checkpoint's input size times
s, rounded to multiples of the model's stride, the size ``vidseg-export --input-size`` would
give. With ``--flip`` each scale is also run on the mirrored frame (its logits mirrored back).
Each view's class probabilities are upsampled bilinearly to the label size; every single view
and the mean of several views (each scale with its mirror; all views; all views at s >= 1) are
scored in torch on the CPU as ``vidseg-eval`` scores a bundle: mIoU, per-class and trimap IoU,
and the flicker of a per-frame model that runs those views on every frame of the drive.

A single view is one exported bundle's work: its score agrees with ``vidseg-eval`` on that
bundle within a few hundredths. A mean of views is an upper bound that costs the sum of its
views -- a teacher, or a measure of what the model misses at its own input size. The numbers in
benchmarks/research/NOTES.md ("What the input size is worth") came from::

    python benchmarks/research/scale_views.py --checkpoint runs/sepH/last.pt \\
        --data CAMVID --scales 0.75 1 1.25 1.5 1.75 --flip

Needs torch (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vidseg.engine.errors import VidsegError, run_for_cli

View = tuple[float, bool]  # (scale, mirrored)


def view_size(size: tuple[int, int], scale: float, stride: int) -> tuple[int, int]:
    """``size`` (height, width) times ``scale``, rounded to multiples of ``stride``."""
    h, w = (max(stride, round(v * scale / stride) * stride) for v in size)
    return h, w


def view_probs(
    model: Any, image: np.ndarray, views: list[View], out_size: tuple[int, int]
) -> dict[View, Any]:
    """Class probabilities (1, K, *out_size) torch tensors of a per-frame ``model`` on ``image``
    (H, W, 3) uint8 for each view, mirrored views mirrored back."""
    import cv2
    import torch
    import torch.nn.functional as F

    probs = {}
    with torch.no_grad():
        for scale, mirrored in views:
            h, w = view_size(model.cfg.input_size, scale, model.cfg.stride)
            x = torch.from_numpy(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))[None]
            logits, _ = model.stream_logits(x.flip(2) if mirrored else x, None)
            if mirrored:
                logits = logits.flip(3)
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            probs[(scale, mirrored)] = logits.softmax(1)
    return probs


def per_frame_model(path: Path) -> Any:
    """The model of a per-frame ``vidseg-train`` checkpoint, in eval mode.

    Raises:
        VidsegError: the checkpoint's model carries state (a view would need its own stream).
    """
    from vidseg.models.train import model_from_checkpoint

    model, _ = model_from_checkpoint(path)
    if model.cfg.temporal:
        raise VidsegError(f"{model.cfg.name} carries state: views are per-frame models")
    return model


def combinations(scales: list[float], flip: bool) -> dict[str, list[tuple[float, bool]]]:
    """The rows scored: each view alone, each scale with its mirror, all, all at s >= 1."""
    mirrors = (False, True) if flip else (False,)
    views = [(s, m) for s in scales for m in mirrors]
    rows = {f"{s:g}{' mirrored' if m else ''}": [(s, m)] for s, m in views}
    if flip:
        rows.update({f"{s:g} + mirror": [(s, False), (s, True)] for s in scales})
    if len(views) > 2:
        rows["all views"] = views
        large = [v for v in views if v[0] >= 1]
        if 1 < len(large) < len(views):
            rows["all views at s >= 1"] = large
    return rows


def score_views(model: Any, data: Any, scales: list[float], flip: bool) -> dict[str, Any]:
    """``{row: {"views", "iou", and the numbers of FrameScorer.scores}}`` over ``data``
    (``LabelledFrames``, one drive in order: the flicker columns are those of a per-frame model
    that runs the row's views on every frame)."""
    from vidseg.benchmarks.accuracy import EDGE_PX, FrameScorer, boundary_band

    rows = combinations(scales, flip)
    views = list(dict.fromkeys(v for vs in rows.values() for v in vs))
    k = model.cfg.num_classes
    scorers = {name: FrameScorer(k) for name in rows}
    for image, label in zip(data.images, data.labels):
        probs = view_probs(model, image, views, label.shape)
        band, edges = boundary_band(label, k), boundary_band(label, k, EDGE_PX)
        for name, vs in rows.items():
            pred = sum(probs[v] for v in vs).argmax(1)[0].numpy().astype(np.uint8)
            scorers[name].add(pred, label, band, edges)
    return {
        name: {"views": len(rows[name]), **scorer.scores(), "iou": list(scorer.result()[0].iou)}
        for name, scorer in scorers.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scale_views.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a per-frame vidseg-train checkpoint")
    p.add_argument("--data", required=True, help="CamVid root with val/ and valannot/")
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[1.0, 1.25, 1.5],
        help="input sizes, as multiples of the checkpoint's",
    )
    p.add_argument("--flip", action="store_true", help="also run each scale mirrored")
    p.add_argument("--limit", type=int, help="only the first N val frames (tests)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", metavar="OUT", help="write the rows as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if any(s <= 0 for s in args.scales):
        p.error(f"--scales must be positive, got {args.scales}")

    def run() -> None:
        import torch

        from vidseg.benchmarks.accuracy import score_table
        from vidseg.models.data import load_split

        torch.set_num_threads(args.threads)
        model = per_frame_model(Path(args.checkpoint))
        rows = score_views(model, load_split(args.data, "val", args.limit), args.scales, args.flip)
        height, width = model.cfg.input_size
        print(f"{model.cfg.name} at {height}x{width} x s:")
        print(
            score_table(
                "views (count)", ((f"{name} ({row['views']})", row) for name, row in rows.items())
            )
        )
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))

    code, _ = run_for_cli("scale_views", run, debug=args.debug)
    return code


if __name__ == "__main__":
    sys.exit(main())
