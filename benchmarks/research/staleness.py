"""How many frames a memory takes to label something new: a cut, or an object that appears.

A memory carries the past; when the scene changes, its labels lag. This study feeds a bundle
clips of CamVid frames in order in which, at frame ``--before``, something new comes into view,
and counts the frames until the bundle's labels there agree on at least ``--agree`` % of the
pixels with

* its own per-frame path (the same bundle with its memory off: ``Segmenter(memory=False)``), and
* itself warm: the same bundle, memory carried, on the clip in which the new content was there
  from the first frame (a memory that sees more than its per-frame path, as a tile memory does,
  may never agree with the per-frame path; this is the lag alone).

1 means the first frame that shows it is labelled as the reference labels it.

Cases, each started at several places of the drive (``--starts``):

* ``cut``: frames ``a, a+1, ...`` then, from frame ``--before`` on, frames ``b, b+1, ...`` of the
  same drive ``--gap`` frames later; the region is the whole frame.
* ``box N`` (N = 0..3, the frame's quadrants in reading order): frames ``a, a+1, ...``, and from
  frame ``--before`` on a box of a quarter of the frame's width and height, centred in quadrant
  N, shows the same box of frames ``b, b+1, ...`` (something new that moves as the scene around
  it does not); the region is the box.

The per-frame path takes 1 frame by construction. Run on the labelled frames of a drive:

    python benchmarks/research/staleness.py --frames CAMVID/val --model BUNDLE [--no-refresh]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidseg.engine import Segmenter
from vidseg.engine.folder import open_image_folder
from vidseg.engine.refresh import Refresh

CASES = ("cut", "box 0", "box 1", "box 2", "box 3")


@dataclass(frozen=True)
class Clip:
    """A composed clip: its frames and the region (H, W) bool where the new content is."""

    frames: list[np.ndarray]
    region: np.ndarray


def box(shape: tuple[int, int], quadrant: int) -> tuple[slice, slice]:
    """The box of a quarter of the frame's height and width centred in ``quadrant`` (0: top
    left, 1: top right, 2: bottom left, 3: bottom right)."""
    h, w = shape
    bh, bw = h // 4, w // 4
    cy = h // 4 + (h // 2) * (quadrant // 2)
    cx = w // 4 + (w // 2) * (quadrant % 2)
    return slice(cy - bh // 2, cy - bh // 2 + bh), slice(cx - bw // 2, cx - bw // 2 + bw)


def compose(
    drive: list[np.ndarray], case: str, a: int, b: int, before: int, after: int, warm: bool = False
) -> Clip:
    """The clip of ``case`` (``CASES``): ``before`` frames from ``a``, then ``after`` frames in
    which frames from ``b`` on come into view (the whole frame, or one box). ``warm``: the new
    content there from the first frame (frames ``b - before`` on), the same from frame
    ``before`` on."""
    shape = drive[a].shape[:2]
    if warm:
        b -= before
        before, after = 0, before + after
    frames = [drive[a + i] for i in range(before)]
    if case == "cut":
        frames += [drive[b + i] for i in range(after)]
        return Clip(frames, np.ones(shape, bool))
    ys, xs = box(shape, int(case.split()[1]))
    region = np.zeros(shape, bool)
    region[ys, xs] = True
    for i in range(after):
        frame = drive[a + before + i].copy()
        frame[ys, xs] = drive[b + i][ys, xs]
        frames.append(frame)
    return Clip(frames, region)


def frames_to_agree(
    labels: list[np.ndarray],
    reference: list[np.ndarray],
    region: np.ndarray,
    start: int,
    agree: float,
) -> int | None:
    """From frame ``start`` on, the number of frames until ``labels`` agree with ``reference``
    on at least ``agree`` % of ``region`` (1: at once), None if they never do."""
    for n, (got, want) in enumerate(zip(labels[start:], reference[start:]), 1):
        if 100 * (got[region] == want[region]).mean() >= agree:
            return n
    return None


def run_clip(segmenter: Segmenter, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The labels of one clip, from a fresh stream."""
    segmenter.reset()
    return [segmenter.step(frame).labels.copy() for frame in frames]


def study(
    model: str,
    drive: list[np.ndarray],
    starts: list[int],
    gap: int,
    before: int,
    after: int,
    agree: float,
    refresh: bool,
    threads: int | None,
) -> dict[str, dict[str, list[int | None]]]:
    """Frames to agree per reference (``per-frame``, ``warm``) and case (``CASES``), one entry
    per start."""
    carried = Segmenter(model, threads=threads, refresh=None if refresh else Refresh.off())
    fresh = Segmenter(model, threads=threads, memory=False)
    out: dict[str, dict[str, list[int | None]]] = {
        ref: {case: [] for case in CASES} for ref in ("per-frame", "warm")
    }
    for a in starts:
        b = a + gap
        if b - before < 0 or b + after > len(drive) or a + before + after > len(drive):
            raise SystemExit(f"start {a} with --gap {gap}: the drive has {len(drive)} frames")
        for case in CASES:
            clip = compose(drive, case, a, b, before, after)
            got = run_clip(carried, clip.frames)
            warm = run_clip(carried, compose(drive, case, a, b, before, after, warm=True).frames)
            for ref, want in (("per-frame", run_clip(fresh, clip.frames)), ("warm", warm)):
                out[ref][case].append(frames_to_agree(got, want, clip.region, before, agree))
    return out


def table(name: str, rows: dict[str, list[int | None]], after: int) -> str:
    """A markdown row per case: frames to agree at each start, their mean and worst (a start
    that never agrees counts as ``after + 1``)."""
    lines = [f"| {name}: case | frames to agree, per start | mean | worst |", "|---|---|---|---|"]
    for case, found in rows.items():
        counted = [after + 1 if n is None else n for n in found]
        each = ", ".join("never" if n is None else str(n) for n in found)
        lines.append(f"| {case} | {each} | {np.mean(counted):.2f} | {max(counted)} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", required=True, help="a folder of one drive's frames, in order")
    p.add_argument("--model", required=True, nargs="+", help="bundle directories")
    p.add_argument(
        "--starts", type=int, nargs="+", default=[0, 10, 20, 30], help="first frames of the clips"
    )
    p.add_argument("--gap", type=int, default=50, help="frames between a and b (the new content)")
    p.add_argument("--before", type=int, default=8, help="frames before the change")
    p.add_argument("--after", type=int, default=12, help="frames after it")
    p.add_argument("--agree", type=float, default=90.0, help="percent of the region")
    p.add_argument("--no-refresh", action="store_true", help="the memory never refreshed")
    p.add_argument("--threads", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    drive = [frame.image for frame in open_image_folder(args.frames)[1]]
    for model in args.model:
        rows = study(
            model,
            drive,
            args.starts,
            args.gap,
            args.before,
            args.after,
            args.agree,
            not args.no_refresh,
            args.threads,
        )
        refresh = "refresh off" if args.no_refresh else "refresh on"
        for ref, found in rows.items():
            print(table(f"{Path(model).name} ({refresh}) against {ref}", found, args.after))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
