"""``vidseg-run``: segment a video file and write an overlay (or the label masks).

    vidseg-run input.mp4 --out seg.mp4                # overlay with the bundled default model
    vidseg-run input.mp4 --out masks/ --mask          # PNG label masks, one per frame
    vidseg-run input.mp4 --out masks.mkv --mask       # lossless label-id video (FFV1)
    vidseg-run input.mp4 --out masks.mp4 --mask       # palette-coloured masks for viewing
    vidseg-run input.mp4 --out seg.mp4 --mask-out ids.mkv --jsonl frames.jsonl --polygons
    vidseg-run 0 --out cam.mp4 --live --max-fps 10    # the first camera (/dev/video0)
    vidseg-run input.mp4 --out small.mp4 --out-size 640x0   # 640 wide, height keeps the aspect

The output is written to a temporary file and renamed when complete, so a failed run never
leaves a half file under the final name. Ctrl-C finishes the frames in flight, closes the file
(a shorter but valid video) and exits 130. Errors are one line on stderr with a non-zero exit
code (see ``vidseg.engine.errors.EXIT_CODES``); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from vidseg.engine.audio import AudioTrack
from vidseg.engine.backends import backend_names
from vidseg.engine.bundle import Bundle, default_bundle_path, load_bundle
from vidseg.engine.clihelp import CliParser, HelpFormatter
from vidseg.engine.errors import (
    SourceLostError,
    VideoIOError,
    exit_code_for,
    run_for_cli,
)
from vidseg.engine.folder import open_image_folder
from vidseg.engine.frame import Frame
from vidseg.engine.geometry import RESIZE_MODES
from vidseg.engine.masks import MaskSequenceWriter, mask_files
from vidseg.engine.outfile import is_stdout, replaces_a_file, write_text, writes_through
from vidseg.engine.outputs import FrameLog, FrameOutputs, Preview, Target, gui_problem
from vidseg.engine.overlay import blend, colorize, palette_lut, resize_image
from vidseg.engine.pipeline import QUEUE_DEPTH, RunStats, segment_video
from vidseg.engine.schedule import POLICIES, Schedule
from vidseg.engine.segmenter import Result, Segmenter
from vidseg.engine.sources import (
    LatestFrameSource,
    ReconnectingSource,
    paced,
    rate_limited,
    strided,
)
from vidseg.engine.stats import percentiles
from vidseg.engine.timeline import Timeline
from vidseg.engine.video import (
    RTSP_TRANSPORTS,
    STDIN,
    VideoInfo,
    camera_source,
    is_camera,
    is_network_source,
    open_video,
)
from vidseg.engine.writer import VideoWriter

logger = logging.getLogger(__name__)
MASK_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm")  # .mkv: exact ids
LOSSLESS_MASK_SUFFIX = ".mkv"  # FFV1 4:0:0, the exact class ids (read_label_frames)
DEFAULT_TIMEOUT_S = 10.0  # network sources: a silent camera fails instead of hanging
RECONNECT_BACKOFF_S = 0.5  # first wait before reopening a lost source, doubled per attempt
OVERLAY_CODECS = ("libx264", "libx265", "libvpx-vp9", "mpeg4")
CODEC_BY_SUFFIX = {".webm": "libvpx-vp9"}  # --out's encoder when --codec is not given; else x264
# x264's and x265's speed presets (--preset)
X264_PRESETS = tuple(
    "ultrafast superfast veryfast faster fast medium slow slower veryslow placebo".split()
)


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
        "result age, drops, resets)",
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


def overlay_codec(args: argparse.Namespace) -> str:
    """``--codec``, or the encoder ``--out``'s suffix calls for (VP9 for .webm)."""
    return args.codec or CODEC_BY_SUFFIX.get(Path(args.out or "").suffix.lower(), "libx264")


def written_size(args: argparse.Namespace, width: int, height: int) -> tuple[int, int]:
    """The size of the first video output as written: the overlay and colour masks are
    yuv420p, which pads an odd side by one pixel; lossless masks (.mkv, PNG) keep it."""
    path = args.out or args.mask_out
    if path is None:
        return width, height
    suffix = Path(path).suffix.lower()
    if (args.mask or not args.out) and (
        suffix == LOSSLESS_MASK_SUFFIX or suffix not in MASK_VIDEO_SUFFIXES
    ):
        return width, height
    return width + width % 2, height + height % 2


def output_fps(args: argparse.Namespace, fps: Fraction) -> Fraction:
    """The frame rate the written frames have: the source's, over ``--vid-stride``, at most
    ``--max-fps`` (what an AVI, which counts frames, declares)."""
    fps = fps / args.vid_stride
    if args.max_fps:
        fps = min(fps, Fraction(args.max_fps).limit_denominator(1001))
    return fps


def output_size(requested: tuple[int, int] | None, width: int, height: int) -> tuple[int, int]:
    """The (W, H) to write: the input's, or ``requested`` with a 0 side from the aspect ratio."""
    if requested is None:
        return width, height
    out_w, out_h = requested
    if out_w == 0:
        out_w = max(1, round(width * out_h / height))
    if out_h == 0:
        out_h = max(1, round(height * out_w / width))
    return out_w, out_h


class UsageError(ValueError):
    """A flag that does not fit the bundle (reported like argparse's usage errors, exit 2)."""


def _schedule(args: argparse.Namespace, bundle: Bundle) -> Schedule | None:
    """The bundle's key-frame schedule with the command-line overrides, or None (no flags).

    Raises:
        UsageError: schedule flags on a bundle that is not a keyframe bundle, or bad values.
    """
    if not (args.schedule or args.key_interval or args.budget_ms):
        return None
    if bundle.manifest.family != "keyframe":
        raise UsageError(
            f"--schedule/--key-interval/--budget-ms need a keyframe bundle; "
            f"this one is {bundle.manifest.family!r}"
        )
    base = Schedule.from_manifest(bundle.manifest.schedule)
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


def _check_against_bundle(args: argparse.Namespace, bundle: Bundle) -> Schedule | None:
    """The flags that depend on the bundle; the schedule to use.

    Raises:
        UsageError: a flag the bundle cannot serve.
    """
    if args.scores and bundle.manifest.output_name("scores") is None:
        raise UsageError(
            "--scores needs a bundle exported with confidence (vidseg-export "
            "--scores); this one has none"
        )
    return _schedule(args, bundle)


def _outputs(args: argparse.Namespace) -> list[Path]:
    """Every path the run writes while it runs (``--json`` comes after)."""
    return [Path(p) for p in (args.out, args.mask_out, args.scores, args.jsonl) if p]


def _mask_form(path: str) -> str:
    """What masks at ``path`` are: ``"folder"`` (PNG class ids: an existing folder, a path
    ending in /, or one without a suffix), ``"ids"`` (a lossless FFV1 video: .mkv, and ``-``, a
    FIFO or a device without a colour-video suffix) or ``"colour"`` (.mp4/.m4v/.mov/.avi/.webm).

    Raises:
        UsageError: any other suffix (an image's, a text file's): neither a folder nor a video.
    """
    suffix = Path(path).suffix.lower()
    through = writes_through(path)
    if not through and (os.path.isdir(path) or path.endswith(("/", os.sep)) or not suffix):
        return "folder"
    if suffix in MASK_VIDEO_SUFFIXES and suffix != LOSSLESS_MASK_SUFFIX:
        return "colour"
    if suffix == LOSSLESS_MASK_SUFFIX or through:
        return "ids"
    colours = "/".join(s for s in MASK_VIDEO_SUFFIXES if s != LOSSLESS_MASK_SUFFIX)
    raise UsageError(
        f"{path}: masks go to a folder (a path without a suffix, or ending in /), a "
        f"{LOSSLESS_MASK_SUFFIX} (exact ids) or a {colours} video (colours), not a {suffix} file"
    )


def _output_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the output paths as given (a usage error), or None."""
    masks = [("--mask-out", args.mask_out), ("--out", args.out if args.mask else None)]
    folders = [*masks, ("--scores", args.scores)]
    for flag, path in folders:
        if path and Path(os.path.normpath(path)).name in ("", ".."):
            return f"{flag} {path}: give the output a folder of its own, e.g. {flag} masks"
    for flag, path in masks:
        try:
            if path:
                _mask_form(path)
        except UsageError as error:
            return f"{flag} {error}"
    if args.scores and _mask_form_or_none(args.scores) != "folder":
        return (
            f"--scores {args.scores}: confidence maps are a folder of PNGs: give a folder "
            "(a path without a suffix, or ending in /)"
        )
    if args.triton and args.mask and args.out and _mask_form_or_none(args.out) == "colour":
        if Path(args.out).suffix.lower() != ".mp4":  # the server's masks are lossless ids
            return f"--out {args.out}: with --triton, masks go to a folder, a .mkv or an .mp4"
    files = [("--out", None if args.mask else args.out), ("--jsonl", args.jsonl)]
    for flag, path in [*files, ("--json", args.json)]:
        if path and not is_stdout(path) and os.path.isdir(path):
            return f"{flag} {path} is a folder: give a file name"
    return None


def _mask_form_or_none(path: str) -> str | None:
    try:
        return _mask_form(path)
    except UsageError:
        return None


def _existing(args: argparse.Namespace) -> str | None:
    """Why the run would replace something that needs --overwrite (an existing file, a folder
    holding masks), or None. ``-``, FIFOs and devices are written through and never count."""
    folders = [
        p
        for p in (args.mask_out, args.out if args.mask else None, args.scores)
        if p and _mask_form_or_none(p) == "folder"
    ]
    for path in filter(None, (args.out, args.mask_out, args.scores, args.jsonl, args.json)):
        if path in folders:
            if old := mask_files(path):
                return f"{path} holds masks ({old[0].name}, ...); pass --overwrite to replace them"
        elif replaces_a_file(path):
            return f"{path} exists; pass --overwrite to replace it"
    return None


@dataclass
class LiveStats:
    """What the live-source wrappers did during a run (zero without --live/--reconnect)."""

    dropped: int = 0  # frames --live skipped because a newer one had arrived
    reconnects: int = 0  # times a lost source was opened again


@dataclass
class Reading:
    """What every opening of the input shares (a reconnect opens it again): its continuous
    clock, and the audio its demuxer hands to ``--out`` (None: no audio is read)."""

    timeline: Timeline
    audio: AudioTrack | None


def _open(
    args: argparse.Namespace, max_frames: int | None, reading: Reading
) -> tuple[VideoInfo, Iterator[Frame]]:
    if os.path.isdir(args.input):  # a folder of frames (engine/folder.py)
        return open_image_folder(args.input, max_frames=max_frames)
    live = is_network_source(args.input) or is_camera(args.input) or args.live
    return open_video(
        args.input,
        max_frames=max_frames,
        thread_type="SLICE" if live else "AUTO",
        timeout_s=args.timeout or None,
        rtsp_transport=args.rtsp_transport,
        timeline=reading.timeline,
        audio=reading.audio,
    )


def run(
    args: argparse.Namespace, bundle: Bundle | None = None, schedule: Schedule | None = None
) -> tuple[RunStats, VideoInfo, LiveStats]:
    # opened once (a pipe cannot be reopened); a bad input fails before the model loads; the
    # overlay's audio comes from the same demuxer as the video
    overlay_audio = bool(args.out) and not args.mask and not args.no_audio
    reading = Reading(Timeline(args.input), AudioTrack() if overlay_audio else None)
    info, frames = _open(args, args.max_frames, reading)
    try:
        return _run(args, info, frames, reading, bundle, schedule)
    finally:  # close the input if the run never started; the pipeline closes it otherwise
        with suppress(ValueError):  # "generator already executing": a decode thread that
            frames.close()  # did not stop in time (Ctrl-C) still owns it: closed when collected


def _mask_target(
    path: str,
    args: argparse.Namespace,
    info: VideoInfo,
    size: tuple[int, int],
    labels: Callable[[Frame, Result], np.ndarray],
    lut: np.ndarray,
) -> Target:
    """Masks at ``path`` (``_mask_form``): lossless ids (FFV1), palette colours (H.264 yuv420p,
    plays anywhere; VP9 for .webm) or a folder of PNG ids."""
    width, height = size
    form = _mask_form(path)
    fps = output_fps(args, info.fps)
    if form == "ids":
        return Target(
            VideoWriter(
                path,
                width=width,
                height=height,
                fps=fps,
                time_base=info.time_base,
                codec="ffv1",
                lossless=True,
                overwrite=args.overwrite,
                zero_start=True,
            ),
            labels,
        )
    if form == "colour":
        codec = CODEC_BY_SUFFIX.get(Path(path).suffix.lower(), "libx264")
        return Target(
            VideoWriter(
                path,
                width=width,
                height=height,
                fps=fps,
                time_base=info.time_base,
                codec=codec,
                crf=args.crf,
                preset=args.preset,
                overwrite=args.overwrite,
                zero_start=True,
            ),
            lambda frame, result: colorize(labels(frame, result), lut),
        )
    return Target(MaskSequenceWriter(path, overwrite=args.overwrite), labels)


def _run(
    args: argparse.Namespace,
    info: VideoInfo,
    frames: Iterator[Frame],
    reading: Reading,
    bundle: Bundle | None = None,
    schedule: Schedule | None = None,
) -> tuple[RunStats, VideoInfo, LiveStats]:
    if bundle is None:
        bundle = load_bundle(args.model or default_bundle_path())
        schedule = _check_against_bundle(args, bundle)
    segmenter = Segmenter(
        bundle,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        schedule=schedule,
        resize=args.resize,
        memory=not args.no_memory,
    )
    lut = palette_lut(segmenter.manifest.palette)
    width, height = output_size(args.out_size, info.width, info.height)

    def labels(frame: Frame, result: Result) -> np.ndarray:
        return result.at_size(height, width).labels

    def overlay(frame: Frame, result: Result) -> np.ndarray:
        return blend(
            resize_image(frame.image, width, height), labels(frame, result), lut, args.alpha
        )

    def scores(frame: Frame, result: Result) -> np.ndarray:
        return result.scores  # at the frame's size (the pipeline's at_size)

    with ExitStack() as stack:
        targets = []
        if args.out and args.mask:
            targets.append(_mask_target(args.out, args, info, (width, height), labels, lut))
        elif args.out:
            targets.append(
                Target(
                    VideoWriter(
                        Path(args.out),
                        width=width,
                        height=height,
                        fps=output_fps(args, info.fps),
                        time_base=info.time_base,
                        codec=overlay_codec(args),
                        crf=args.crf,
                        preset=args.preset,
                        audio=reading.audio,
                        overwrite=args.overwrite,
                        zero_start=True,
                    ),
                    overlay,
                )
            )
        if args.mask_out:
            targets.append(_mask_target(args.mask_out, args, info, (width, height), labels, lut))
        if args.scores:
            targets.append(
                Target(MaskSequenceWriter(args.scores, overwrite=args.overwrite), scores)
            )
        log = (
            FrameLog(args.jsonl, segmenter.manifest.classes, polygons=args.polygons)
            if args.jsonl
            else None
        )
        sink = stack.enter_context(
            FrameOutputs(
                targets, log, Preview() if args.show else None, overlay if args.show else None
            )
        )
        total = info.frame_count
        if args.max_frames is not None:
            total = min(total, args.max_frames) if total else args.max_frames
        if total and args.vid_stride > 1:
            total = -(-total // args.vid_stride)
        bar = stack.enter_context(
            tqdm(
                total=total,
                unit="frame",
                disable=args.quiet,
                desc=Path(args.input).name,
                file=sys.stderr,
            )
        )
        source: Iterable[Frame] = frames
        reconnecting = newest = None
        if args.reconnect:

            def reopen() -> Iterator[Frame]:
                # the frames still wanted: the reader stops there (and reads the audio to the
                # last one's end)
                left = None
                if args.max_frames is not None and reconnecting is not None:
                    left = max(1, args.max_frames - reconnecting.delivered)
                return _open(args, left, reading)[1]

            source = reconnecting = ReconnectingSource(
                frames,
                reopen,
                retries=args.reconnect,
                backoff_s=RECONNECT_BACKOFF_S,
                max_frames=args.max_frames,
                name=args.input,
            )
        if args.vid_stride > 1:
            source = strided(source, args.vid_stride)
        if args.max_fps:
            source = rate_limited(source, args.max_fps)
        done = 0

        def on_frame(result: Result) -> None:  # the encode thread, in frame order
            nonlocal done
            done += 1
            bar.update(1)
            if args.stats_every and done % args.stats_every == 0:
                bar.write(f"vidseg-run: {segmenter.stats().line()}", file=sys.stderr)

        with ExitStack() as live_source:
            if args.live:
                if not (
                    is_network_source(args.input) or is_camera(args.input) or args.input == STDIN
                ):
                    source = paced(source)  # a file stands in for a camera
                source = newest = live_source.enter_context(LatestFrameSource(source))
            stats = segment_video(
                segmenter,
                source,
                sink,
                sink.render,
                on_frame=on_frame,
                depth=1 if args.live else QUEUE_DEPTH,
            )
        live = LiveStats(
            dropped=newest.dropped if newest else 0,
            reconnects=reconnecting.reconnects if reconnecting else 0,
        )
        if not stats.frames:  # nothing to keep: discard the empty output, say why
            if stats.truncated is not None:
                raise stats.truncated
            if stats.interrupted:
                raise KeyboardInterrupt
    return stats, info, live


@contextmanager
def _sigterm_as_interrupt() -> Iterator[list[int]]:
    """While inside, SIGTERM (``docker stop``, systemd, kill) raises KeyboardInterrupt in the
    main thread like Ctrl-C: the frames done are written. Yields the signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.show_default_model:
        print(default_bundle_path())
        return 0
    if not args.input or not (args.out or args.mask_out or args.scores or args.jsonl):
        parser.error(
            "INPUT and an output (--out, --mask-out, --scores or --jsonl) are required "
            "(or use --show-default-model)"
        )
    args.input = camera_source(args.input)  # "0" -> /dev/video0
    if args.mask and not args.out:
        parser.error("--mask writes the masks to --out; use --mask-out PATH without --out")
    if args.polygons and not args.jsonl:
        parser.error("--polygons goes into the --jsonl file: give --jsonl PATH")
    if args.vid_stride < 1:
        parser.error(f"--vid-stride must be >= 1, got {args.vid_stride}")
    if args.max_fps is not None and not args.max_fps > 0:
        parser.error(f"--max-fps must be > 0, got {args.max_fps}")
    if args.stats_every is not None and args.stats_every < 1:
        parser.error(f"--stats-every must be >= 1, got {args.stats_every}")
    paths = _outputs(args)
    every = [*paths, *([Path(args.json)] if args.json else [])]
    if len({p.absolute() for p in every}) < len(every):
        parser.error("--out, --mask-out, --scores, --jsonl and --json must be different paths")
    if problem := _output_problem(args):
        parser.error(problem)
    source = Path(args.input).resolve() if os.path.exists(args.input) else None
    for path in paths:  # writing an output must never replace or delete the input
        if source is not None and source.is_relative_to(path.resolve()):
            parser.error(f"output {path} would overwrite the input {args.input}")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be within 0..1, got {args.alpha}")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
    if not 0 <= args.crf <= 51:
        parser.error(f"--crf must be within 0..51, got {args.crf}")
    if not args.timeout >= 0:  # nan too
        parser.error(f"--timeout must be >= 0, got {args.timeout}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.reconnect < 0:
        parser.error(f"--reconnect must be >= 0, got {args.reconnect}")
    if args.reconnect and not is_network_source(args.input):
        parser.error("--reconnect needs a network source (rtsp://, http://, ...)")
    if not args.overwrite and (problem := _existing(args)):
        print(f"vidseg-run: error: {problem}", file=sys.stderr)
        return 2  # before anything opens: the file stays untouched
    if args.show and (problem := gui_problem()):
        print(f"vidseg-run: error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.triton:  # the model runs on the server (engine/triton_client.py)
        from vidseg.engine.triton_client import cli_run

        return cli_run(args)
    code, bundle = run_for_cli(
        "vidseg-run", lambda: load_bundle(args.model or default_bundle_path()), debug=args.debug
    )
    if bundle is None:
        return code
    try:
        schedule = _check_against_bundle(args, bundle)
    except UsageError as error:
        parser.error(str(error))

    def checked_run() -> tuple[RunStats, VideoInfo, LiveStats]:
        for out in every:
            if not out.absolute().parent.is_dir():  # before loading the model: fail fast
                raise VideoIOError(f"output directory does not exist: {out.absolute().parent}")
        return run(args, bundle, schedule)

    with _sigterm_as_interrupt() as signals:
        code, outcome = run_for_cli(  # Ctrl-C here came before the loop (model load / open)
            "vidseg-run",
            checked_run,
            debug=args.debug,
            interrupted="interrupted before any frame was written",
        )
    if signals and code == 130:  # SIGTERM: the same, with its own code
        return 128 + signals[-1]
    if outcome is None:
        return code
    stats, info, live = outcome
    width, height = written_size(args, *output_size(args.out_size, info.width, info.height))
    summary = {
        "input": args.input,
        "output": args.out,
        "mask_output": args.mask_out,
        "scores_output": args.scores,
        "jsonl": args.jsonl,
        "output_size": [width, height],
        "frames": stats.frames,
        "wall_s": round(stats.wall_s, 3),
        "fps": round(stats.fps, 2),
        "step_ms": percentiles(stats.step_ms),
        "key_frames": stats.key_frames,
        "interrupted": stats.interrupted,
        "truncated": str(stats.truncated) if stats.truncated else None,
        "source_lost": isinstance(stats.truncated, SourceLostError),
        "dropped": live.dropped,
        "reconnects": live.reconnects,
        "state_resets": stats.resets,
    }
    if args.json:
        try:
            write_text(args.json, json.dumps(summary, indent=2) + "\n")
        except VideoIOError as error:
            print(f"vidseg-run: error: {error}", file=sys.stderr)
            return exit_code_for(error)
    if stats.interrupted:
        print(
            f"vidseg-run: {'terminated' if signals else 'interrupted'} after {stats.frames} "
            f"frames; wrote {', '.join(map(str, paths))}",
            file=sys.stderr,
        )
        return 128 + signals[-1] if signals else 130
    if stats.truncated is not None:
        print(
            f"vidseg-run: error: {stats.truncated}; wrote the {stats.frames} decoded frames "
            f"to {', '.join(map(str, paths))}",
            file=sys.stderr,
        )
        return exit_code_for(stats.truncated)
    dropped = f", {live.dropped} stale frames dropped" if args.live else ""
    written = ", ".join(str(p) for p in paths)
    print(
        f"wrote {written}: {stats.frames} frames, {width}x{height}, "
        f"{stats.fps:.1f} fps end to end{dropped}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
