"""A per-frame teacher for distillation: ``python -m vidseg.models.teacher --checkpoint CKPT
--data CAMVID --out teacher.npz``.

The teacher is a trained per-frame checkpoint run on several views of each training frame: its
input size times each of ``--scales`` (rounded to multiples of the stride), each also mirrored
with ``--flip``. The views' class probabilities, upsampled bilinearly to the frame's size, are
averaged. A larger input resolves small objects the student's input size misses
(docs/accuracy.md, "What the input size is worth"), so the mean of views scores well above the
checkpoint at its own size; ``vidseg-train --teacher FILE`` then trains a student at its own
size towards those probabilities (``docs/training.md``).

``FILE`` (``.npz``) holds ``probs`` (N, H, W, K) uint8 (probability x 255, rounded) and
``names``, the frame stems in the split's order; ``scales`` and ``flip`` record the views.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vidseg.engine.errors import VidsegError, run_for_cli

View = tuple[float, bool]  # (scale, mirrored)


def view_size(size: tuple[int, int], scale: float, stride: int) -> tuple[int, int]:
    """``size`` (height, width) times ``scale``, rounded to multiples of ``stride``."""
    return tuple(max(stride, round(v * scale / stride) * stride) for v in size)  # type: ignore[return-value]


@torch.no_grad()
def view_probs(model: Any, image: np.ndarray, views: list[View],
               out_size: tuple[int, int]) -> dict[View, torch.Tensor]:  # fmt: skip
    """Class probabilities (1, K, *out_size) of a per-frame ``model`` on ``image`` (H, W, 3)
    uint8 for each view, mirrored views mirrored back."""
    import cv2

    probs = {}
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
        raise VidsegError(f"{model.cfg.name} carries state: a teacher and its views are "
                          f"per-frame models")  # fmt: skip
    return model


def teacher_probs(model: Any, images: np.ndarray, scales: list[float],
                  flip: bool) -> np.ndarray:  # fmt: skip
    """(N, H, W, K) uint8: the mean of the views' probabilities x 255 for each image."""
    views = [(s, m) for s in scales for m in ((False, True) if flip else (False,))]
    out = np.empty((*images.shape[:3], model.cfg.num_classes), np.uint8)
    for i, image in enumerate(tqdm(images, desc="teacher", unit="frame", file=sys.stderr)):
        mean = sum(view_probs(model, image, views, image.shape[:2]).values()) / len(views)
        out[i] = (mean[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return out


def load_teacher(path: str | Path, names: tuple[str, ...], size: tuple[int, int],
                 num_classes: int) -> np.ndarray:  # fmt: skip
    """The (N, H, W, K) uint8 probabilities a teacher file holds for the frames ``names`` (file
    names; matched by stem, in their order), checked for size and number of classes.

    Raises:
        VidsegError: the file is missing, unreadable, lacks one of the frames or was made for
            another size or number of classes.
    """
    path = Path(path)
    if not path.is_file():
        raise VidsegError(f"teacher file not found: {path}")
    try:
        with np.load(path) as f:
            probs, stems = f["probs"], [str(s) for s in f["names"]]
    except (OSError, ValueError, KeyError) as exc:
        raise VidsegError(f"{path} is not a teacher file (python -m vidseg.models.teacher): "
                          f"{exc}") from None  # fmt: skip
    if probs.dtype != np.uint8 or probs.shape[1:] != (*size, num_classes):
        raise VidsegError(f"{path}: probabilities {probs.dtype} {probs.shape[1:]} per frame, "
                          f"these frames need uint8 {(*size, num_classes)}")  # fmt: skip
    index = {stem: i for i, stem in enumerate(stems)}
    missing = [n for n in names if Path(n).stem not in index]
    if missing:
        raise VidsegError(f"{path} has no probabilities for {len(missing)} of the "
                          f"{len(names)} training frames (e.g. {missing[0]})")  # fmt: skip
    return probs[[index[Path(n).stem] for n in names]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidseg.models.teacher", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a per-frame vidseg-train checkpoint")
    p.add_argument("--data", required=True, help="CamVid root (train/ and trainannot/)")
    p.add_argument("--out", required=True, help="the teacher file to write (.npz)")
    p.add_argument("--split", default="train", help="the split whose frames are taught")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.25, 1.5, 1.75],
                   help="input sizes, as multiples of the checkpoint's")  # fmt: skip
    p.add_argument("--flip", action="store_true", help="also run each scale mirrored")
    p.add_argument("--limit", type=int, help="only the first N frames (tests)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if any(s <= 0 for s in args.scales):
        p.error(f"--scales must be positive, got {args.scales}")
    if not args.out.endswith(".npz"):
        p.error(f"--out must end in .npz, got {args.out}")

    def run() -> str:
        from vidseg.models.data import load_split

        if args.threads:
            torch.set_num_threads(args.threads)
        model = per_frame_model(Path(args.checkpoint))
        data = load_split(args.data, args.split, args.limit)
        probs = teacher_probs(model, data.images, args.scales, args.flip)
        out = Path(args.out)
        tmp = out.with_name(out.stem + ".partial.npz")
        np.savez(tmp, probs=probs, names=np.array([Path(n).stem for n in data.names]),
                 scales=np.array(args.scales), flip=np.array(args.flip))  # fmt: skip
        tmp.replace(out)
        return f"wrote {out}: {len(probs)} frames x {probs.shape[3]} classes"

    code, summary = run_for_cli("vidseg.models.teacher", run, debug=args.debug)
    if summary:
        print(summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
