"""``vidseg-eval``: score a model bundle on a folder of labelled frames, through the engine.

The documented way to check a bundle: every image of ``--frames`` (PNG/JPEG, in file-name order)
goes through ``Segmenter.step`` on the full frame, exactly as a video frame would, and its labels
(back at the frame's size) are scored against the single-channel PNG of the same stem in
``--labels``. The state is carried from frame to frame and reset where the drive changes (the
file-name prefix before the last ``_``: ``0016E5_07959.png`` is drive ``0016E5``), or before every
frame with ``--reset-every-frame``. The scoring itself is :func:`evaluate_bundle`, which
``vidseg-bench --accuracy`` shares. Runs on the runtime install: no torch.

How a memory copes with frames far apart: ``--stride N`` feeds every Nth frame of each drive
(from its first), ``--shuffle SEED`` each drive's frames in a fixed random order (every step a
jump), both as one stream with the state carried (:func:`stream_order`). ``--frame-rate HZ``
gives each frame the timestamp of its place in its drive (``i / HZ``), so the engine sees the
gaps the reordering makes, as it sees a video's timestamps. The engine refreshes a memory that no
longer applies (``engine.refresh``) as it does on video; ``--no-refresh`` carries it regardless.

Example::

    vidseg-eval --frames CAMVID/val --labels CAMVID/valannot --json eval.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from itertools import groupby
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vidseg.benchmarks.accuracy import BAND_PX, EDGE_PX, BundleScore, evaluate_bundle, sequence_of
from vidseg.engine.bundle import default_bundle_path
from vidseg.engine.clihelp import CliParser, HelpFormatter
from vidseg.engine.errors import VidsegError, run_for_cli, unwritable
from vidseg.engine.outfile import lines_to_stderr, write_text
from vidseg.engine.refresh import Refresh
from vidseg.engine.segmenter import Segmenter
from vidseg.models.data import labelled_frame_paths, read_labelled_frame

PROG = "vidseg-eval"


def _pct(value: float) -> float | None:
    """A percentage rounded to 0.01, None for nan (a class that never occurs; no frame pair)."""
    return None if math.isnan(value) else round(value, 2)


def stream_order(
    pairs: list[tuple[Path, Path]],
    stride: int = 1,
    shuffle: int | None = None,
    frame_rate: float | None = None,
) -> list[tuple[Path, Path, float | None]]:
    """The (image, label, timestamp) of each frame fed, in the order fed.

    ``pairs`` are in file-name order; each drive (:func:`sequence_of`, consecutive frames with
    the same one) is kept whole and in place: its every ``stride``-th frame from its first, then,
    with a ``shuffle`` seed, in a random order fixed by the seed
    (``numpy.random.default_rng(seed)``, one generator over the drives in order). A frame's
    timestamp is its index in its drive's file-name order over ``frame_rate`` (seconds), None
    without a rate.

    Raises:
        ValueError: ``stride`` < 1 or ``frame_rate`` <= 0.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if frame_rate is not None and not frame_rate > 0:
        raise ValueError(f"frame rate must be > 0, got {frame_rate}")
    rng = np.random.default_rng(shuffle) if shuffle is not None else None
    out: list[tuple[Path, Path, float | None]] = []
    for _, drive in groupby(pairs, key=lambda pair: sequence_of(pair[0].name)):
        fed = [
            (image, label, None if frame_rate is None else i / frame_rate)
            for i, (image, label) in enumerate(drive)
        ][::stride]
        if rng is not None:
            fed = [fed[i] for i in rng.permutation(len(fed))]
        out += fed
    return out


def _order(stride: int, shuffle: int | None) -> str:
    """How the frames were fed, for people: "in order", "every 4th frame", "shuffled (seed 0)"."""
    every = "in order" if stride == 1 else f"every {stride}{_ordinal(stride)} frame"
    if shuffle is None:
        return every
    return f"shuffled (seed {shuffle})" + ("" if stride == 1 else f", {every}")


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 < 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def report(
    score: BundleScore,
    segmenter: Segmenter,
    bundle: Path,
    reset_every_frame: bool,
    device: str = "cpu",
    stride: int = 1,
    shuffle: int | None = None,
    frame_rate: float | None = None,
) -> dict[str, object]:
    """The JSON report of a run on ``device``: metrics in percent (None where undefined),
    ``fps`` of the engine steps, how the frames were fed (``stride``, ``shuffle`` seed,
    ``frame_rate`` of their timestamps), the segmenter's ``refresh`` rule and the frames it
    ``refreshed`` (``engine.refresh``)."""
    return {
        "model": segmenter.manifest.name,
        "bundle": str(bundle),
        "device": device,
        "frames": score.frames,
        "sequences": score.sequences,
        "reset_every_frame": reset_every_frame,
        "stride": stride,
        "shuffle": shuffle,
        "frame_rate": frame_rate,
        "refresh": {
            "max_gap_s": segmenter.refresh.max_gap_s,
            "max_mismatch": segmenter.refresh.max_mismatch,
        },
        "refreshed": segmenter.refreshes,
        "miou": _pct(score.metrics.miou),
        "per_class": {c: _pct(v) for c, v in zip(segmenter.manifest.classes, score.metrics.iou)},
        "pixel_acc": _pct(score.metrics.pixel_acc),
        "trimap_iou": _pct(score.trimap.miou),
        "trimap_band_px": BAND_PX,
        "flicker": _pct(score.flicker.pred),
        "excess_flicker": _pct(score.flicker.excess),
        "excess_flicker_at_edges": _pct(score.flicker.excess_at_edges),
        "edge_px": EDGE_PX,
        "error_persistence": _pct(score.flicker.persistence),
        "excess_flicker_reverting": _pct(score.flicker.reverting),
        "truth_flicker": _pct(score.flicker.truth),
        "fps": round(score.fps, 2),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    """Read the folders, run the bundle over them and return :func:`report`'s dict.

    Raises:
        VidsegError: a folder (or the ``--json`` one) is missing, the frame folder is empty,
            an image lacks its label, a file is unreadable, or a label is not a single-channel
            map of its frame's size.
        BundleError, BackendError: the bundle cannot be loaded or run.
    """
    why = unwritable(args.json) if args.json else None
    if why:  # fail before the run
        raise VidsegError(f"--json: {why}")
    pairs = labelled_frame_paths(args.frames, args.labels, args.max_frames)
    fed = stream_order(pairs, args.stride, args.shuffle, args.frame_rate)
    bundle = Path(args.model) if args.model else default_bundle_path()
    refresh = Refresh.off() if args.no_refresh else None
    segmenter = Segmenter(bundle, device=args.device, threads=args.threads, refresh=refresh)
    frames = (read_labelled_frame(image, label) for image, label, _ in fed)
    progress = tqdm(frames, total=len(fed), unit="frame", disable=args.quiet, file=sys.stderr)
    with progress:
        score = evaluate_bundle(
            segmenter,
            progress,
            carry_state=not args.reset_every_frame,
            timestamps=[t for _, _, t in fed],
        )
    return report(
        score,
        segmenter,
        bundle,
        args.reset_every_frame,
        args.device,
        args.stride,
        args.shuffle,
        args.frame_rate,
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def summary(result: dict[str, object]) -> str:
    """A few lines for people: the headline numbers, then IoU per class."""
    state = "reset every frame" if result["reset_every_frame"] else "state carried"
    drives = "sequence" if result["sequences"] == 1 else "sequences"
    order = _order(result.get("stride", 1), result.get("shuffle"))  # type: ignore[arg-type]
    lines = [
        f"{result['model']}: {result['frames']} frames in {result['sequences']} {drives} "
        f"({order}), {state}, on {result['device']}",
        f"  mIoU {_fmt(result['miou'])}  pixel acc {_fmt(result['pixel_acc'])}  trimap IoU "
        f"({result['trimap_band_px']} px) {_fmt(result['trimap_iou'])}",
        f"  flicker {_fmt(result['flicker'])}% (excess {_fmt(result['excess_flicker'])}, of it "
        f"{_fmt(result['excess_flicker_at_edges'])} within {result['edge_px']} px of a true edge "
        f"and {_fmt(result['excess_flicker_reverting'])}% undone a frame later; truth "
        f"{_fmt(result['truth_flicker'])})",
        f"  errors persisting {_fmt(result['error_persistence'])}%  {result['fps']:.1f} fps "
        f"(engine steps)  memory refreshed on {result.get('refreshed', 0)} frames",
        "  IoU: " + ", ".join(f"{c} {_fmt(v)}" for c, v in result["per_class"].items()),
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--model", help="bundle directory (default: the bundled model)")
    p.add_argument(
        "--frames",
        required=True,
        metavar="DIR",
        help="folder of frames (.png/.jpg/.jpeg), read in file-name order",
    )
    p.add_argument(
        "--labels",
        required=True,
        metavar="DIR",
        help="folder of single-channel PNG labels named like the frames",
    )
    p.add_argument("--json", metavar="OUT", help="write the report here")
    p.add_argument(
        "--reset-every-frame",
        action="store_true",
        help="reset the state before every frame (the model without its memory)",
    )
    p.add_argument("--max-frames", type=int, metavar="N", help="score the first N frames only")
    p.add_argument(
        "--no-refresh",
        action="store_true",
        help="carry the memory even where the engine finds it stale (frames far "
        "apart in time, or a frame its past does not explain)",
    )
    p.add_argument(
        "--stride",
        type=int,
        default=1,
        metavar="N",
        help="feed every Nth frame of each drive, as one stream (frames far apart)",
    )
    p.add_argument(
        "--shuffle",
        type=int,
        metavar="SEED",
        help="feed each drive's frames in a random order fixed by SEED, as one "
        "stream (every step a jump)",
    )
    p.add_argument(
        "--frame-rate",
        type=float,
        metavar="HZ",
        help="the frames' rate in file-name order: each frame is stepped with the "
        "timestamp of its place in its drive, so the engine sees the gaps that "
        "--stride and --shuffle make (default: no timestamps)",
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda[:N] (needs onnxruntime-gpu): the engine runs the bundle "
        "there, as vidseg-run --device does",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.stride < 1:
        parser.error(f"--stride must be >= 1, got {args.stride}")
    if args.shuffle is not None and args.shuffle < 0:
        parser.error(f"--shuffle must be a seed >= 0, got {args.shuffle}")
    if args.frame_rate is not None and not (math.isfinite(args.frame_rate) and args.frame_rate > 0):
        parser.error(f"--frame-rate must be > 0, got {args.frame_rate}")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    code, result = run_for_cli(PROG, lambda: run(args), debug=args.debug)
    if result is None:
        return code
    with lines_to_stderr(args.json) as stdout:  # --json -: the report alone on stdout
        if args.json:
            text = json.dumps(result, indent=2) + "\n"
            write = lambda: write_text(args.json, text, stdout=stdout)  # noqa: E731
            code, _ = run_for_cli(PROG, write, debug=args.debug)
        if not args.quiet:
            print(summary(result))
            if args.json and not code:
                print(f"  wrote {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
