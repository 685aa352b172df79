"""How well chunked processing (``vidseg-batch --chunk-frames N --warmup-frames K``) agrees with
one sequential pass, per warm-up K.

    python benchmarks/research/chunk_warmup.py --frames CAMVID/val \\
        --clip CLIP.mp4 --chunk 30 --warmup 0 4 8 16

Each source is segmented once in order (state carried), then in chunks of ``--chunk`` frames,
each chunk starting from a reset state K frames early, stepped but not kept (what the batch
workers do through ``engine.run.segment``'s ``skip_frames``/``warmup_frames``). Agreement
is the share of pixels whose label equals the sequential
pass's, at the model's input size, over the frames of every chunk but the first (the first is
identical by construction); also the mean over each chunk's first output frame, the worst
frame, and how many frames the chunked runs stepped in all (the warm-up's cost). Torch-free.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from vidseg.engine.batchjobs import plan_chunks
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.video import read_frames


def load_frames(source: str, size: tuple[int, int], limit: int | None) -> list[np.ndarray]:
    """(h, w, 3) uint8 RGB frames at the model input ``size`` (h, w): a folder's images in
    name order, or a video's frames."""
    h, w = size
    path = Path(source)
    if path.is_dir():
        names = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg"))[:limit]
        return [
            cv2.resize(
                cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB),
                (w, h),
                interpolation=cv2.INTER_AREA,
            )
            for p in names
        ]
    return [f.image for f in read_frames(path, size=(w, h), max_frames=limit)]


def segment_range(
    segmenter: Segmenter,
    frames: list[np.ndarray],
    start: int = 0,
    stop: int | None = None,
    warmup: int = 0,
) -> list[np.ndarray]:
    """The labels of ``frames[start:stop]``, the state reset and carried from ``start - warmup``
    (the warm-up frames stepped, not kept)."""
    segmenter.reset()
    first = max(0, start - warmup)
    labels = [segmenter.step(frame).labels for frame in frames[first:stop]]
    return labels[start - first :]


def agreement(
    segmenter: Segmenter, frames: list[np.ndarray], chunk: int, warmups: list[int]
) -> dict:
    sequential = segment_range(segmenter, frames)
    chunks = plan_chunks(len(frames), chunk)
    rows = {}
    for k in warmups:
        chunked: list[np.ndarray] = []
        for start, stop in chunks:
            chunked += segment_range(segmenter, frames, start, stop, k)
        per_frame = np.array([np.mean(a == b) for a, b in zip(chunked, sequential)])
        later = per_frame[chunks[0][1] :] if len(chunks) > 1 else per_frame
        firsts = per_frame[[s for s, _ in chunks[1:]]] if len(chunks) > 1 else per_frame[:1]
        rows[k] = {
            "later_chunks_mean": float(later.mean()),
            "chunk_first_frame_mean": float(firsts.mean()),
            "worst_frame": float(later.min()),
            "all_frames_mean": float(per_frame.mean()),
            "frames_stepped": sum(stop - max(0, start - k) for start, stop in chunks),
        }
    return {"frames": len(frames), "chunk": chunk, "chunks": len(chunks), "by_warmup": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python benchmarks/research/chunk_warmup.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", help="bundle (default: the bundled model)")
    p.add_argument("--frames", action="append", default=[], help="a folder of frames (repeat)")
    p.add_argument("--clip", action="append", default=[], help="a video (repeat)")
    p.add_argument("--chunk", type=int, default=30, help="output frames per chunk")
    p.add_argument("--warmup", type=int, nargs="+", default=[0, 4, 8, 16])
    p.add_argument("--limit", type=int, help="first N frames of each source")
    p.add_argument("--json", help="write the table as JSON")
    args = p.parse_args(argv)
    segmenter = Segmenter(args.model)
    table = {}
    for source in args.frames + args.clip:
        frames = load_frames(source, segmenter.input_size, args.limit)
        table[source] = agreement(segmenter, frames, args.chunk, args.warmup)
        print(f"{source}: {len(frames)} frames, chunks of {args.chunk}")
        for k, row in table[source]["by_warmup"].items():
            print(
                f"  K={k:>2}: later chunks {100 * row['later_chunks_mean']:.2f} %, chunk first "
                f"frames {100 * row['chunk_first_frame_mean']:.2f} %, worst frame "
                f"{100 * row['worst_frame']:.2f} %, all frames "
                f"{100 * row['all_frames_mean']:.2f} %, {row['frames_stepped']} frames stepped"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
