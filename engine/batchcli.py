"""``vidseg-batch INPUTS... --out DIR``: the command line of ``engine.batch.run_batch``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from vidseg.engine.clihelp import CliParser, HelpFormatter
from vidseg.engine.errors import run_for_cli, unwritable
from vidseg.engine.outfile import lines_to_stderr, write_text

logger = logging.getLogger(__name__)

from vidseg.engine.batch import BatchSummary, run_batch
from vidseg.engine.batchjobs import (
    DEFAULT_RETRIES,
    DEFAULT_WARMUP_FRAMES,
    RUN_MANIFEST,
    BatchOptions,
    Job,
    expand_inputs,
)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="vidseg-batch",
        description="Segment a collection of videos on Ray (one "
        "long-lived worker per slot, each video in order inside one worker).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, folders of videos, or .txt lists (one path per line)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help=f"output directory: NAME.mkv class ids (or NAME.mp4 with --overlay) "
        f"and the run manifest {RUN_MANIFEST}",
    )
    p.add_argument("--model", help="model bundle (default: the bundled model)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="actors (default: the cluster's CPUs)")
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs each actor reserves (fractions share a GPU)",
    )
    p.add_argument("--threads", type=int, default=1, help="inference threads per worker")
    p.add_argument(
        "--chunk-frames",
        type=int,
        metavar="N",
        help="split videos longer than N frames into chunks run in parallel",
    )
    p.add_argument(
        "--warmup-frames",
        type=int,
        default=DEFAULT_WARMUP_FRAMES,
        metavar="K",
        help="frames a chunk runs before its first output (state re-established)",
    )
    p.add_argument(
        "--overlay",
        action="store_true",
        help="write H.264 overlays (.mp4) instead of lossless class ids (.mkv)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help="extra attempts for a failed video before it is reported",
    )
    p.add_argument("--max-frames", type=int, help="only the first N frames of each video")
    p.add_argument(
        "--json", metavar="PATH", help="run summary: per-video FPS, throughput, failures"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no per-video lines")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("workers", "threads", "chunk_frames", "max_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup_frames < 0 or args.retries < 0 or args.gpus_per_worker < 0:
        parser.error("--warmup-frames, --retries and --gpus-per-worker must be >= 0")
    if args.chunk_frames and args.overlay:
        parser.error(
            "--chunk-frames writes class-id parts joined without re-encoding; "
            "it does not go with --overlay"
        )
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be within 0..1, got {args.alpha}")
    why = unwritable(args.json) if args.json else None
    if why:  # before the run, not after it
        parser.error(f"--json: {why}")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    options = BatchOptions(
        Path(args.out),
        args.model,
        args.overlay,
        args.alpha,
        args.chunk_frames,
        args.warmup_frames,
        args.retries,
        args.threads,
        args.max_frames,
    )

    def report(event: str, job: Job, actor: Any) -> None:
        if not args.quiet and event in ("failed", "lost"):
            print(f"vidseg-batch: {event}: {job.input} (attempt {job.attempt})", file=sys.stderr)

    def go() -> BatchSummary:
        from vidseg.engine.bundle import default_bundle_path, load_bundle

        load_bundle(args.model or default_bundle_path())  # a bad bundle fails before Ray starts
        inputs = expand_inputs(args.inputs)
        return run_batch(
            inputs,
            options,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            address=args.address,
            observer=report,
        )

    code, summary = run_for_cli(
        "vidseg-batch",
        go,
        debug=args.debug,
        interrupted="interrupted; finished videos are in the manifest",
    )
    if summary is None:
        return code
    with lines_to_stderr(args.json) as stdout:  # --json -: the summary alone on stdout
        if not args.quiet:
            for r in summary.records:
                state = f"error: {r.error}" if r.error else f"{r.frames} frames, {r.fps:.1f} FPS"
                print(f"{r.input} -> {r.output}: {state}")
        if args.json:
            text = json.dumps(summary.to_json(), indent=2) + "\n"
            write = lambda: write_text(args.json, text, stdout=stdout)  # noqa: E731
            code, _ = run_for_cli("vidseg-batch", write, debug=args.debug)
            if code:
                return code
        print(
            f"vidseg-batch: {len(summary.records) - len(summary.failed)} done, "
            f"{len(summary.failed)} failed, {len(summary.skipped)} skipped (finished before); "
            f"{summary.frames} frames in {summary.seconds:.1f} s = {summary.fps:.1f} FPS on "
            f"{summary.workers} worker(s), {summary.worker_restarts} restarted"
        )
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
