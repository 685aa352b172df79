"""A robot/car perception loop around ``Segmenter.step``, with a clip standing in for a camera.

The clip is replayed at its own frame rate (``paced``) through ``LatestFrameSource``, so when a
step takes longer than a frame interval the loop skips to the newest frame instead of falling
behind, exactly as with a live camera. Prints per-frame latency and a summary.

    python samples/perception_loop.py [CLIP] [--model BUNDLE] [--frames N] [--budget-ms MS]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from vidseg.engine import Segmenter, VidsegError, default_bundle_path
from vidseg.engine.sources import LatestFrameSource, paced
from vidseg.engine.video import read_frames


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clip", nargs="?", default=str(default_bundle_path().parent / "dashcam.mp4"))
    p.add_argument("--model", help="bundle (default: the bundled model)")
    p.add_argument("--frames", type=int, default=50, help="stop after N camera frames")
    p.add_argument("--budget-ms", type=float, default=40.0, help="per-frame latency budget")
    args = p.parse_args(argv)
    try:
        segmenter = Segmenter(args.model)
        camera = paced(read_frames(args.clip, max_frames=args.frames, thread_type="SLICE"))
        latencies, over_budget = [], 0
        with LatestFrameSource(camera) as source:
            for frame in source:
                result = segmenter.step(frame.image, timestamp=frame.timestamp_s)
                road = float((result.labels == segmenter.manifest.classes.index("road")).mean())
                ms = result.timings.total_ms  # the step and its labels' upsampling, once read
                latencies.append(ms)
                over_budget += ms > args.budget_ms
                print(
                    f"t={frame.timestamp_s:6.3f}s  frame {frame.index:4d}  {ms:6.1f} ms  "
                    f"road {road * 100:4.1f}%"
                )
    except VidsegError as exc:
        print(f"perception_loop: error: {exc}", file=sys.stderr)
        return 1
    lat = np.asarray(latencies)
    print(
        f"processed {lat.size} of {source.received} camera frames (dropped {source.dropped}); "
        f"latency p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
        f"{over_budget} over the {args.budget_ms:.0f} ms budget"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
