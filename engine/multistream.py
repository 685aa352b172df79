"""Several streams through one model in batched runs, each stream with its own state row.

Example:
    >>> seg = MultiStreamSegmenter(streams=3)
    >>> results = seg.step([frame_a, frame_b, None])   # stream 2 has no frame this tick
    >>> seg.reset(1)                                  # a cut on stream 1 only

Streams without a frame sit the run out: their state is neither fed nor changed, so a stream
that ends or resets leaves the others untouched. Not thread-safe: drive it from one thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from vidseg.engine.bundle import Bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.segmenter import FrameTimings, LoadedModel, Result, _ms, fit_outputs
from vidseg.engine.video import Frame


class MultiStreamSegmenter:
    """Batches one frame from each active stream into a single backend run.

    Args:
        bundle: bundle directory, ``Bundle``, or None for the default model.
        streams: number of stream slots (state rows).
    """

    def __init__(self, bundle: str | Path | Bundle | None = None, *, streams: int,
                 backend: str = "ort", device: str = "cpu",
                 threads: int | None = None) -> None:  # fmt: skip
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        self.model = LoadedModel(bundle, backend, device, threads)
        self.manifest = self.model.manifest
        if self.model.keyframe or self.manifest.aux_inputs:
            raise BundleError(f"multi-stream batching runs single-graph bundles without aux "
                              f"inputs; {self.manifest.family!r} is not supported yet")  # fmt: skip
        self.streams = streams
        self.state = self.model.new_state(batch=streams)
        self.cache = self.model.new_cache(batch=streams)
        self._frames = [0] * streams

    def reset(self, stream: int | None = None) -> None:
        """Zero the state of one stream (or of all when ``stream`` is None)."""
        self.state.reset(stream)

    def step(self, frames: Sequence[np.ndarray | None],
             timestamps: Sequence[float | None] | None = None) -> list[Result | None]:  # fmt: skip
        """One tick: ``frames[i]`` is stream i's frame ((H, W, 3) uint8) or None (idle).

        Returns one ``Result`` per stream (None for idle streams). Timings are those of the
        whole batched run, shared by its results.
        """
        if len(frames) != self.streams:
            raise ValueError(f"expected {self.streams} frames (None for idle), got {len(frames)}")
        rows = [i for i, f in enumerate(frames) if f is not None]
        results: list[Result | None] = [None] * self.streams
        if not rows:
            return results
        t0 = time.perf_counter_ns()
        batch = np.stack([self.model.to_input(frames[i]) for i in rows])  # type: ignore[arg-type]
        t1 = time.perf_counter_ns()
        labels, scores = self.model.run("step", batch, self.state, self.cache, rows=rows)
        t2 = time.perf_counter_ns()
        fitted = [fit_outputs(labels[k], None if scores is None else scores[k],
                              *frames[row].shape[:2]) for k, row in enumerate(rows)]  # type: ignore[union-attr]
        timings = FrameTimings(_ms(t0, t1), _ms(t1, t2), _ms(t2, time.perf_counter_ns()))
        for row, (lab, score) in zip(rows, fitted):
            ts = timestamps[row] if timestamps is not None else None
            results[row] = Result(lab, self._frames[row], ts, timings, scores=score)
            self._frames[row] += 1
        return results


def zip_streams(sources: Sequence[Iterable[Frame]]) -> Iterator[list[Frame | None]]:
    """Tick through several sources together: one frame from each per tick, None once a source
    has ended; stops when all have ended."""
    iterators = [iter(s) for s in sources]
    live = [True] * len(iterators)
    while True:
        tick: list[Frame | None] = []
        for i, it in enumerate(iterators):
            frame = next(it, None) if live[i] else None
            live[i] = live[i] and frame is not None
            tick.append(frame)
        if not any(live):
            return
        yield tick
