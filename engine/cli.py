"""``vidseg-run``: segment a video file and write an overlay (or the label masks).

    vidseg-run input.mp4 --out seg.mp4                # overlay with the bundled default model
    vidseg-run input.mp4 --out masks/ --mask          # PNG label masks, one per frame
    vidseg-run input.mp4 --out masks.mkv --mask       # lossless label-id video (FFV1)
    vidseg-run input.mp4 --out masks.mp4 --mask       # palette-coloured masks for viewing
    vidseg-run input.mp4 --out seg.mp4 --mask-out ids.mkv --jsonl frames.jsonl --polygons
    vidseg-run 0 --out cam.mp4 --live --max-fps 10    # the first camera (/dev/video0)
    vidseg-run input.mp4 --out small.mp4 --out-size 640x0   # 640 wide, height keeps the aspect

The flags become ``engine.run.segment``'s outputs and options (``engine.runargs``); this module
parses, calls and reports. The output is written to a temporary file and renamed when complete,
so a failed run never leaves a half file under the final name. Ctrl-C finishes the frames in
flight, closes the file (a shorter but valid video) and exits 130. Errors are one line on
stderr with a non-zero exit code (see ``vidseg.engine.errors.EXIT_CODES``); ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from vidseg.engine.avinput import camera_source
from vidseg.engine.bundle import default_bundle_path, load_bundle
from vidseg.engine.errors import (
    SourceLostError,
    UsageError,
    VideoIOError,
    exit_code_for,
    run_for_cli,
)
from vidseg.engine.outfile import replaces_a_file, write_text
from vidseg.engine.outputs import existing_output, gui_problem
from vidseg.engine.pipeline import RunStats
from vidseg.engine.run import segment
from vidseg.engine.runargs import (
    build_parser,
    options_of,
    outputs_of,
    schedule_of,
    usage_problem,
)
from vidseg.engine.schedule import Schedule
from vidseg.engine.signals import sigterm_as_interrupt
from vidseg.engine.stats import percentiles

logger = logging.getLogger(__name__)
UNSUPPORTED_WITH_TRITON = ("model", "no_memory", "schedule", "key_interval", "budget_ms")


def _model(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[int, Any, Schedule | None]:
    """(0, what runs the frames: a loaded bundle or the Triton client, the schedule the flags
    ask for) or (exit code, None, None)."""
    if args.triton:  # the model runs on the server (engine/triton_client.py)
        from vidseg.engine.triton_client import TritonSegmenter

        used = [f"--{n.replace('_', '-')}" for n in UNSUPPORTED_WITH_TRITON if getattr(args, n)]
        if used:
            print(
                f"vidseg-run: error: --triton takes no {', '.join(used)} "
                "(the model is on the server)",
                file=sys.stderr,
            )
            return 2, None, None
        code, client = run_for_cli(
            "vidseg-run",
            lambda: TritonSegmenter(
                args.triton, args.triton_model, timeout_s=args.timeout or 30, resize=args.resize
            ),
            debug=args.debug,
        )
        return code, client, None
    code, bundle = run_for_cli(
        "vidseg-run", lambda: load_bundle(args.model or default_bundle_path()), debug=args.debug
    )
    if bundle is None:
        return code, None, None
    try:
        if args.scores and bundle.manifest.output_name("scores") is None:
            raise UsageError(
                "--scores needs a bundle exported with confidence (vidseg-export "
                "--scores); this one has none"
            )
        return code, bundle, schedule_of(args, bundle.manifest)
    except UsageError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.show_default_model:
        print(default_bundle_path())
        return 0
    if args.input:
        args.input = camera_source(args.input)  # "0" -> /dev/video0
    if problem := usage_problem(args):
        parser.error(problem)
    outputs = [output for _, output in outputs_of(args)]
    if not args.overwrite:  # before anything opens: the files stay untouched
        problems = [existing_output(output) for output in outputs]
        if args.json and replaces_a_file(args.json):
            problems.append(f"{args.json} exists; pass --overwrite to replace it")
        if problem := next(filter(None, problems), None):
            print(f"vidseg-run: error: {problem}", file=sys.stderr)
            return 2
    if args.show and (problem := gui_problem()):
        print(f"vidseg-run: error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    code, model, schedule = _model(args, parser)
    if model is None:
        return code
    options = replace(options_of(args), schedule=schedule)

    def run() -> RunStats:
        if args.json and not Path(args.json).absolute().parent.is_dir():
            raise VideoIOError(f"output directory does not exist: {Path(args.json).parent}")
        return _checked(segment(args.input, outputs, model, options))

    try:
        with sigterm_as_interrupt() as signals:
            code, stats = run_for_cli(  # Ctrl-C here came before the loop (model load / open)
                "vidseg-run",
                run,
                debug=args.debug,
                interrupted="interrupted before any frame was written",
            )
    finally:
        if args.triton:
            model.close()  # ends the server's sequence
    if signals and code == 130:  # SIGTERM: the same, with its own code
        return 128 + signals[-1]
    if stats is None:
        return code
    return _report(args, stats, model, signals)


def _checked(stats: RunStats) -> RunStats:
    """``stats`` of a run that wrote frames; else the reason none were written, raised."""
    if not stats.frames:
        if stats.truncated is not None:
            raise stats.truncated
        if stats.interrupted:
            raise KeyboardInterrupt
        raise VideoIOError("no frame to segment: nothing written")
    return stats


def _report(args: argparse.Namespace, stats: RunStats, model: Any, signals: list[int]) -> int:
    """The run's summary (``--json``) and its last line on stderr; the exit code."""
    paths = [str(Path(o.path)) for _, o in outputs_of(args) if hasattr(o, "path")]
    width, height = stats.output_size or (0, 0)
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
        "dropped": stats.dropped,
        "reconnects": stats.reconnects,
        "state_resets": stats.resets,
        "cpu": stats.cpu.as_json() if stats.cpu else None,
    }
    where = ""
    if args.triton:
        summary["triton"] = {
            "server": args.triton,
            "model": args.triton_model,
            "sequence_id": model.sequence_id,
        }
        where = f", on triton {args.triton} ({args.triton_model}, sequence {model.sequence_id})"
    if args.json:
        try:
            write_text(args.json, json.dumps(summary, indent=2) + "\n")
        except VideoIOError as error:
            print(f"vidseg-run: error: {error}", file=sys.stderr)
            return exit_code_for(error)
    written = ", ".join(paths)
    if stats.interrupted:
        print(
            f"vidseg-run: {'terminated' if signals else 'interrupted'} after {stats.frames} "
            f"frames; wrote {written}",
            file=sys.stderr,
        )
        return 128 + signals[-1] if signals else 130
    if stats.truncated is not None:
        print(
            f"vidseg-run: error: {stats.truncated}; wrote the {stats.frames} decoded frames "
            f"to {written}",
            file=sys.stderr,
        )
        return exit_code_for(stats.truncated)
    dropped = f", {stats.dropped} stale frames dropped" if args.live else ""
    if args.stats_every and stats.cpu:  # the run's status lines end with its CPU per frame
        print(f"vidseg-run: {stats.cpu.line()}", file=sys.stderr)
    print(
        f"wrote {written}: {stats.frames} frames, {width}x{height}, "
        f"{stats.fps:.1f} fps end to end{dropped}{where}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
