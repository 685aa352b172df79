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

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from vidseg.engine.bundle import Bundle
from vidseg.engine.frame import Frame
from vidseg.engine.geometry import RESIZE_MODES, Placement, place, to_frame, to_input
from vidseg.engine.guard import StreamGuard
from vidseg.engine.loaded import LoadedModel, check_frame
from vidseg.engine.refresh import Refresh
from vidseg.engine.roles import RolePlanner
from vidseg.engine.schedule import Schedule
from vidseg.engine.telemetry import SourceDrops, StatsSnapshot, Telemetry
from vidseg.engine.timing import FrameTimings, elapsed_ms
from vidseg.engine.upsample import GraphOutputs, upsample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """The segmentation of one frame."""

    labels: np.ndarray  # (H, W) uint8 class ids at the input frame's size
    index: int  # frames stepped by this segmenter since it was made (resets do not restart it)
    timestamp: float | None  # seconds, as passed to step (or the frame's pts)
    timings: FrameTimings
    key_frame: bool = True  # the full model ran on this frame (always, without key frames)
    scores: np.ndarray | None = None  # (H, W) uint8 confidence, 255 x max softmax, if exported
    outputs: GraphOutputs | None = None  # the graph's own outputs, at its label stride
    placement: Placement | None = None  # the frame on the model input (letterbox/crop only)
    age_ms: float = 0.0  # capture (the frame's captured_ns, else prepare/step call) to result
    captured_ns: int | None = None  # time.monotonic_ns() the frame was captured, if known

    def at_size(self, height: int, width: int) -> "Result":
        """This result with labels and confidence at ``height`` x ``width`` (the frame's size
        or the frame scaled), upsampled from the graph's outputs (``engine.upsample``: crisp
        where the bundle has logits; letterbox/crop mapped by ``engine.geometry``); itself when
        already that size."""
        p = self.placement
        if self.labels.shape == (height, width) and (p is None or p.frame_size == (height, width)):
            return self
        source = self.outputs or GraphOutputs(self.labels, self.scores)
        labels, scores = (
            upsample(source, height, width) if p is None else to_frame(source, p, height, width)
        )
        return replace(self, labels=labels, scores=scores)


@dataclass(frozen=True)
class PreparedFrame:
    """A frame made ready for ``Segmenter.step`` by ``Segmenter.prepare``, possibly in another
    thread: resized to the model input and, for a split bundle, already through its stateless
    ``encode`` graph (``features``; None otherwise)."""

    image: np.ndarray  # (h, w, 3) uint8 at the model's input size
    features: dict[str, Any] | None = None
    placement: Placement | None = None  # the frame on the model input (letterbox/crop only)
    captured_ns: int | None = None  # the Frame's capture time, else monotonic_ns at prepare
    frame_size: tuple[int, int] | None = None  # (H, W) of the frame before resizing
    timestamp: float | None = None  # the Frame's pts in seconds
    discontinuity: bool = False  # the Frame's: its source restarted here


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
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.resize = resize
        self.telemetry = Telemetry()
        self.model = LoadedModel(bundle, backend, device, threads, cuda_graph)
        t0 = time.perf_counter_ns()
        if warmup:
            self.model.warmup()
        self.warmup_ms = elapsed_ms(t0, time.perf_counter_ns())  # load-time runs, not in any Result
        self.bundle, self.manifest = self.model.bundle, self.model.manifest
        self.input_size = self.model.input_size
        self.state = self.model.new_state()
        self.cache = self.model.new_cache()
        self.aux = self.model.new_aux()
        self.planner = self.model.planner(schedule)  # which graph runs on each frame
        self._frames = 0
        # when the state must go: a cut, NaN/Inf, a stale memory, no memory
        self.guard = StreamGuard(device, memory=memory, refresh=refresh, carries=self.model.carries)

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
        self.guard.forget()
        self._clear()

    def _clear(self, count: bool = True) -> None:
        """State, caches, providers and schedule back to a stream's start; ``count`` it in
        ``stats().resets``."""
        if count:
            self.telemetry.note_reset()
        self.state.reset()
        self.cache.reset()
        for _, provider in self.aux:
            provider.reset()
        self.planner.reset()

    def prepare(self, frame: np.ndarray | Frame) -> PreparedFrame:
        """The stateless part of ``step``: ``frame`` checked and resized to the model's input
        size and, for a bundle with an ``encode`` graph, encoded. A ``Frame``'s timestamp,
        capture time and ``discontinuity`` travel with the result to ``step``.

        Thread-safe (it touches no stream state): a pipeline calls it in its decode thread, so
        the encoder of frame t+1 runs while the model thread carries the state through frame
        t. ``step`` on the result returns labels at the input size (``Result.at_size`` brings
        them back to the frame's size).

        Raises:
            FrameError: ``frame`` is not an (H, W, 3) uint8 array with H, W >= 1.
        """
        captured = time.monotonic_ns()
        source = frame if isinstance(frame, Frame) else None
        image = check_frame(frame.image if source is not None else frame)
        x, placement = self._fit(image)
        features = self.model.encode(x[None]) if self.model.encode_ahead else None
        if source is None:
            return PreparedFrame(x, features, placement, captured, image.shape[:2])
        return PreparedFrame(
            x,
            features,
            placement,
            captured if source.captured_ns is None else source.captured_ns,
            image.shape[:2],
            source.timestamp_s,
            source.discontinuity,
        )

    def _fit(self, frame: np.ndarray) -> tuple[np.ndarray, Placement | None]:
        """The model input for a checked ``frame`` and, unless stretched, its placement."""
        if self.resize == "stretch":
            return self.model.to_input(frame), None
        placement = place(frame.shape[:2], self.input_size, self.resize)
        return to_input(frame, placement), placement

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

        Args:
            frame: (H, W, 3) uint8 RGB, any size (resized to the model input internally; the
                result comes back at the frame's size), a decoded ``Frame`` (its image, with
                its timestamp, capture time and ``discontinuity``), or ``prepare``'s result
                (the result comes back at the model's input size).
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
            captured_ns = frame.captured_ns
        if timestamp is None:
            timestamp = frame.timestamp
        x, placement, features = frame.image, frame.placement, frame.features
        size = frame.frame_size or x.shape[:2]
        guard, index = self.guard, self._frames
        reset = guard.cut(index, size, frame.discontinuity) or guard.poisoned(
            index, self.state, self.cache
        )
        if guard.stale(index, timestamp, fresh=reset) or reset:
            self._clear()
        if not guard.memory:
            self._clear(count=False)
        aux = {name: provider(x) for name, provider in self.aux}
        if guard.unexplained(index, (provider for _, provider in self.aux)):
            self._clear()
            aux = {name: provider(x) for name, provider in self.aux}
        role = self.planner.role(x)
        t1 = time.perf_counter_ns()
        [outputs] = self.model.run(role, x[None], self.state, self.cache, aux, features=features)
        t2 = time.perf_counter_ns()
        if at_frame_size:
            labels, scores = (
                upsample(outputs, *size)
                if placement is None
                else to_frame(outputs, placement, *size)
            )
        else:
            labels, scores = upsample(outputs, *x.shape[:2])
        t3 = time.perf_counter_ns()
        timings = FrameTimings(elapsed_ms(t0, t1), elapsed_ms(t1, t2), elapsed_ms(t2, t3))
        self.planner.record(role, timings.total_ms)
        age_ms = elapsed_ms(captured_ns, time.monotonic_ns())
        self.telemetry.record(timings.total_ms, age_ms, t3)
        result = Result(
            labels,
            self._frames,
            timestamp,
            timings,
            key_frame=RolePlanner.full_frame(role),
            scores=scores,
            outputs=outputs,
            placement=placement,
            age_ms=age_ms,
            captured_ns=captured_ns,
        )
        self._frames += 1
        return result

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
