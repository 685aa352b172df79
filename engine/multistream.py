"""Several streams through one model in batched runs, each stream with its own state row.

Example:
    >>> seg = MultiStreamSegmenter(streams=3)
    >>> results = seg.step([frame_a, frame_b, None])   # stream 2 has no frame this tick
    >>> seg.reset(1)                                  # a cut on stream 1 only

Streams without a frame sit the run out: their state is neither fed nor changed, so a stream
that ends or resets leaves the others untouched. Every bundle batches: each stream has its own
aux providers (e.g. optical flow) and its own role planner (``engine.roles``); on a tick the
streams due a key frame run the key graph together and the others the current graph together
(at most two runs).
Each stream's state is reset where a ``Segmenter``'s would be (``engine.guard``: a frame with
``discontinuity``, a change of frame size, NaN or Inf in its state row, a stale memory; before
every frame without ``memory``), the other rows untouched. Not thread-safe: drive it from one
thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from vidseg.engine.bundle import Bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.frame import Frame
from vidseg.engine.guard import StreamGuard
from vidseg.engine.loaded import LoadedModel, check_frame
from vidseg.engine.refresh import Refresh
from vidseg.engine.roles import RolePlanner
from vidseg.engine.schedule import Schedule
from vidseg.engine.segmenter import Result
from vidseg.engine.telemetry import StatsSnapshot, Telemetry
from vidseg.engine.timing import FrameTimings, elapsed_ms
from vidseg.engine.upsample import upsample


class MultiStreamSegmenter:
    """Batches one frame from each active stream into a single backend run per graph role.

    Args:
        bundle: bundle directory, ``Bundle``, or None for the default model.
        streams: number of stream slots (state rows).
        schedule: key-frame policy of every stream (bundles with key frames; default: the
            manifest's).
        warmup: run the graphs on zero frames for every stream at load (state untouched).
        memory, refresh: as ``Segmenter``'s, for every stream.

    Raises:
        BundleError: the bundle is invalid, or its graphs fix a batch smaller than ``streams``.
    """

    def __init__(
        self,
        bundle: str | Path | Bundle | None = None,
        *,
        streams: int,
        backend: str = "ort",
        device: str = "cpu",
        threads: int | None = None,
        schedule: Schedule | None = None,
        warmup: bool = True,
        memory: bool = True,
        refresh: Refresh | None = None,
    ) -> None:
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        # rows run in varying groups: no fixed buffers; on a device the state stays there
        # while every stream runs each tick, row operations copy it through the host
        self.model = LoadedModel(bundle, backend, device, threads, cuda_graph=False)
        fixed = self.model.fixed_batch
        if fixed is not None and streams > fixed:
            raise BundleError(
                f"{self.model.bundle.root}: its graphs take a fixed batch of "
                f"{fixed}, so they cannot run {streams} streams together: "
                "use one Segmenter per stream"
            )
        if warmup:
            self.model.warmup(batch=streams)
        self.manifest = self.model.manifest
        self.streams = streams
        self.state = self.model.new_state(batch=streams)
        self.cache = self.model.new_cache(batch=streams)
        self.aux = [self.model.new_aux() for _ in range(streams)]
        self.planners = [self.model.planner(schedule) for _ in range(streams)]
        self._frames = [0] * streams
        self.guards = [
            StreamGuard(
                device, f"stream {i}", memory=memory, refresh=refresh, carries=self.model.carries
            )
            for i in range(streams)
        ]
        self.telemetry = [Telemetry() for _ in range(streams)]

    def reset(self, stream: int | None = None) -> None:
        """Forget the past of one stream (or of all when ``stream`` is None): state and cache
        rows to zeros, its flow restarts, its next frame is a key frame."""
        for row in range(self.streams) if stream is None else (stream,):
            self.guards[row].forget()
            self._clear(row)

    def _clear(self, row: int, count: bool = True) -> None:
        if count:
            self.telemetry[row].note_reset()
        self.state.reset(row)
        self.cache.reset(row)
        for _, provider in self.aux[row]:
            provider.reset()
        self.planners[row].reset()

    def stats(self, stream: int | None = None) -> StatsSnapshot:
        """Frames, resets, drops, and step/age percentiles and FPS over the last frames, as
        ``Segmenter.stats``: of one stream, or of all together (None; ``fps`` then counts the
        results of every stream)."""
        if stream is None:
            return Telemetry.combined(self.telemetry)
        return self.telemetry[stream].snapshot()

    def note_dropped(self, stream: int, frames: int) -> None:
        """Count ``frames`` stream ``stream``'s source dropped before they reached ``step``."""
        self.telemetry[stream].note_dropped(frames)

    def _aux(self, row: int, image: np.ndarray) -> dict[str, np.ndarray]:
        """Stream ``row``'s aux inputs for its frame; where its providers find the frame
        unexplained by its past (``StreamGuard.unexplained``), after resetting the stream."""
        aux = {name: provider(image) for name, provider in self.aux[row]}
        if self.guards[row].unexplained(self._frames[row], (p for _, p in self.aux[row])):
            self._clear(row)
            aux = {name: provider(image) for name, provider in self.aux[row]}
        return aux

    @property
    def refreshes(self) -> list[int]:
        """Per stream: resets because its memory was stale (``engine.refresh``)."""
        return [g.refreshes for g in self.guards]

    @property
    def nonfinite_resets(self) -> list[int]:
        """Per stream: resets because its state row held NaN or Inf."""
        return [g.nonfinite_resets for g in self.guards]

    @property
    def cut_resets(self) -> list[int]:
        """Per stream: resets because a frame said ``discontinuity`` or changed size."""
        return [g.cut_resets for g in self.guards]

    def step(
        self,
        frames: Sequence[np.ndarray | Frame | None],
        timestamps: Sequence[float | None] | None = None,
    ) -> list[Result | None]:
        """One tick: ``frames[i]`` is stream i's frame ((H, W, 3) uint8, or a decoded
        ``Frame`` with its timestamp, capture time and ``discontinuity``) or None (idle).

        Returns one ``Result`` per stream (None for idle streams). A result's timings are those
        of the batched run it was part of (pre and post shared by the whole tick); its
        ``age_ms`` runs from the frame's capture time (a ``Frame``'s, else this call).

        Raises:
            ValueError: not one entry per stream.
            FrameError: a frame is not an (H, W, 3) uint8 array with H, W >= 1.
        """
        if len(frames) != self.streams:
            raise ValueError(f"expected {self.streams} frames (None for idle), got {len(frames)}")
        results: list[Result | None] = [None] * self.streams
        rows = [i for i, f in enumerate(frames) if f is not None]
        if not rows:
            return results
        t0 = time.perf_counter_ns()
        now = time.monotonic_ns()
        images, captured, stamps = {}, {}, {}
        for i in rows:
            item = frames[i]
            is_frame = isinstance(item, Frame)
            images[i] = check_frame(item.image if is_frame else item)
            captured[i] = item.captured_ns if is_frame and item.captured_ns is not None else now
            stamps[i] = timestamps[i] if timestamps is not None else None
            if stamps[i] is None and is_frame:
                stamps[i] = item.timestamp_s
            guard, index = self.guards[i], self._frames[i]
            cut = guard.cut(index, images[i].shape[:2], is_frame and item.discontinuity)
            reset = cut or guard.poisoned(index, self.state, self.cache, row=i)
            if guard.stale(index, stamps[i], fresh=reset) or reset:
                self._clear(i)
            if not guard.memory:
                self._clear(i, count=False)
        inputs = {i: self.model.to_input(images[i]) for i in rows}
        aux = {i: self._aux(i, inputs[i]) for i in rows}
        chosen = {i: self.planners[i].role(inputs[i]) for i in rows}
        groups = {role: [i for i in rows if chosen[i] == role] for role in self.model.frame_roles}
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
            fitted = [upsample(out, *images[i].shape[:2]) for out, i in zip(outputs, group)]
            t3 = time.perf_counter_ns()
            timings = FrameTimings(pre_ms, elapsed_ms(t1, t2), elapsed_ms(t2, t3))
            done = time.monotonic_ns()
            for i, out, (lab, score) in zip(group, outputs, fitted):
                age_ms = elapsed_ms(captured[i], done)
                results[i] = Result(
                    lab,
                    self._frames[i],
                    stamps[i],
                    timings,
                    key_frame=RolePlanner.full_frame(role),
                    scores=score,
                    outputs=out,
                    age_ms=age_ms,
                    captured_ns=captured[i],
                )
                self.telemetry[i].record(timings.total_ms, age_ms, t3)
                self._frames[i] += 1
                self.planners[i].record(role, timings.total_ms)
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
