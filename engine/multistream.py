"""Several streams through one model in batched runs, each stream with its own state row.

Example:
    >>> seg = MultiStreamSegmenter(streams=3)
    >>> results = seg.step([frame_a, frame_b, None])   # stream 2 has no frame this tick
    >>> seg.reset(1)                                  # a cut on stream 1 only

Streams without a frame sit the run out: their state is neither fed nor changed, so a stream
that ends or resets leaves the others untouched. Every bundle batches. Each stream goes the way
a ``Segmenter``'s does, by the same code (``engine.slot``): its frame fitted by the resize
mode, its own aux providers (e.g. optical flow), role planner (``engine.roles``) and
telemetry, its state row reset where a ``Segmenter``'s state would be (``engine.guard``: a
frame with ``discontinuity``, a change of frame size, NaN or Inf in its state row, a stale
memory; before every frame without ``memory``), the other rows untouched; its ``Result`` the
same lazy one. On a tick the streams due a key frame run the key graph together and the others
the current graph together (at most two runs). Not thread-safe: drive it from one thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from vidseg.engine.bundle import Bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.frame import Frame
from vidseg.engine.geometry import check_resize
from vidseg.engine.loaded import LoadedModel
from vidseg.engine.refresh import Refresh
from vidseg.engine.result import Result
from vidseg.engine.schedule import Schedule
from vidseg.engine.slot import StreamSlot, prepare
from vidseg.engine.telemetry import StatsSnapshot, Telemetry
from vidseg.engine.timing import FrameTimings, elapsed_ms


class MultiStreamSegmenter:
    """Batches one frame from each active stream into a single backend run per graph role.

    Args:
        bundle: bundle directory, ``Bundle``, or None for the default model.
        streams: number of stream slots (state rows).
        schedule: key-frame policy of every stream (bundles with key frames; default: the
            manifest's).
        warmup: run the graphs on zero frames for every stream at load (state untouched).
        resize, memory, refresh: as ``Segmenter``'s, for every stream.

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
        resize: str = "stretch",
        memory: bool = True,
        refresh: Refresh | None = None,
    ) -> None:
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        self.resize = check_resize(resize)
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
        self.slots = [
            StreamSlot(
                self.model,
                self.state,
                self.cache,
                row,
                name=f"stream {row}",
                device=device,
                schedule=schedule,
                memory=memory,
                refresh=refresh,
            )
            for row in range(streams)
        ]
        # each stream's aux providers, planner, guard and telemetry (``engine.slot``)
        self.aux = [s.aux for s in self.slots]
        self.planners = [s.planner for s in self.slots]
        self.guards = [s.guard for s in self.slots]
        self.telemetry = [s.telemetry for s in self.slots]

    def reset(self, stream: int | None = None) -> None:
        """Forget the past of one stream (or of all when ``stream`` is None): state and cache
        rows to zeros, its flow restarts, its next frame is a key frame."""
        for row in range(self.streams) if stream is None else (stream,):
            self.slots[row].forget()

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

        Returns one ``Result`` per stream (None for idle streams), at its frame's size (taken
        there when read, as ``Segmenter.step``'s). A result's timings are those of the batched
        run it was part of (``pre_ms`` shared by the whole tick); its ``age_ms`` runs from the
        frame's capture time (a ``Frame``'s, else this call).

        Raises:
            ValueError: not one entry per stream.
            FrameError: a frame is not an (H, W, 3) uint8 array with H, W >= 1.
        """
        if len(frames) != self.streams:
            raise ValueError(f"expected {self.streams} frames (None for idle), got {len(frames)}")
        results: list[Result | None] = [None] * self.streams
        t0 = time.perf_counter_ns()
        # every frame checked and fitted before any stream's state moves
        prepared = {
            i: prepare(self.model.input_size, self.resize, f)
            for i, f in enumerate(frames)
            if f is not None
        }
        stamps, aux, chosen = {}, {}, {}
        for i, frame in prepared.items():
            given = None if timestamps is None else timestamps[i]
            stamps[i] = frame.timestamp if given is None else given
            aux[i], chosen[i] = self.slots[i].admit(frame, stamps[i])
        groups = {r: [i for i in prepared if chosen[i] == r] for r in self.model.frame_roles}
        pre_ms = elapsed_ms(t0, time.perf_counter_ns())
        for role, group in groups.items():
            if not group:
                continue
            t1 = time.perf_counter_ns()
            batch = np.stack([prepared[i].image for i in group])
            names = [name for name, _ in self.aux[group[0]]]
            extra = {name: np.concatenate([aux[i][name] for i in group]) for name in names}
            subset = None if group == list(range(self.streams)) else group  # None: no row ops
            outputs = self.model.run(role, batch, self.state, self.cache, extra, rows=subset)
            timings = FrameTimings(pre_ms, elapsed_ms(t1, time.perf_counter_ns()), 0.0)
            for i, out in zip(group, outputs):
                frame, slot = prepared[i], self.slots[i]
                results[i] = slot.result(role, out, frame, timings, stamps[i], frame.captured_ns)
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
