"""``vidseg-run``'s command line: its flags (``build_parser``), what is wrong with a set of them
(``usage_problem``), and what they ask ``engine.run.segment`` for (``outputs_of``,
``options_of``)."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from vidseg.engine.avinput import RTSP_TRANSPORTS, is_network_source
from vidseg.engine.backends import backend_names
from vidseg.engine.bundle import Manifest
from vidseg.engine.clihelp import CliParser, HelpFormatter
from vidseg.engine.errors import UsageError
from vidseg.engine.geometry import RESIZE_MODES
from vidseg.engine.outputs import (
    OVERLAY_CODECS,
    X264_PRESETS,
    Jsonl,
    Masks,
    Output,
    Overlay,
    Scores,
    Show,
    output_problem,
)
from vidseg.engine.run import DEFAULT_TIMEOUT_S, RunOptions
from vidseg.engine.schedule import POLICIES, Schedule


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="vidseg-run",
        description="Segment a video with a vidseg model bundle and write an overlay video "
        "(or label masks with --mask).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "input",
        nargs="?",
        help="input video file, URL (rtsp://, http://), a "
        "camera (0 or /dev/video0), - for standard input (a streamable format: "
        ".ts, .mkv, faststart .mp4), or a folder of images (the frames in file-name "
        "order at 30 fps; an image that does not decode is skipped with a warning)",
    )
    p.add_argument(
        "--out",
        help="overlay video (.mp4; - for Matroska on standard output), or "
        "with --mask the masks (see --mask-out)",
    )
    p.add_argument(
        "--model",
        help="model bundle directory (default: the bundled model, see --show-default-model)",
    )
    p.add_argument(
        "--mask",
        action="store_true",
        help="--out gets the masks instead of the overlay (formats as --mask-out)",
    )
    p.add_argument(
        "--mask-out",
        metavar="PATH",
        help="also write the masks: a folder of PNG class ids 000000.png ... "
        "(exact; a folder is a path without a suffix, one ending in /, or an "
        "existing folder), .mkv (lossless FFV1 class ids, exact; also for - and a "
        "FIFO or device), or .mp4/.m4v/.mov/.avi (palette colours, H.264 yuv420p: "
        "plays anywhere, for viewing only) or .webm (colours, VP9)",
    )
    p.add_argument(
        "--scores",
        metavar="DIR",
        help="confidence maps as PNGs (255 x max softmax) into the folder DIR; "
        "needs a bundle exported with --scores",
    )
    p.add_argument(
        "--jsonl",
        metavar="PATH",
        help="one JSON line per frame: index, pts, time, key_frame, per-stage ms, "
        "age_ms, share of pixels per class, mean confidence; - for standard "
        "output",
    )
    p.add_argument(
        "--polygons",
        action="store_true",
        help="with --jsonl: each class's regions as polygons in frame pixels",
    )
    p.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="stretch",
        help="fit frames to the model input: stretch, letterbox (keep the aspect, "
        "pad) or crop (keep the aspect, cut the edges: labelled 255)",
    )
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="run each frame as a stream's first (the model's state reset before every frame): "
        "the freshest labels, without what a memory adds (docs/families.md)",
    )
    p.add_argument(
        "--vid-stride",
        type=int,
        default=1,
        metavar="N",
        help="segment every Nth frame only (the others are not written)",
    )
    p.add_argument(
        "--max-fps",
        type=float,
        metavar="F",
        help="segment at most F frames per second of the source's time",
    )
    p.add_argument(
        "--stats-every",
        type=int,
        metavar="N",
        help="a status line on stderr every N frames (rolling FPS, step p50/p99, "
        "result age, drops, resets), and at the end the CPU time per frame of each "
        "pipeline stage against what the cores allow",
    )
    p.add_argument(
        "--show",
        action="store_true",
        help="preview window (needs OpenCV with GUI support and a display)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity, 0..1")
    p.add_argument(
        "--out-size",
        type=parse_size,
        metavar="WxH",
        help="output resolution (default: the input's); 0 for one side keeps the "
        "aspect ratio, e.g. 640x0. The model still sees the full-resolution frame",
    )
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="network sources: seconds to wait for the connection and for each read "
        "before the source counts as lost (exit 8); 0 waits forever",
    )
    p.add_argument(
        "--reconnect",
        type=int,
        default=0,
        metavar="N",
        help="reopen a lost network source (a dropped connection, a read timeout, the end of a "
        "live stream) up to N times in a row, waiting 0.5, 1, 2 .. 8 s; the model state is "
        "reset and the output goes on",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="newest frame only: frames that arrive while the model is busy are "
        "dropped (counted in the summary); a file plays at its own frame rate",
    )
    p.add_argument(
        "--rtsp-transport",
        default="tcp",
        choices=RTSP_TRANSPORTS,
        help="rtsp:// sources: transport",
    )
    p.add_argument("--device", default="cpu", help="cpu, or cuda[:N] with a GPU backend")
    p.add_argument("--backend", default="ort", choices=backend_names(), help="inference backend")
    p.add_argument("--threads", type=int, help="inference threads (default: runtime's)")
    p.add_argument(
        "--schedule",
        choices=POLICIES,
        help="key-frame policy for keyframe bundles (default: the bundle's)",
    )
    p.add_argument("--key-interval", type=int, help="frames between key frames (keyframe)")
    p.add_argument("--budget-ms", type=float, help="per-frame budget for --schedule deadline")
    p.add_argument(
        "--codec",
        choices=OVERLAY_CODECS,
        help="overlay video encoder (default: libvpx-vp9 for .webm, else libx264; "
        "libx265: smaller files, slower)",
    )
    p.add_argument("--crf", type=int, default=23, help="libx264/libx265 quality (0 lossless .. 51)")
    p.add_argument(
        "--preset",
        default="veryfast",
        choices=X264_PRESETS,
        metavar="PRESET",
        help=f"libx264/libx265 speed preset: {', '.join(X264_PRESETS)}",
    )
    p.add_argument(
        "--encoder-threads",
        type=int,
        metavar="N",
        help="threads of each video encoder (default: the codec's own choice, for libx264 "
        "about 1.5 per core; 1 encodes on the pipeline's encode thread alone)",
    )
    p.add_argument(
        "--no-audio",
        action="store_true",
        help="drop the input's audio (by default it is copied untouched)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs (without it, an existing file, or a folder "
        "holding masks, is an error and stays untouched). A folder keeps everything "
        "but its masks 000000.png ...; a symlink to a file keeps the link and "
        "replaces the file; - (standard output), a FIFO or a device is written "
        "through, never replaced, and needs no --overwrite",
    )
    p.add_argument(
        "--json", metavar="PATH", help="write a run summary as JSON (- for standard output)"
    )
    p.add_argument(
        "--show-default-model",
        action="store_true",
        help="print the bundled default model's path and exit",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--triton",
        metavar="URL",
        help="segment on a Triton server (host:port, "
        "gRPC) holding a vidseg-export --triton repository; docs/scale-out.md",
    )
    p.add_argument("--triton-model", default="vidseg", help="the model name on the server")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return p


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H); one side may be 0 (keep the aspect ratio). For argparse."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 640x360, got {text!r}"
        ) from None
    if width < 0 or height < 0 or width == height == 0 or max(width, height) > 16384:
        raise argparse.ArgumentTypeError(f"sizes must be 0..16384 with one side > 0, got {text!r}")
    return width, height


def outputs_of(args: argparse.Namespace) -> list[tuple[str, Output]]:
    """The outputs the flags ask for, each with its flag (for messages), in the order they are
    written: ``--out``, ``--mask-out``, ``--scores``, ``--jsonl``, ``--show``."""
    outputs: list[tuple[str, Output]] = []
    if args.out:
        outputs.append(("--out", Masks(args.out) if args.mask else Overlay(args.out, args.codec)))
    if args.mask_out:
        outputs.append(("--mask-out", Masks(args.mask_out)))
    if args.scores:
        outputs.append(("--scores", Scores(args.scores)))
    if args.jsonl:
        outputs.append(("--jsonl", Jsonl(args.jsonl, polygons=args.polygons)))
    if args.show:
        outputs.append(("--show", Show()))
    return outputs


def options_of(args: argparse.Namespace) -> RunOptions:
    """The run the flags ask for (the key-frame schedule is the bundle's: see ``cli``)."""
    return RunOptions(
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        resize=args.resize,
        memory=not args.no_memory,
        max_frames=args.max_frames,
        vid_stride=args.vid_stride,
        max_fps=args.max_fps,
        live=args.live,
        reconnect=args.reconnect,
        timeout_s=args.timeout or None,
        rtsp_transport=args.rtsp_transport,
        out_size=args.out_size,
        alpha=args.alpha,
        crf=args.crf,
        preset=args.preset,
        encoder_threads=args.encoder_threads,
        audio=not args.no_audio,
        overwrite=args.overwrite,
        progress=not args.quiet,
        stats_every=args.stats_every,
    )


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags as given (a usage error, exit 2), or None."""
    if not args.input or not (args.out or args.mask_out or args.scores or args.jsonl):
        return (
            "INPUT and an output (--out, --mask-out, --scores or --jsonl) are required "
            "(or use --show-default-model)"
        )
    checks = [
        (
            args.mask and not args.out,
            "--mask writes the masks to --out; use --mask-out PATH without --out",
        ),
        (
            args.polygons and not args.jsonl,
            "--polygons goes into the --jsonl file: give --jsonl PATH",
        ),
        (args.vid_stride < 1, f"--vid-stride must be >= 1, got {args.vid_stride}"),
        (
            args.max_fps is not None and not args.max_fps > 0,
            f"--max-fps must be > 0, got {args.max_fps}",
        ),
        (
            args.stats_every is not None and args.stats_every < 1,
            f"--stats-every must be >= 1, got {args.stats_every}",
        ),
        (not 0.0 <= args.alpha <= 1.0, f"--alpha must be within 0..1, got {args.alpha}"),
        (
            args.max_frames is not None and args.max_frames < 1,
            f"--max-frames must be >= 1, got {args.max_frames}",
        ),
        (not 0 <= args.crf <= 51, f"--crf must be within 0..51, got {args.crf}"),
        (not args.timeout >= 0, f"--timeout must be >= 0, got {args.timeout}"),  # nan too
        (
            args.threads is not None and args.threads < 1,
            f"--threads must be >= 1, got {args.threads}",
        ),
        (
            args.encoder_threads is not None and args.encoder_threads < 1,
            f"--encoder-threads must be >= 1, got {args.encoder_threads}",
        ),
        (args.reconnect < 0, f"--reconnect must be >= 0, got {args.reconnect}"),
        (
            args.reconnect and not is_network_source(args.input),
            "--reconnect needs a network source (rtsp://, http://, ...)",
        ),
    ]
    if problem := next((message for failed, message in checks if failed), None):
        return problem
    outputs = outputs_of(args)
    paths = [Path(o.path) for _, o in outputs if not isinstance(o, Show)]
    every = [*paths, *([Path(args.json)] if args.json else [])]
    if len({p.absolute() for p in every}) < len(every):
        return "--out, --mask-out, --scores, --jsonl and --json must be different paths"
    for flag, output in outputs:
        if not isinstance(output, Show) and (problem := output_problem(output)):
            return f"{flag} {problem}"
    if args.json and args.json != "-" and os.path.isdir(args.json):
        return f"--json {args.json} is a folder: give a file name"
    source = Path(args.input).resolve() if os.path.exists(args.input) else None
    for path in paths:  # writing an output must never replace or delete the input
        if source is not None and source.is_relative_to(path.resolve()):
            return f"output {path} would overwrite the input {args.input}"
    return None


def schedule_of(args: argparse.Namespace, manifest: Manifest) -> Schedule | None:
    """The bundle's key-frame schedule with the command-line overrides, or None (no flags).

    Raises:
        UsageError: schedule flags on a bundle without a key-frame schedule, or bad values.
    """
    if not (args.schedule or args.key_interval or args.budget_ms):
        return None
    if not manifest.has_key_frames:
        raise UsageError(
            "--schedule/--key-interval/--budget-ms need a bundle with key frames; "
            f"this one ({manifest.family}) runs every frame the same way"
        )
    base = Schedule.from_manifest(manifest.schedule)
    try:
        return replace(
            base,
            policy=args.schedule or base.policy,
            interval=args.key_interval or base.interval,
            max_interval=max(base.max_interval, args.key_interval or 0),
            budget_ms=args.budget_ms or base.budget_ms,
        )
    except ValueError as exc:
        raise UsageError(f"bad key-frame schedule: {exc}") from exc
