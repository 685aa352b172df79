"""``vidseg-run``: segment a video file and write an overlay (or the label masks).

    vidseg-run input.mp4 --out seg.mp4                # overlay with the bundled default model
    vidseg-run input.mp4 --out masks/ --mask          # PNG label masks, one per frame
    vidseg-run input.mp4 --out masks.mkv --mask       # lossless label-id video
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
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from vidseg.engine.backends import backend_names
from vidseg.engine.bundle import Bundle, default_bundle_path, load_bundle
from vidseg.engine.errors import (
    BundleError,
    SourceLostError,
    VideoIOError,
    exit_code_for,
    run_for_cli,
)
from vidseg.engine.overlay import blend, palette_lut, resize_image
from vidseg.engine.pipeline import QUEUE_DEPTH, RunStats, segment_video
from vidseg.engine.schedule import POLICIES, Schedule
from vidseg.engine.segmenter import Result, Segmenter
from vidseg.engine.sources import LatestFrameSource, ReconnectingSource, paced
from vidseg.engine.video import (
    RTSP_TRANSPORTS,
    STDIN,
    Frame,
    MaskSequenceWriter,
    VideoInfo,
    VideoWriter,
    is_network_source,
    open_video,
)

logger = logging.getLogger(__name__)
MASK_VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")
DEFAULT_TIMEOUT_S = 10.0  # network sources: a silent camera fails instead of hanging
RECONNECT_BACKOFF_S = 0.5  # first wait before reopening a lost source, doubled per attempt
OVERLAY_CODECS = ("libx264", "libx265", "libvpx-vp9", "mpeg4")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vidseg-run",
        description="Segment a video with a vidseg model bundle and write an overlay video "
        "(or label masks with --mask).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", nargs="?", help="input video file, URL (rtsp://, http://), or - "
                   "for standard input (a streamable format: .ts, .mkv, faststart .mp4)")  # fmt: skip
    p.add_argument("--out", help="output video (.mp4), or with --mask a directory or .mkv/.mp4")
    p.add_argument("--model", help="model bundle directory (default: the bundled model, "
                   "see --show-default-model)")  # fmt: skip
    p.add_argument("--mask", action="store_true",
                   help="write class-id masks instead of the overlay: PNGs into a directory, "
                   "or a lossless video when --out ends in .mp4/.mkv")  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity, 0..1")
    p.add_argument("--out-size", type=parse_size, metavar="WxH",
                   help="output resolution (default: the input's); 0 for one side keeps the "
                   "aspect ratio, e.g. 640x0. The model still sees the full-resolution frame")  # fmt: skip
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="network sources: seconds to wait for the connection and for each read "
                   "before the source counts as lost (exit 8); 0 waits forever")  # fmt: skip
    p.add_argument("--reconnect", type=int, default=0, metavar="N",
                   help="reopen a lost network source up to N times in a row, waiting 0.5, 1, "
                   "2 .. 8 s; the model state is reset and the output goes on")  # fmt: skip
    p.add_argument("--live", action="store_true",
                   help="newest frame only: frames that arrive while the model is busy are "
                   "dropped (counted in the summary); a file plays at its own frame rate")  # fmt: skip
    p.add_argument("--rtsp-transport", default="tcp", choices=RTSP_TRANSPORTS,
                   help="rtsp:// sources: transport")  # fmt: skip
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
    p.add_argument("--codec", default="libx264", choices=OVERLAY_CODECS,
                   help="overlay video encoder (libx265: smaller files, slower; libvpx-vp9 "
                   "for .webm/.mkv)")  # fmt: skip
    p.add_argument("--crf", type=int, default=23,
                   help="libx264/libx265 quality (0 lossless .. 51)")  # fmt: skip
    p.add_argument("--preset", default="veryfast", help="libx264/libx265 speed preset")
    p.add_argument(
        "--no-audio",
        action="store_true",
        help="drop the input's audio (by default it is copied untouched)",
    )
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (without it, an existing output is an error "
                   "and stays untouched)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="write a run summary as JSON")
    p.add_argument("--show-default-model", action="store_true",
                   help="print the bundled default model's path and exit")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
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


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in (50, 90, 99)} | {
        "max": round(float(arr.max()), 3)
    }


def _schedule(args: argparse.Namespace, bundle: Bundle) -> Schedule | None:
    """The bundle's key-frame schedule with the command-line overrides, or None (no flags)."""
    if not (args.schedule or args.key_interval or args.budget_ms):
        return None
    if bundle.manifest.family != "keyframe":
        raise BundleError(f"--schedule/--key-interval/--budget-ms need a keyframe bundle; "
                          f"this one is {bundle.manifest.family!r}")  # fmt: skip
    base = Schedule.from_manifest(bundle.manifest.schedule)
    try:
        return replace(base, policy=args.schedule or base.policy,
                       interval=args.key_interval or base.interval,
                       max_interval=max(base.max_interval, args.key_interval or 0),
                       budget_ms=args.budget_ms or base.budget_ms)  # fmt: skip
    except ValueError as exc:
        raise BundleError(f"bad key-frame schedule: {exc}") from exc


@dataclass
class LiveStats:
    """What the live-source wrappers did during a run (zero without --live/--reconnect)."""

    dropped: int = 0  # frames --live skipped because a newer one had arrived
    reconnects: int = 0  # times a lost source was opened again


def _open(args: argparse.Namespace, max_frames: int | None) -> tuple[VideoInfo, Iterator[Frame]]:
    network = is_network_source(args.input)
    return open_video(args.input, max_frames=max_frames,
                      thread_type="SLICE" if network or args.live else "AUTO",
                      timeout_s=args.timeout or None, rtsp_transport=args.rtsp_transport)  # fmt: skip


def run(args: argparse.Namespace) -> tuple[RunStats, VideoInfo, LiveStats]:
    # opened once (a pipe cannot be reopened); a bad input fails before the model loads
    info, frames = _open(args, args.max_frames)
    try:
        return _run(args, info, frames)
    finally:  # close the input if the run never started; the pipeline closes it otherwise
        with suppress(ValueError):  # "generator already executing": a decode thread that
            frames.close()  # did not stop in time (Ctrl-C) still owns it: closed when collected


def _run(args: argparse.Namespace, info: VideoInfo,
         frames: Iterator[Frame]) -> tuple[RunStats, VideoInfo, LiveStats]:  # fmt: skip
    bundle = load_bundle(args.model or default_bundle_path())
    segmenter = Segmenter(bundle, backend=args.backend, device=args.device,
                          threads=args.threads, schedule=_schedule(args, bundle))  # fmt: skip
    out = Path(args.out)
    lut = palette_lut(segmenter.manifest.palette)
    width, height = output_size(args.out_size, info.width, info.height)

    def labels(frame: Frame, result: Result) -> np.ndarray:
        return result.at_size(height, width).labels

    def overlay(frame: Frame, result: Result) -> np.ndarray:
        return blend(resize_image(frame.image, width, height), labels(frame, result), lut,
                     args.alpha)  # fmt: skip

    with ExitStack() as stack:
        if args.mask and out.suffix.lower() in MASK_VIDEO_SUFFIXES:
            sink = VideoWriter(out, width=width, height=height, fps=info.fps,
                               time_base=info.time_base, lossless=True,
                               overwrite=args.overwrite)  # fmt: skip
            render = labels
        elif args.mask:
            sink = MaskSequenceWriter(out, overwrite=args.overwrite)
            render = labels
        else:
            # a pipe or a live stream cannot be read a second time for its audio
            no_audio = args.no_audio or args.input == STDIN or args.live or args.reconnect
            sink = VideoWriter(out, width=width, height=height, fps=info.fps,
                               time_base=info.time_base, codec=args.codec, crf=args.crf,
                               preset=args.preset, audio_from=None if no_audio else args.input,
                               audio_timeout_s=args.timeout or None,
                               overwrite=args.overwrite)  # fmt: skip
            render = overlay
        stack.enter_context(sink)
        total = info.frame_count
        if args.max_frames is not None:
            total = min(total, args.max_frames) if total else args.max_frames
        bar = stack.enter_context(tqdm(total=total, unit="frame", disable=args.quiet,
                                       desc=Path(args.input).name, file=sys.stderr))  # fmt: skip
        source: Iterable[Frame] = frames
        reconnecting = newest = None
        if args.reconnect:
            source = reconnecting = ReconnectingSource(
                frames, lambda: _open(args, None)[1], retries=args.reconnect,
                backoff_s=RECONNECT_BACKOFF_S, max_frames=args.max_frames, name=args.input)  # fmt: skip
        with ExitStack() as live_source:
            if args.live:
                if not is_network_source(args.input) and args.input != STDIN:
                    source = paced(source)  # a file stands in for a camera
                source = newest = live_source.enter_context(LatestFrameSource(source))
            stats = segment_video(segmenter, source, sink, render, on_frame=lambda r: bar.update(1),
                                  depth=1 if args.live else QUEUE_DEPTH)  # fmt: skip
        live = LiveStats(dropped=newest.dropped if newest else 0,
                         reconnects=reconnecting.reconnects if reconnecting else 0)  # fmt: skip
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
    if not args.input or not args.out:
        parser.error("INPUT and --out are required (or use --show-default-model)")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be within 0..1, got {args.alpha}")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
    if not 0 <= args.crf <= 51:
        parser.error(f"--crf must be within 0..51, got {args.crf}")
    if args.timeout < 0:
        parser.error(f"--timeout must be >= 0, got {args.timeout}")
    if args.reconnect < 0:
        parser.error(f"--reconnect must be >= 0, got {args.reconnect}")
    if args.reconnect and not is_network_source(args.input):
        parser.error("--reconnect needs a network source (rtsp://, http://, ...)")
    out = Path(args.out)
    if not args.overwrite and (out.is_file() or out.is_dir() and any(out.iterdir())):
        print(f"vidseg-run: error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2  # before anything opens: the file stays untouched
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip

    def checked_run() -> tuple[RunStats, VideoInfo, LiveStats]:
        out_parent = Path(args.out).absolute().parent
        if not out_parent.is_dir():  # before loading the model: fail fast
            raise VideoIOError(f"output directory does not exist: {out_parent}")
        return run(args)

    with _sigterm_as_interrupt() as signals:
        code, outcome = run_for_cli(  # Ctrl-C here came before the loop (model load / open)
            "vidseg-run", checked_run, debug=args.debug,
            interrupted="interrupted before any frame was written")  # fmt: skip
    if signals and code == 130:  # SIGTERM: the same, with its own code
        return 128 + signals[-1]
    if outcome is None:
        return code
    stats, info, live = outcome
    width, height = output_size(args.out_size, info.width, info.height)
    summary = {
        "input": args.input, "output": args.out, "output_size": [width, height],
        "frames": stats.frames,
        "wall_s": round(stats.wall_s, 3), "fps": round(stats.fps, 2),
        "step_ms": _percentiles(stats.step_ms), "key_frames": stats.key_frames,
        "interrupted": stats.interrupted,
        "truncated": str(stats.truncated) if stats.truncated else None,
        "source_lost": isinstance(stats.truncated, SourceLostError),
        "dropped": live.dropped, "reconnects": live.reconnects, "state_resets": stats.resets,
    }  # fmt: skip
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as error:
            print(f"vidseg-run: error: cannot write {args.json}: {error.strerror or error}",
                  file=sys.stderr)  # fmt: skip
            return exit_code_for(VideoIOError(""))
    if stats.interrupted:
        print(f"vidseg-run: {'terminated' if signals else 'interrupted'} after {stats.frames} "
              f"frames; wrote {args.out}", file=sys.stderr)  # fmt: skip
        return 128 + signals[-1] if signals else 130
    if stats.truncated is not None:
        print(f"vidseg-run: error: {stats.truncated}; wrote the {stats.frames} decoded frames "
              f"to {args.out}", file=sys.stderr)  # fmt: skip
        return exit_code_for(stats.truncated)
    dropped = f", {live.dropped} stale frames dropped" if args.live else ""
    print(f"wrote {args.out}: {stats.frames} frames, {width}x{height}, "
          f"{stats.fps:.1f} fps end to end{dropped}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
