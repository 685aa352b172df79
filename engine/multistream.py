"""Several streams through one model in batched runs, each stream with its own state row.

Example:
    >>> seg = MultiStreamSegmenter(streams=3)
    >>> results = seg.step([frame_a, frame_b, None])   # stream 2 has no frame this tick
    >>> seg.reset(1)                                  # a cut on stream 1 only

Streams without a frame sit the run out: their state is neither fed nor changed, so a stream
that ends or resets leaves the others untouched. Every family batches: each stream has its own
aux providers (NetWarp's flow) and its own key-frame scheduler; on a tick the streams due a key
frame run the key graph together and the others the current graph together (at most two runs).
Not thread-safe: drive it from one thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from vidseg.engine.bundle import Bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.loaded import LoadedModel
from vidseg.engine.schedule import KeyFrameScheduler, Schedule
from vidseg.engine.segmenter import Result
from vidseg.engine.timing import FrameTimings, elapsed_ms
from vidseg.engine.upsample import upsample
from vidseg.engine.video import Frame


class MultiStreamSegmenter:
    """Batches one frame from each active stream into a single backend run per graph role.

    Args:
        bundle: bundle directory, ``Bundle``, or None for the default model.
        streams: number of stream slots (state rows).
        schedule: key-frame policy of every stream (keyframe bundles; default: the manifest's).
        warmup: run the graphs on zero frames for every stream at load (state untouched).

    Raises:
        BundleError: the bundle is invalid, or its graphs fix a batch smaller than ``streams``.
    """

    def __init__(self, bundle: str | Path | Bundle | None = None, *, streams: int,
                 backend: str = "ort", device: str = "cpu", threads: int | None = None,
                 schedule: Schedule | None = None, warmup: bool = True) -> None:  # fmt: skip
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        # rows run in varying groups: no fixed buffers; on a device the state stays there
        # while every stream runs each tick, row operations copy it through the host
        self.model = LoadedModel(bundle, backend, device, threads, cuda_graph=False)
        fixed = self.model.fixed_batch
        if fixed is not None and streams > fixed:
            raise BundleError(f"{self.model.bundle.root}: its graphs take a fixed batch of "
                              f"{fixed}, so they cannot run {streams} streams together: "
                              "use one Segmenter per stream")  # fmt: skip
        if warmup:
            self.model.warmup(batch=streams)
        self.manifest = self.model.manifest
        self.streams = streams
        self.state = self.model.new_state(batch=streams)
        self.cache = self.model.new_cache(batch=streams)
        self.aux = [self.model.new_aux() for _ in range(streams)]
        sched = schedule or self.model.schedule
        self.schedulers = ([KeyFrameScheduler(sched) for _ in range(streams)]
                           if self.model.keyframe and sched else None)  # fmt: skip
        self._frames = [0] * streams

    def reset(self, stream: int | None = None) -> None:
        """Forget the past of one stream (or of all when ``stream`` is None): state and cache
        rows to zeros, its flow restarts, its next frame is a key frame."""
        for row in range(self.streams) if stream is None else (stream,):
            self.state.reset(row)
            self.cache.reset(row)
            for _, provider in self.aux[row]:
                provider.reset()
            if self.schedulers is not None:
                self.schedulers[row].reset()

    def step(self, frames: Sequence[np.ndarray | None],
             timestamps: Sequence[float | None] | None = None) -> list[Result | None]:  # fmt: skip
        """One tick: ``frames[i]`` is stream i's frame ((H, W, 3) uint8) or None (idle).

        Returns one ``Result`` per stream (None for idle streams). A result's timings are those
        of the batched run it was part of (pre and post shared by the whole tick).
        """
        if len(frames) != self.streams:
            raise ValueError(f"expected {self.streams} frames (None for idle), got {len(frames)}")
        results: list[Result | None] = [None] * self.streams
        rows = [i for i, f in enumerate(frames) if f is not None]
        if not rows:
            return results
        t0 = time.perf_counter_ns()
        inputs = {i: self.model.to_input(frames[i]) for i in rows}  # type: ignore[arg-type]
        aux = {i: {name: provider(inputs[i]) for name, provider in self.aux[i]} for i in rows}
        if self.schedulers is None:
            groups = {"step": rows}
        else:
            keys = {i: self.schedulers[i].is_key(inputs[i]) for i in rows}
            groups = {role: [i for i in rows if keys[i] == (role == "key")]
                      for role in ("key", "current")}  # fmt: skip
        pre_ms = elapsed_ms(t0, time.perf_counter_ns())
        for role, group in groups.items():
            if not group:
                continue
            t1 = time.perf_counter_ns()
            batch = np.stack([inputs[i] for i in group])
            names = [name for name, _ in self.aux[group[0]]]
            extra = {name: np.concatenate([aux[i][name] for i in group]) for name in names}
            subset = None if group == list(range(self.streams)) else group  # None: no row ops
            outputs = self.model.run(role, batch, self.state, self.cache, extra, rows=subset)
            t2 = time.perf_counter_ns()
            fitted = [upsample(out, *frames[i].shape[:2]) for out, i in zip(outputs, group)]  # type: ignore[union-attr]
            timings = FrameTimings(
                pre_ms, elapsed_ms(t1, t2), elapsed_ms(t2, time.perf_counter_ns())
            )
            for i, out, (lab, score) in zip(group, outputs, fitted):
                ts = timestamps[i] if timestamps is not None else None
                results[i] = Result(lab, self._frames[i], ts, timings, key_frame=role != "current",
                                    scores=score, outputs=out)  # fmt: skip
                self._frames[i] += 1
                if self.schedulers is not None:
                    self.schedulers[i].record(role == "key", timings.total_ms)
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
