"""Decode -> segment -> render -> encode with decode, render and encode in their own threads.

The model runs on the calling thread (a stateful model needs no locks, as in supervision's
``process_video``); decoding, rendering and encoding run in worker threads joined by bounded
queues, so a slow stage applies back-pressure instead of filling memory. The model thread does
nothing but run the model: the decode thread also does the stateless part of each step
(``Segmenter.prepare``: the resize to the model's input and, for a bundle split into
``encode`` + ``step`` graphs, the encoder), the render thread brings the labels back to the
frame's size (``Result.at_size``) and renders, and the encode thread writes. A worker's error
travels through its queue and is re-raised in the caller, after every item produced before it:
a truncated source still delivers (and writes) all frames that decoded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, Generic, Iterable, Iterator, Protocol, TypeVar

from vidseg.engine.cpuclock import CpuClock, CpuReport
from vidseg.engine.errors import TruncatedVideoError
from vidseg.engine.frame import Frame
from vidseg.engine.segmenter import Result
from vidseg.engine.signals import interrupts_as_stop
from vidseg.engine.telemetry import SourceDrops

logger = logging.getLogger(__name__)
T = TypeVar("T")
_DONE = object()
QUEUE_DEPTH = 4  # frames in flight per queue: enough to hide jitter, small enough for latency


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """Runs ``source`` in a worker thread, ``depth`` items ahead; iterate it on the consumer.

    Context manager: leaving it (normally, by error or Ctrl-C) stops the worker and joins it.
    The worker checks a stop event between items and closes ``source`` (a generator: its
    container) itself on the way out. A worker still busy inside ``source`` after
    ``join_timeout_s`` (a read blocked on a silent network source) is logged as a warning naming
    the thread; it stops, and closes ``source``, as soon as that item arrives.
    """

    join_timeout_s = 5.0  # how long leaving waits for the worker

    def __init__(self, source: Iterable[T], depth: int = QUEUE_DEPTH, name: str = "prefetch"):
        self._source = source
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            try:
                for item in self._source:
                    if self._stop.is_set() or not self._put(item):
                        return
            finally:  # here: a generator cannot be closed while another thread runs it
                close = getattr(self._source, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # forwarded to the consumer, never lost
            self._put(_Failure(exc))
            return
        self._put(_DONE)

    def __enter__(self) -> "Prefetch[T]":
        self._thread.start()
        return self

    def __iter__(self) -> Iterator[T]:
        return self.until(None)

    def until(self, stop: threading.Event | None) -> Iterator[T]:
        """The items, in order; ends early once ``stop`` is set (checked every 0.1 s while
        waiting for the worker: a silent live source does not hold it)."""
        while stop is None or not stop.is_set():
            try:
                item = self._queue.get(timeout=None if stop is None else 0.1)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.join_timeout_s)
        if self._thread.is_alive():
            logger.warning(
                "thread %r is still inside its source %.1f s after the pipeline "
                "stopped; it will stop at its next item",
                self._thread.name,
                self.join_timeout_s,
            )


class Stepper(Protocol):
    """One stream's model as the frame loop runs it: ``Segmenter``, or the Triton client.

    ``prepare`` is stateless and runs in the decode thread (the resize to the model input, a
    split bundle's encoder); ``step`` carries the state and runs on the calling thread, in frame
    order; ``reset`` forgets the state (a new stream). ``cut_resets`` counts the resets the
    stepper made itself (a frame with ``discontinuity``, a change of frame size), and
    ``note_dropped`` tells it of frames the source skipped (its telemetry)."""

    @property
    def cut_resets(self) -> int: ...

    def prepare(self, frame: Frame) -> Any: ...

    def step(self, prepared: Any) -> Result: ...

    def reset(self) -> None: ...

    def note_dropped(self, frames: int) -> None: ...


class Sink(Protocol):
    """Where rendered frames go (``VideoWriter``, ``MaskSequenceWriter``, ``FrameOutputs``)."""

    def write(self, image: Any, pts: int | None = None) -> None: ...


class _Stage:
    """One worker thread that calls ``work(item)`` for each submitted item, in order.

    An error in ``work`` is kept in ``error``: later items are skipped, and the next ``submit``
    re-raises it. ``stop`` waits until every submitted item is done (it does not raise).
    """

    def __init__(self, work: Callable[[Any], None], name: str, depth: int) -> None:
        self._work_item = work
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self.error is None:
                try:
                    self._work_item(item)
                except BaseException as exc:
                    self.error = exc

    def submit(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def stop(self) -> None:
        """Wait for every submitted item (skipped after an error), then end the thread."""
        self._queue.put(_DONE)
        self._thread.join()


class BackgroundWriter:
    """Renders and writes frames in two worker threads: ``render`` in one ("render": labels
    to the frame's size, the overlay), ``sink.write(image, pts)`` in the next ("encode").

    On a GPU machine the encoder alone keeps up with the model (libx264 veryfast: 137 FPS at
    720p on the 16-core H200 host), and the crisp upsampling plus the overlay in the same
    thread would cost another ~5 ms per 720p frame; as two stages they overlap. Both release
    the GIL for their heavy parts. ``written`` counts frames the sink accepted. An error in
    either stage is re-raised on the next ``submit`` or on ``close``; ``close`` waits until
    every queued frame is written. Each stage's CPU time goes to ``clock``.
    """

    def __init__(
        self,
        sink: Sink,
        render: Callable[[Frame, Result], Any],
        depth: int = QUEUE_DEPTH,
        clock: CpuClock | None = None,
    ) -> None:
        self._sink = sink
        self._render = render
        self._clock = clock or CpuClock()
        self.written = 0
        self._encode = _Stage(self._write, "encode", depth)
        self._draw = _Stage(self._render_one, "render", depth)

    def _write(self, item: tuple[Any, int | None]) -> None:
        t0 = time.thread_time_ns()
        self._sink.write(*item)
        self._clock.add("encode", t0)
        self.written += 1

    def _render_one(self, item: tuple[Frame, Result]) -> None:
        frame, result = item
        t0 = time.thread_time_ns()
        image = self._render(frame, result)
        self._clock.add("render", t0)
        self._encode.submit((image, frame.pts))

    def _raise(self) -> None:
        for stage in (self._draw, self._encode):
            if stage.error is not None:
                raise stage.error

    def submit(self, frame: Frame, result: Result) -> None:
        self._raise()
        self._draw.submit((frame, result))

    def close(self) -> None:
        self._draw.stop()
        self._encode.stop()
        self._raise()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: finish what is queued without masking the original error
            self._draw.stop()
            self._encode.stop()


@dataclass
class RunStats:
    """What a video run did; ``interrupted`` when Ctrl-C stopped it early."""

    frames: int = 0  # frames written to the sink
    wall_s: float = 0.0
    interrupted: bool = False
    truncated: TruncatedVideoError | None = None  # the source ended early; output kept
    step_ms: list[float] = field(default_factory=list)  # Segmenter.step (pre + infer) per frame
    key_frames: int = 0  # frames where the full model ran (every frame unless keyframe)
    resets: int = 0  # state resets mid-run: a reconnected source, a change of frame size
    dropped: int = 0  # frames a live source skipped because a newer one had arrived
    reconnects: int = 0  # times a lost source was opened again
    output_size: tuple[int, int] | None = None  # (W, H) of the first video output as written
    cpu: CpuReport | None = None  # CPU time per stage and frame written (engine.cpuclock)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def _with_input(
    frames: Iterable[Frame], prepare: Callable[[Frame], Any], clock: CpuClock
) -> Iterator[tuple[Frame, Any]]:
    """(frame, prepared model input) pairs, the reading and preparing timed as ``decode``;
    closing this closes ``frames`` (a decoder's container)."""
    try:
        t0 = time.thread_time_ns()
        for frame in frames:
            item = frame, prepare(frame)
            clock.add("decode", t0)
            yield item
            t0 = time.thread_time_ns()
        clock.add("decode", t0)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def segment_video(
    segmenter: Stepper,
    frames: Iterable[Frame],
    sink: Sink,
    render: Callable[[Frame, Result], Any],
    on_frame: Callable[[Result], None] | None = None,
    depth: int = QUEUE_DEPTH,
    warmup: int = 0,
) -> RunStats:
    """Segment ``frames`` in order and write ``render(frame, result)`` for each to ``sink``:
    the frame loop every run goes through (``engine.run.segment`` builds its sources and sinks).

    ``render`` gets the result at the frame's size and must return a new image each time (the
    encode thread may still hold the last one). ``on_frame(result)`` is called from the render
    thread, in frame order, as each frame is rendered (a progress bar, a metric). ``depth``:
    decoded frames queued ahead of the model (1 for a live source, where a queued frame is a
    stale one). ``warmup``: the first frames are stepped (the state carried) but not written.

    The segmenter resets its state where ``Segmenter.step`` does (a frame with
    ``discontinuity``: a reconnected source; a change of frame size); those resets are counted
    in ``stats.resets``. Frames a source dropped (its ``dropped`` count, as
    ``LatestFrameSource`` keeps) go to ``segmenter.note_dropped`` (``Segmenter.stats()``).

    Ctrl-C (or a SIGTERM handled like it, see ``interrupts_as_stop``) stops the run cleanly
    between frames: frames already segmented are written and the stats say ``interrupted``. A
    truncated source likewise ends the run with every decoded frame written and the error in
    ``stats.truncated``; the caller decides how to report both. Other decode/encode errors
    propagate. ``stats.cpu``: each stage's CPU time per frame written (``engine.cpuclock``).
    """
    stats = RunStats()
    started = time.perf_counter()
    clock = CpuClock()

    def finish(frame: Frame, result: Result) -> Any:
        result = result.at_size(*frame.image.shape[:2])
        image = render(frame, result)
        if on_frame is not None:
            on_frame(result)
        return image

    writer: BackgroundWriter | None = None
    try:
        with interrupts_as_stop() as stop:  # before any thread starts: see its docstring
            segmenter.reset()
            writer = BackgroundWriter(sink, finish, clock=clock)
            decoding = Prefetch(
                _with_input(frames, segmenter.prepare, clock), depth=depth, name="decode"
            )
            with writer, decoding as decoded:
                try:
                    _segment_all(
                        segmenter, decoded.until(stop), frames, writer, stats, warmup, clock
                    )
                except KeyboardInterrupt:  # a second Ctrl-C while the first was honoured
                    stats.interrupted = True
                except TruncatedVideoError as exc:
                    stats.truncated = exc
        stats.interrupted = stats.interrupted or stop.is_set()
    finally:
        stats.frames = writer.written if writer is not None else 0
        stats.wall_s = time.perf_counter() - started
        stats.cpu = clock.report(stats.frames, stats.wall_s)
    return stats


def _segment_all(
    segmenter: Stepper,
    decoded: Iterable[tuple[Frame, Any]],
    source: Iterable[Frame],
    writer: BackgroundWriter,
    stats: RunStats,
    warmup: int,
    clock: CpuClock,
) -> None:
    """The model thread's loop of :func:`segment_video`: step (the segmenter resets where the
    scene changes; its CPU time to ``clock``), hand the result to ``writer`` after the first
    ``warmup``; counts into ``stats``."""
    cuts = segmenter.cut_resets
    drops = SourceDrops(source)
    for index, (frame, x) in enumerate(decoded):
        segmenter.note_dropped(drops.new())
        t0 = time.thread_time_ns()
        result = segmenter.step(x)
        clock.add("step", t0)
        stats.resets = segmenter.cut_resets - cuts
        stats.step_ms.append(result.timings.total_ms)  # before the render thread reads labels
        if index >= warmup:
            writer.submit(frame, result)
        stats.key_frames += result.key_frame
