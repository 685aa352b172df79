"""What the engine computes on the CPU beside the graph, per frame: each aux input's cost.

    python -m vidseg.benchmarks.aux_cost [--model BUNDLE] [--input CLIP] [--frames 200] [--json OUT]

A bundle's aux inputs (DIS flow, the tile cycle, the tile view) are computed by the engine on
the CPU even when the graph runs on a GPU (``--device cuda``): this is the CPU work per stream
that a GPU does not take. Each provider is called on the clip's frames in order, as
``Segmenter.step`` calls it (the frames resized to the model input first, untimed), and its
wall and process CPU time per frame (OpenCV may use worker threads) is reported (p50, p90,
mean), with the environment.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from vidseg.benchmarks.report import environment
from vidseg.engine.bundle import default_bundle_path
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.video import read_frames


def aux_cost(model: str | None, clip: str, frames: int) -> dict[str, object]:
    """Per-provider wall and CPU ms per frame over ``frames`` frames of ``clip``."""
    seg = Segmenter(model, warmup=False, threads=1)
    inputs = [seg.prepare(f).image for f in read_frames(clip, max_frames=frames)]
    report: dict[str, object] = {
        "model": str(model or default_bundle_path()),
        "input_size": list(seg.input_size),
        "frames": len(inputs),
        "providers": {},
    }
    for name, provider in seg.aux:
        provider.reset()
        wall, cpu = [], []
        for x in inputs:
            w0, c0 = time.perf_counter_ns(), time.process_time_ns()
            provider(x)
            cpu.append((time.process_time_ns() - c0) / 1e6)
            wall.append((time.perf_counter_ns() - w0) / 1e6)
        report["providers"][name] = {
            "kind": type(provider).__name__,
            **{f"wall_{k}": v for k, v in _summary(wall).items()},
            **{f"cpu_{k}": v for k, v in _summary(cpu).items()},
        }
    return report


def _summary(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms[1:] or ms)  # the first call (zeros after a reset) is no steady frame
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="bundle directory (default: the bundled model)")
    p.add_argument("--input", help="clip (default: the sample clip)")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    report = {
        "environment": environment(1),
        **aux_cost(
            args.model, args.input or str(default_bundle_path().parent / "dashcam.mp4"), args.frames
        ),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
