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
from vidseg.engine.geometry import RESIZE_MODES, Placement, place, to_frame, to_input
from vidseg.engine.loaded import LoadedModel, check_frame
from vidseg.engine.refresh import Refresh
from vidseg.engine.schedule import KeyFrameScheduler, Schedule
from vidseg.engine.telemetry import StatsSnapshot, Telemetry
from vidseg.engine.timing import FrameTimings, elapsed_ms
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.engine.video import Frame

logger = logging.getLogger(__name__)
# frames between checks of a state held in device memory for NaN/Inf (each check copies it to
# the host); a state on the host is checked before every frame (30-75 us for the default's)
NONFINITE_CHECK_EVERY = 30


@dataclass(frozen=True)
class Result:
    """The segmentation of one frame."""

    labels: np.ndarray  # (H, W) uint8 class ids at the input frame's size
    index: int  # frames stepped by this segmenter since it was made (resets do not restart it)
    timestamp: float | None  # seconds, as passed to step (or the frame's pts)
    timings: FrameTimings
    key_frame: bool = True  # the full model ran on this frame (always, for non-keyframe models)
    scores: np.ndarray | None = None  # (H, W) uint8 confidence, 255 x max softmax, if exported
    outputs: GraphOutputs | None = None  # the graph's own outputs, at its label stride
    placement: Placement | None = None  # the frame on the model input (letterbox/crop only)
    age_ms: float = 0.0  # capture (``step``'s captured_ns, else prepare/step call) to result

    def at_size(self, height: int, width: int) -> "Result":
        """This result with labels and confidence at ``height`` x ``width`` (the frame's size
        or the frame scaled), upsampled from the graph's outputs (``engine.upsample``: crisp
        where the bundle has logits; letterbox/crop mapped by ``engine.geometry``); itself when
        already that size."""
        p = self.placement
        if self.labels.shape == (height, width) and (p is None or p.frame_size == (height, width)):
            return self
        source = self.outputs or GraphOutputs(self.labels, self.scores)
        labels, scores = upsample(source, height, width) if p is None else to_frame(
            source, p, height, width)  # fmt: skip
        return replace(self, labels=labels, scores=scores)


@dataclass(frozen=True)
class PreparedFrame:
    """A frame made ready for ``Segmenter.step`` by ``Segmenter.prepare``, possibly in another
    thread: resized to the model input and, for a split bundle, already through its stateless
    ``encode`` graph (``features``; None otherwise)."""

    image: np.ndarray  # (h, w, 3) uint8 at the model's input size
    features: dict[str, Any] | None = None
    placement: Placement | None = None  # the frame on the model input (letterbox/crop only)
    captured_ns: int | None = None  # perf_counter_ns when prepare got the frame


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
        schedule: key-frame policy for ``keyframe`` bundles (default: the manifest's).
        resize: how a frame is fitted to the model input: ``stretch``, ``letterbox`` (aspect
            kept, padded) or ``crop`` (aspect kept, edges cut; labels there ``UNSEEN``); see
            ``engine.geometry``.
        memory: carry the state, caches and aux inputs from frame to frame. False resets them
            before every frame: each frame runs as a stream's first (a tile memory's key view,
            a recurrent model from a zero state), the freshest labels, equal to a ``reset()``
            before each ``step``.
        refresh: when a carried memory is judged stale and reset before a frame (timestamps
            too far apart, a frame its past fails to explain; ``engine.refresh``);
            ``Refresh.off()`` never.

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
        sched = schedule or self.model.schedule
        self.scheduler = KeyFrameScheduler(sched) if self.model.keyframe and sched else None
        self._frames = 0
        self._finite_every = 1 if device == "cpu" else NONFINITE_CHECK_EVERY
        self.nonfinite_resets = 0  # resets because the state held NaN or Inf
        self.memory = memory
        self.refresh = Refresh() if refresh is None else refresh
        self.refreshes = 0  # resets because the memory was stale (``engine.refresh``)
        self._last_timestamp: float | None = None  # of the previous frame stepped

    def _drop_nonfinite_state(self) -> None:
        """Reset the state and key-frame cache if either holds a NaN or an Inf (a model that
        overflowed, a corrupted buffer), before a frame runs on it: logged (the first time and
        every 100th), counted in ``stats().resets`` and ``nonfinite_resets``."""
        bad = self.state.nonfinite() or self.cache.nonfinite()
        if bad is None:
            return
        self.nonfinite_resets += 1
        if self.nonfinite_resets == 1 or self.nonfinite_resets % 100 == 0:
            logger.warning("frame %d: the recurrent state %r holds NaN or Inf; state reset (%d "
                           "so far)", self._frames, bad, self.nonfinite_resets)  # fmt: skip
        self.reset()

    def reset(self) -> None:
        """Forget the past (call on a seek, a cut, or a new stream): state and key-frame cache
        back to zeros, the next frame a key frame, flow restarts from zero."""
        self._last_timestamp = None
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
        if self.scheduler is not None:
            self.scheduler.reset()

    def prepare(self, frame: np.ndarray) -> PreparedFrame:
        """The stateless part of ``step``: ``frame`` checked and resized to the model's input
        size and, for a bundle with an ``encode`` graph, encoded.

        Thread-safe (it touches no stream state): a pipeline calls it in its decode thread, so
        the encoder of frame t+1 runs while the model thread carries the state through frame
        t. ``step`` on the result returns labels at the input size (``Result.at_size`` brings
        them back to the frame's size).

        Raises:
            FrameError: ``frame`` is not an (H, W, 3) uint8 array.
        """
        captured = time.perf_counter_ns()
        x, placement = self._fit(frame)
        features = self.model.encode(x[None]) if self.model.encode_ahead else None
        return PreparedFrame(x, features, placement, captured)

    def _fit(self, frame: np.ndarray) -> tuple[np.ndarray, Placement | None]:
        """The model input for ``frame`` and, unless stretched, its placement."""
        if self.resize == "stretch":
            return self.model.to_input(frame), None
        placement = place(check_frame(frame).shape[:2], self.input_size, self.resize)
        return to_input(frame, placement), placement

    def stats(self) -> StatsSnapshot:
        """Frames, resets, drops, and step/age percentiles and FPS over the last frames."""
        return self.telemetry.snapshot()

    def note_dropped(self, frames: int) -> None:
        """Count ``frames`` the source dropped before they reached ``step`` (``stats()``)."""
        self.telemetry.note_dropped(frames)

    def step(self, frame: np.ndarray | PreparedFrame, timestamp: float | None = None,
             captured_ns: int | None = None) -> Result:  # fmt: skip
        """Segment one frame and carry the state to the next. A state (or key-frame cache)
        holding NaN or Inf is reset before the frame runs on it: logged, counted in ``stats()``.

        Args:
            frame: (H, W, 3) uint8 RGB, any size (resized to the model input internally; the
                result comes back at the frame's size), or ``prepare``'s result (the result
                comes back at the model's input size).
            timestamp: seconds, passed through to the result.
            captured_ns: ``time.perf_counter_ns()`` when the frame was captured, for
                ``Result.age_ms`` (default: when ``prepare``, else ``step``, got it).
        Raises:
            FrameError: ``frame`` is not an (H, W, 3) uint8 array.
        """
        t0 = time.perf_counter_ns()
        prepared = frame if isinstance(frame, PreparedFrame) else None
        x, placement = (prepared.image, prepared.placement) if prepared is not None else \
            self._fit(frame)  # fmt: skip
        if captured_ns is None:
            captured_ns = prepared.captured_ns if prepared is not None else None
        features = prepared.features if prepared is not None else None
        if self._frames % self._finite_every == 0:
            self._drop_nonfinite_state()
        aux = self._aux_inputs(x, timestamp)
        key = self.scheduler.is_key(x) if self.scheduler is not None else True
        role = "step" if self.scheduler is None else ("key" if key else "current")
        t1 = time.perf_counter_ns()
        [outputs] = self.model.run(role, x[None], self.state, self.cache, aux, features=features)
        t2 = time.perf_counter_ns()
        height, width = x.shape[:2] if prepared is not None else frame.shape[:2]
        labels, scores = upsample(outputs, height, width) if placement is None or \
            prepared is not None else to_frame(outputs, placement, height, width)  # fmt: skip
        t3 = time.perf_counter_ns()
        timings = FrameTimings(elapsed_ms(t0, t1), elapsed_ms(t1, t2), elapsed_ms(t2, t3))
        if self.scheduler is not None:
            self.scheduler.record(key, timings.total_ms)
        age_ms = elapsed_ms(t0 if captured_ns is None else captured_ns, t3)
        self.telemetry.record(timings.total_ms, age_ms, t3)
        result = Result(labels, self._frames, timestamp, timings, key_frame=key, scores=scores,
                        outputs=outputs, placement=placement, age_ms=age_ms)  # fmt: skip
        self._frames += 1
        return result

    def _aux_inputs(self, x: np.ndarray, timestamp: float | None) -> dict[str, np.ndarray]:
        """The frame's aux inputs, after resetting the stream where its memory does not apply:
        before every frame without ``memory``, else where ``refresh`` finds it stale (the gap
        since the previous frame's timestamp, or the providers' ``mismatch`` once they have
        seen the frame: then reset and asked again, as for a stream's first frame)."""
        previous, self._last_timestamp = self._last_timestamp, timestamp
        if not self.memory:
            self._clear(count=False)
        elif self.refresh.stale_by_time(previous, timestamp):
            logger.debug(
                "frame %d: %.3f s after the previous frame (at %.3f s): memory refreshed",
                self._frames,
                timestamp - previous,
                previous,
            )
            self._clear()
            self.refreshes += 1
        aux = {name: provider(x) for name, provider in self.aux}
        if not self.memory:
            return aux
        mismatch = self.refresh.stale_by_content(provider for _, provider in self.aux)
        if mismatch is not None:
            logger.debug(
                "frame %d: %.0f %% of it unexplained by the previous frame: memory refreshed",
                self._frames,
                100 * mismatch,
            )
            self._clear()
            self.refreshes += 1
            aux = {name: provider(x) for name, provider in self.aux}
        return aux

    def stream(self, frames: Iterable[np.ndarray | Frame]) -> Iterator[Result]:
        """Segment an iterable of frames (arrays or decoded ``Frame``s) in order, lazily.

        The state is reset first, so each call starts a fresh stream.
        """
        self.reset()
        for item in frames:
            if isinstance(item, Frame):
                yield self.step(item.image, item.timestamp_s)
            else:
                yield self.step(item)
