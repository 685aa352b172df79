"""Write a clip at another size (and, looped, of another length) for the end-to-end FPS runs.

    python benchmarks/resize_clip.py IN.mp4 OUT.mp4 --size 1280x720 [--frames 300]

Every frame of IN is scaled to the size (bicubic, by FFmpeg's swscale through PyAV) and encoded
as H.264 (libx264, CRF 18, preset medium: near-lossless, so decode cost is that of a normal
clip); IN is read again from the start until ``--frames`` are written (default: IN's length).
"""

from __future__ import annotations

import argparse
import sys

import av


def resize_clip(src: str, dst: str, width: int, height: int, frames: int | None) -> int:
    """Write ``frames`` frames of ``src`` (looped) at ``width`` x ``height`` to ``dst``;
    return how many were written."""
    with av.open(src) as probe:
        rate = probe.streams.video[0].average_rate or 25
    written = 0
    with av.open(dst, "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
        while frames is None or written < frames:
            read = 0
            with av.open(src) as inp:
                for frame in inp.decode(video=0):
                    scaled = frame.reformat(width, height, "yuv420p", interpolation="BICUBIC")
                    scaled.pts = None
                    out.mux(stream.encode(scaled))
                    read += 1
                    written += 1
                    if frames is not None and written >= frames:
                        break
            if read == 0 or frames is None:
                break
        out.mux(stream.encode(None))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--size", required=True, help="WIDTHxHEIGHT, e.g. 1280x720")
    p.add_argument("--frames", type=int, help="frames to write (IN looped; default IN's length)")
    args = p.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be WIDTHxHEIGHT, got {args.size!r}")
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        p.error(f"--size must be positive and even for yuv420p, got {args.size!r}")
    try:
        n = resize_clip(args.src, args.dst, width, height, args.frames)
    except (OSError, av.FFmpegError) as e:
        print(f"resize_clip: {e}", file=sys.stderr)
        return 1
    print(f"wrote {n} frames at {width}x{height} to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
