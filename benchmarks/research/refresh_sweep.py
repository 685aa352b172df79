"""Carried against reset with the frames far apart, for several refresh rules: how the refresh
thresholds (``engine.refresh``) were chosen.

``vidseg-eval`` scores one order and one rule per run; this runs a grid of them in one process,
the labelled frames read once, each cell scored exactly as ``vidseg-eval`` scores it
(``evaluate_bundle`` on the frames ``stream_order`` feeds, timestamps at ``--frame-rate``):

    python benchmarks/research/refresh_sweep.py --model BUNDLE --frames CAMVID/val \\
        --labels CAMVID/valannot --orders 1 2 4 8 s0 --rules off reset gap=0.5 mismatch=0.08

Orders: ``N`` every Nth frame of each drive, ``sN`` shuffled with seed N. Rules: ``off`` (the
memory always carried), ``reset`` (reset before every frame: its per-frame path), ``default``
(``Refresh()``), ``gap=S`` (time alone), ``mismatch=M`` (content alone, no timestamps given),
``gap=S,mismatch=M`` (both). One JSON line per cell on stdout (and appended to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vidseg.benchmarks.accuracy import evaluate_bundle
from vidseg.benchmarks.evaluate import stream_order
from vidseg.engine import Segmenter
from vidseg.engine.refresh import Refresh
from vidseg.models.data import labelled_frame_paths, read_labelled_frame


def parse_rule(rule: str) -> tuple[Refresh, bool, bool]:
    """(the refresh, whether timestamps are given, whether the state is carried) of a rule."""
    if rule == "off":
        return Refresh.off(), True, True
    if rule == "reset":
        return Refresh.off(), False, False
    if rule == "default":
        return Refresh(), True, True
    parts = dict(part.split("=", 1) for part in rule.split(","))
    if not parts or set(parts) - {"gap", "mismatch"}:
        raise ValueError(f"unknown rule {rule!r}")
    gap = float(parts["gap"]) if "gap" in parts else None
    mismatch = float(parts["mismatch"]) if "mismatch" in parts else None
    return Refresh(max_gap_s=gap, max_mismatch=mismatch), gap is not None, True


def parse_order(order: str) -> tuple[int, int | None]:
    """(stride, shuffle seed) of an order: ``N`` or ``sN``."""
    return (1, int(order[1:])) if order.startswith("s") else (int(order), None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="bundle directory")
    p.add_argument("--frames", required=True, help="labelled frames (vidseg-eval --frames)")
    p.add_argument("--labels", required=True, help="their labels (vidseg-eval --labels)")
    p.add_argument("--orders", nargs="+", default=["1", "s0", "4", "8"])
    p.add_argument("--rules", nargs="+", default=["off", "reset", "default"])
    p.add_argument("--frame-rate", type=float, default=15.0, help="the frames' rate, in order")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="append the JSON lines here too")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pairs = labelled_frame_paths(args.frames, args.labels)
    frames = {image: read_labelled_frame(image, label) for image, label in pairs}
    for rule in args.rules:
        refresh, timed, carried = parse_rule(rule)
        segmenter = Segmenter(args.model, threads=args.threads, refresh=refresh)
        for order in args.orders:
            stride, shuffle = parse_order(order)
            fed = stream_order(pairs, stride, shuffle, args.frame_rate)
            before = segmenter.refreshes
            score = evaluate_bundle(
                segmenter,
                [frames[image] for image, _, _ in fed],
                carry_state=carried,
                timestamps=[t for _, _, t in fed] if timed else None,
            )
            row = {
                "model": Path(args.model).name,
                "rule": rule,
                "order": order,
                "frames": score.frames,
                "miou": round(score.metrics.miou, 2),
                "refreshed": segmenter.refreshes - before,
            }
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as out:
                    out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
