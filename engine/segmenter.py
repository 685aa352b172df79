"""``Segmenter``: one video stream through one model bundle, frame by frame, state carried.

Example:
    >>> seg = Segmenter()                       # the bundled default model, ONNX Runtime CPU
    >>> result = seg.step(frame_rgb, timestamp=0.04)
    >>> result.labels.shape == frame_rgb.shape[:2]
    True
    >>> seg.reset()                             # on a seek or a scene cut

A ``Segmenter`` owns the state of one stream and is not thread-safe: use one per stream and
call it from one thread at a time (several segmenters may share a process).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from vidseg.engine.bundle import Bundle
from vidseg.engine.frame import Frame
from vidseg.engine.geometry import check_resize
from vidseg.engine.loaded import LoadedModel
from vidseg.engine.refresh import Refresh
from vidseg.engine.result import PreparedFrame, Result
from vidseg.engine.schedule import Schedule
from vidseg.engine.slot import StreamSlot, prepare
from vidseg.engine.telemetry import SourceDrops, StatsSnapshot
from vidseg.engine.timing import FrameTimings, elapsed_ms

__all__ = ["PreparedFrame", "Result", "Segmenter"]


class Segmenter:
    """Runs a model bundle on frames of one stream.

    Args:
        bundle: a bundle directory, a loaded ``Bundle``, or None for the shipped default.
        backend: backend name ("ort").
        device: "cpu" (or "cuda" with a GPU backend).
        threads: intra-op threads for the backend (None = runtime default).
        warmup: run each graph once (twice on CUDA) on a zero frame at load, state untouched,
            so that the first real frame costs what the others do (``warmup_ms``).
        cuda_graph: fixed buffers replayed as CUDA graphs (None: on for cuda where the graph
            allows it; True on the CPU: the same buffer bookkeeping, no capture).
        schedule: key-frame policy of a bundle with key frames (default: the manifest's).
        resize: how a frame is fitted to the model input: ``stretch``, ``letterbox`` (aspect
            kept, padded) or ``crop`` (aspect kept, edges cut; labels there ``UNSEEN``); see
            ``engine.geometry``.
        memory: carry the state, caches and aux inputs from frame to frame. False resets them
            before every frame: each frame runs as a stream's first (a tile memory's key view,
            a recurrent model from a zero state), the freshest labels, equal to a ``reset()``
            before each ``step``.
        refresh: when a carried memory is judged stale and reset before a frame (timestamps
            too far apart, a frame its past fails to explain; ``engine.refresh``);
            ``Refresh.off()`` never (always, for a bundle that carries nothing).

    Raises:
        BundleError / StateSpecError: the bundle is invalid or disagrees with its graph.
        BackendError: the backend is unavailable or cannot load the graph.
    """

    def __init__(
        self,
        bundle: str | Path | Bundle | None = None,
        *,
        backend: str = "ort",
        device: str = "cpu",
        threads: int | None = None,
        warmup: bool = True,
        cuda_graph: bool | None = None,
        schedule: Schedule | None = None,
        resize: str = "stretch",
        memory: bool = True,
        refresh: Refresh | None = None,
    ) -> None:
        self.resize = check_resize(resize)
        self.model = LoadedModel(bundle, backend, device, threads, cuda_graph)
        t0 = time.perf_counter_ns()
        if warmup:
            self.model.warmup()
        self.warmup_ms = elapsed_ms(t0, time.perf_counter_ns())  # load-time runs, not in any Result
        self.bundle, self.manifest = self.model.bundle, self.model.manifest
        self.input_size = self.model.input_size
        self.state = self.model.new_state()
        self.cache = self.model.new_cache()
        # the stream's guard (when the state must go: a cut, NaN/Inf, a stale memory, no
        # memory), aux providers, planner (which graph runs on each frame) and telemetry
        self.slot = StreamSlot(
            self.model,
            self.state,
            self.cache,
            device=device,
            schedule=schedule,
            memory=memory,
            refresh=refresh,
        )
        self.guard, self.aux, self.planner = self.slot.guard, self.slot.aux, self.slot.planner
        self.telemetry = self.slot.telemetry

    @property
    def nonfinite_resets(self) -> int:
        """Resets because the state held NaN or Inf."""
        return self.guard.nonfinite_resets

    @property
    def memory(self) -> bool:
        """Whether the state is carried from frame to frame (False: reset before every one)."""
        return self.guard.memory

    @property
    def refresh(self) -> Refresh:
        """When a carried memory is judged stale (``engine.refresh``)."""
        return self.guard.refresh

    @property
    def refreshes(self) -> int:
        """Resets because the memory was stale (``engine.refresh``)."""
        return self.guard.refreshes

    @property
    def cut_resets(self) -> int:
        """Resets because a frame said ``discontinuity`` or changed size."""
        return self.guard.cut_resets

    def reset(self) -> None:
        """Forget the past (call on a seek, a cut, or a new stream): state and key-frame cache
        back to zeros, the next frame a key frame, flow restarts from zero."""
        self.slot.forget()

    def prepare(self, frame: np.ndarray | Frame) -> PreparedFrame:
        """The stateless part of ``step``: ``frame`` checked and resized to the model's input
        size and, for a bundle with an ``encode`` graph, encoded. A ``Frame``'s timestamp,
        capture time and ``discontinuity`` travel with the result to ``step``.

        Thread-safe (it touches no stream state): a pipeline calls it in its decode thread, so
        the encoder of frame t+1 runs while the model thread carries the state through frame
        t. ``step`` on the result returns labels at the input size (``Result.at_size`` takes
        them to the frame's size, or any other, instead).

        Raises:
            FrameError: ``frame`` is not an (H, W, 3) uint8 array with H, W >= 1.
        """
        encode = self.model.encode if self.model.encode_ahead else None
        return prepare(self.input_size, self.resize, frame, encode)

    def stats(self) -> StatsSnapshot:
        """Frames, resets, drops, and step/age percentiles and FPS over the last frames."""
        return self.telemetry.snapshot()

    def note_dropped(self, frames: int) -> None:
        """Count ``frames`` the source dropped before they reached ``step`` (``stats()``)."""
        self.telemetry.note_dropped(frames)

    def step(
        self,
        frame: np.ndarray | Frame | PreparedFrame,
        timestamp: float | None = None,
        captured_ns: int | None = None,
    ) -> Result:
        """Segment one frame and carry the state to the next.

        The state is reset before the frame runs on it when the frame starts a new scene (a
        ``Frame`` with ``discontinuity``, or a frame whose size differs from the previous
        one's), when the state (or key-frame cache) holds NaN or Inf, or when the memory is
        stale (``engine.refresh``: the timestamp too far from the previous frame's, or a frame
        its past fails to explain); see ``engine.guard``. Logged, counted in
        ``stats().resets`` (and ``cut_resets`` / ``nonfinite_resets`` / ``refreshes``).
        Without ``memory`` it is reset before every frame (not counted).

        The result holds the graph's outputs at its label stride; its labels and confidence
        are taken to its size (the frame's, or the model input's for a ``prepare``d frame)
        when first read, or to another size by ``Result.at_size``: never twice, and never
        when unused. ``timings`` covers the step (``pre_ms``, ``infer_ms``); ``post_ms`` is
        the labels' upsampling, filled in when they are read.

        Args:
            frame: (H, W, 3) uint8 RGB, any size (resized to the model input internally; the
                result is at the frame's size), a decoded ``Frame`` (its image, with its
                timestamp, capture time and ``discontinuity``), or ``prepare``'s result (the
                result is at the model's input size).
            timestamp: seconds, passed through to the result (default: the frame's).
            captured_ns: ``time.monotonic_ns()`` when the frame was captured, for
                ``Result.age_ms`` (default: the ``Frame``'s, else when ``prepare``, else
                ``step``, got it).
        Raises:
            FrameError: ``frame`` is not an (H, W, 3) uint8 array with H, W >= 1.
        """
        t0 = time.perf_counter_ns()
        at_frame_size = not isinstance(frame, PreparedFrame)  # else at the model's input size
        if not isinstance(frame, PreparedFrame):
            frame = self.prepare(frame)
        if captured_ns is None:
            captured_ns = time.monotonic_ns() if frame.captured_ns is None else frame.captured_ns
        if timestamp is None:
            timestamp = frame.timestamp
        aux, role = self.slot.admit(frame, timestamp)
        t1 = time.perf_counter_ns()
        x = frame.image[None]
        [outputs] = self.model.run(role, x, self.state, self.cache, aux, features=frame.features)
        timings = FrameTimings(elapsed_ms(t0, t1), elapsed_ms(t1, time.perf_counter_ns()), 0.0)
        return self.slot.result(
            role, outputs, frame, timings, timestamp, captured_ns, canvas=not at_frame_size
        )

    def stream(self, frames: Iterable[np.ndarray | Frame]) -> Iterator[Result]:
        """Segment an iterable of frames (arrays or decoded ``Frame``s) in order, lazily.

        The state is reset first, so each call starts a fresh stream; it is reset again where
        ``step`` resets it (a ``Frame`` with ``discontinuity``, a change of frame size). Frames
        the source dropped (its ``dropped`` count, as ``LatestFrameSource`` keeps) are counted
        in ``stats().dropped``.
        """
        self.reset()
        drops = SourceDrops(frames)
        for item in frames:
            self.note_dropped(drops.new())
            yield self.step(item)
