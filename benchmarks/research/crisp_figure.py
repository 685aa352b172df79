"""``python benchmarks/research/crisp_figure.py VIDEO OUT.png``: a crop of one frame's overlay with
labels upscaled by nearest neighbour (left) and crisply from the logits (right), side by side.

The figure in docs/ (``docs/img/crisp_720p.jpg``) was made from ``test_video.mp4`` (MIT, 720p;
the project's shared data folder) with::

    python benchmarks/research/crisp_figure.py test_video.mp4 \\
        docs/img/crisp_720p.jpg --frame 20 --crop 60,140,400,220 --zoom 2
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from vidseg.engine.errors import VidsegError, run_for_cli
from vidseg.engine.overlay import blend, palette_lut
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.engine.video import read_frames


def figure(
    video: str,
    out: str,
    frame_index: int,
    crop: tuple[int, int, int, int],
    zoom: int,
    model: str | None,
) -> str:
    """Write the side-by-side PNG; returns a one-line summary.

    Raises:
        VidsegError: the bundle has no logits, the clip is too short, or the crop is outside
            the frame.
    """
    seg = Segmenter(model)
    if seg.model.logits_name is None:
        raise VidsegError("the bundle has no logits output (vidseg-export BUNDLE --add-logits)")
    frames = [f.image for f in read_frames(video, max_frames=frame_index + 1)]
    if len(frames) <= frame_index:
        raise VidsegError(f"{video} has {len(frames)} frames, need {frame_index + 1}")
    for image in frames:  # state carried up to the frame shown
        result = seg.step(image)
    image = frames[frame_index]
    x, y, w, h = crop
    if x < 0 or y < 0 or x + w > image.shape[1] or y + h > image.shape[0]:
        raise VidsegError(f"crop {crop} is outside the {image.shape[1]}x{image.shape[0]} frame")
    lut = palette_lut(seg.manifest.palette)
    outputs = result.outputs
    assert outputs is not None
    panels = []
    for source in (GraphOutputs(outputs.labels, outputs.scores), outputs):
        labels, _ = upsample(source, *image.shape[:2])
        panel = blend(image, labels, lut, 0.5)[y : y + h, x : x + w]
        panels.append(cv2.resize(panel, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST))
    gap = np.full((h * zoom, 8, 3), 255, np.uint8)
    side = np.concatenate([panels[0], gap, panels[1]], axis=1)
    if not cv2.imwrite(out, cv2.cvtColor(side, cv2.COLOR_RGB2BGR)):
        raise VidsegError(f"could not write {out}")
    return f"wrote {out}: nearest (left) and crisp (right), {w}x{h} crop at {zoom}x"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python benchmarks/research/crisp_figure.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("video")
    p.add_argument("out", help="PNG to write")
    p.add_argument("--model", help="bundle with logits (default: the bundled model)")
    p.add_argument("--frame", type=int, default=20, help="index of the frame shown")
    p.add_argument("--crop", default="60,140,400,220", help="x,y,width,height in the frame")
    p.add_argument("--zoom", type=int, default=2, help="pixel zoom of the crop")
    args = p.parse_args(argv)
    try:
        crop = tuple(int(v) for v in args.crop.split(","))
        if len(crop) != 4 or min(crop[2:]) <= 0:
            raise ValueError
    except ValueError:
        p.error(f"--crop: expected x,y,width,height, got {args.crop!r}")
    code, summary = run_for_cli(
        p.prog,
        lambda: figure(args.video, args.out, args.frame, crop, args.zoom, args.model),
        debug=False,
    )
    if summary is None:
        return code
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
