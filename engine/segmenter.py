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
from typing import Any, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np

from vidseg.engine.backends import BackendOptions, Transfers, create_backend
from vidseg.engine.bundle import ENCODE, GRAPH_ROLES, Bundle, default_bundle_path, load_bundle
from vidseg.engine.errors import BundleError, FrameError, StateSpecError
from vidseg.engine.flow import AUX_PROVIDERS
from vidseg.engine.geometry import RESIZE_MODES, Placement, place, to_frame, to_input
from vidseg.engine.schedule import KeyFrameScheduler, Schedule
from vidseg.engine.state import StreamState, check_state_specs
from vidseg.engine.telemetry import StatsSnapshot, Telemetry
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.engine.video import Frame

logger = logging.getLogger(__name__)
# frames between checks of a state held in device memory for NaN/Inf (each check copies it to
# the host); a state on the host is checked before every frame (30-75 us for the default's)
NONFINITE_CHECK_EVERY = 30


@dataclass(frozen=True)
class FrameTimings:
    """Wall time of each stage of one ``step``, in milliseconds (``perf_counter_ns``). For a
    ``PreparedFrame`` the resize (and a split bundle's encoder) ran in ``prepare`` and is not
    counted here: ``infer_ms`` is then the step graph alone."""

    pre_ms: float  # resize to the model input, aux inputs (optical flow), key-frame decision
    infer_ms: float  # backend run (device-synchronised)
    post_ms: float  # labels back to the frame size

    @property
    def total_ms(self) -> float:
        return self.pre_ms + self.infer_ms + self.post_ms


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


def _ms(t0: int, t1: int) -> float:
    return (t1 - t0) / 1e6


def check_frame(frame: object) -> np.ndarray:
    """Return ``frame`` if it is an (H, W, 3) uint8 array, else raise ``FrameError``."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 \
            or frame.shape[2] != 3:  # fmt: skip
        got = (f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray)
               else type(frame).__name__)  # fmt: skip
        raise FrameError(f"frame must be an (H, W, 3) uint8 RGB array, got {got}")
    return frame


class LoadedModel:
    """A bundle opened on a backend, its graphs checked against the manifest, run per frame.

    Shared by ``Segmenter`` (one stream) and ``MultiStreamSegmenter`` (a batch of streams). No
    family-specific code: each graph role (``step``, or ``key``/``current``) is described by
    which tensors it reads and writes, derived from the manifest and the graph's own I/O:
    recurrent ``state`` (read and written by the same graph), the key-frame ``cache`` (written
    by ``key``, read by ``current``) and engine-computed ``aux_inputs`` (optical flow).

    Raises:
        BundleError / StateSpecError: the bundle is invalid or disagrees with its graphs.
        BackendError: the backend is unavailable or cannot load a graph.
    """

    def __init__(self, bundle: str | Path | Bundle | None, backend: str, device: str,
                 threads: int | None, cuda_graph: bool | None = None) -> None:  # fmt: skip
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(
            default_bundle_path() if bundle is None else bundle)  # fmt: skip
        manifest = self.manifest = self.bundle.manifest
        pairs = tuple((s.input, s.output) for s in manifest.state)  # ping-ponged on the GPU
        options = BackendOptions(device, threads, cuda_graph=cuda_graph, state_pairs=pairs)
        # the optional encode graph last: the state lives with the graphs that carry it
        roles = GRAPH_ROLES[manifest.family] + ((ENCODE,) if ENCODE in manifest.graphs else ())
        self.backends = {
            role: create_backend(backend, str(self.bundle.graph_path(role)), options)
            for role in roles
        }
        self.keyframe = "key" in self.backends
        self.split = ENCODE in self.backends  # step reads features, not the frame
        self._check_io()
        self.input_size = (manifest.input.height, manifest.input.width)
        self.labels_name = manifest.labels_output
        self.scores_name = manifest.output_name("scores")
        self.logits_name = manifest.output_name("logits")
        self._host_outputs = tuple(
            n for n in (self.labels_name, self.scores_name, self.logits_name) if n
        )
        # per role, once at load: does the graph read/write the state and the cache?
        self._role_io = {
            role: (
                any(x.input in ins for x in manifest.state),
                any(x.input in ins for x in manifest.cache),
                any(x.output in outs for x in manifest.state),
                any(x.output in outs for x in manifest.cache),
            )
            for role, backend in self.backends.items()
            for ins, outs in [({t.name for t in backend.inputs}, {t.name for t in backend.outputs})]
        }
        self.schedule = Schedule.from_manifest(manifest.schedule) if self.keyframe else None
        # a step graph on fixed buffers adopts the encoder's fixed output buffers: then the
        # features of frame t+1 must not be made (in another thread) before step t has run
        self.encode_ahead = self.split and not getattr(self.backends[ENCODE], "fixed", False)
        self.warmup_runs = 2 if device.startswith("cuda") else 1

    def warmup(self, batch: int = 1) -> None:
        """Run every graph ``warmup_runs`` times on zero frames with throw-away state and cache,
        so that lazy set-up (CUDA/cuDNN handles, kernel choice, memory arenas, CUDA-graph
        capture of both ping-pong parities) is not paid by the first real frame. Touches no
        stream's state."""
        state, cache = self.new_state(batch), self.new_cache(batch)
        height, width = self.input_size
        frames = np.zeros((batch, height, width, 3), np.uint8)
        aux = {a.name: np.zeros((batch, *a.shape), np.float32) for a in self.manifest.aux_inputs}
        for _ in range(self.warmup_runs):
            for role in GRAPH_ROLES[self.manifest.family]:  # key before current
                self.run(role, frames, state, cache, aux)

    def transfers(self) -> Transfers:
        """Host<->device bytes of every graph's runs so far, summed."""
        total = Transfers()
        for backend in self.backends.values():
            total = total.add(backend.transfers)
        return total

    def _graph(self, role: str) -> str:
        return str(self.bundle.graph_path(role))

    def _check_io(self) -> None:
        m = self.manifest
        spec = m.input
        for role, backend in self.backends.items():
            graph = self._graph(role)
            inputs = {t.name: t for t in backend.inputs}
            frame = inputs.get(spec.name)
            if self.split and role != ENCODE:  # reads the encode graph's features instead
                self._check_features(graph, inputs, "input")
            elif frame is None or frame.dtype != "uint8" or frame.shape[1:] != (
                    spec.height, spec.width, 3):  # fmt: skip
                raise BundleError(
                    f"{graph}: expected frame input {spec.name!r} uint8 [batch, {spec.height}, "
                    f"{spec.width}, 3], the graph has "
                    f"{[(t.name, t.dtype, list(t.shape)) for t in backend.inputs]}"
                )
            if role == ENCODE:
                self._check_features(graph, {t.name: t for t in backend.outputs}, "output")
                if set(inputs) != {spec.name}:
                    raise BundleError(f"{graph}: the encode graph must read the frame alone, "
                                      f"it reads {sorted(inputs)}")  # fmt: skip
                continue
            labels = next((t for t in backend.outputs if t.name == m.labels_output), None)
            if labels is None:
                raise BundleError(f"{graph}: no output named {m.labels_output!r}")
            if all(isinstance(d, int) for d in labels.shape[1:]) and \
                    tuple(labels.shape[1:]) != m.labels_size:  # fmt: skip
                raise BundleError(f"{graph}: output {m.labels_output!r} is "
                                  f"{list(labels.shape[1:])}, the manifest says "
                                  f"{list(m.labels_size)} (input size / labels stride)")  # fmt: skip
            logits_name = m.output_name("logits")
            if logits_name is not None:
                logits = next((t for t in backend.outputs if t.name == logits_name), None)
                expected = (len(m.classes), *m.labels_size)
                if logits is None or tuple(logits.shape[1:]) != expected:
                    got = None if logits is None else list(logits.shape[1:])
                    raise BundleError(f"{graph}: logits output {logits_name!r} should be "
                                      f"[batch, {list(expected)}] (classes, labels size), "
                                      f"got {got}")  # fmt: skip
            for aux in m.aux_inputs:
                info = inputs.get(aux.name)
                if info is None or info.shape[1:] != aux.shape:
                    raise StateSpecError(f"{graph}: aux input {aux.name!r} "
                                         f"[batch, {list(aux.shape)}] not in the graph")  # fmt: skip
        if self.keyframe:
            check_state_specs(m.cache, self.backends["current"], self.backends["key"],
                              self._graph("current"), self._graph("key"))  # fmt: skip
        for role, backend in self.backends.items():
            if role != ENCODE and m.state and (not self.keyframe or any(
                    s.input in {t.name for t in backend.inputs} for s in m.state)):  # fmt: skip
                check_state_specs(m.state, backend, backend, self._graph(role))
        known = {spec.name} | {s.input for s in m.state + m.cache} | {a.name for a in m.aux_inputs}
        known |= {f.name for f in m.features}
        for role, backend in self.backends.items():
            extra = {t.name for t in backend.inputs} - known
            if extra:
                raise BundleError(f"{self._graph(role)}: graph inputs {sorted(extra)} are not "
                                  "in the manifest")  # fmt: skip

    def _check_features(self, graph: str, tensors: Mapping[str, Any], kind: str) -> None:
        """Every manifest feature is a graph ``kind`` (input/output) of its declared shape."""
        for f in self.manifest.features:
            info = tensors.get(f.name)
            if info is None or tuple(info.shape[1:]) != f.shape or info.dtype != f.dtype:
                got = None if info is None else (info.dtype, list(info.shape))
                raise BundleError(f"{graph}: feature {f.name!r} should be a graph {kind} "
                                  f"{f.dtype} [batch, {list(f.shape)}], got {got}")  # fmt: skip

    def new_state(self, batch: int = 1) -> StreamState:
        """Zeroed recurrent state (``manifest.state``) for ``batch`` streams."""
        return StreamState(self.manifest.state, self.backends[self._any_role], batch)

    def new_cache(self, batch: int = 1) -> StreamState:
        """Zeroed key-frame cache (``manifest.cache``; empty for other families)."""
        return StreamState(self.manifest.cache, self.backends[self._any_role], batch)

    def new_aux(self) -> list[tuple[str, Any]]:
        """One stateful provider per aux input, for one stream."""
        return [(a.name, AUX_PROVIDERS[a.provider](a.shape)) for a in self.manifest.aux_inputs]

    @property
    def _any_role(self) -> str:
        return next(iter(self.backends))  # never the encode graph: it comes last

    def to_input(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) at the model's input size (bilinear), contiguous."""
        height, width = self.input_size
        if check_frame(frame).shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(frame)

    def encode(self, batch: np.ndarray) -> dict[str, Any]:
        """The stateless features of (N, h, w, 3) frames, by the ``encode`` graph of a split
        bundle; safe to call from another thread than ``run`` (it touches no state). The values
        stay where the backend ran them (device memory on a GPU)."""
        return self.backends[ENCODE].run({self.manifest.input.name: batch}, host_outputs=())

    def run(self, role: str, batch: np.ndarray, state: StreamState, cache: StreamState,
            aux: Mapping[str, np.ndarray] | None = None, rows: Sequence[int] | None = None,
            features: Mapping[str, Any] | None = None,
            ) -> list[GraphOutputs]:  # fmt: skip
        """Run graph ``role`` on (N, h, w, 3) frames: each frame's labels, and its confidence
        and logits where the graph outputs them, at the graph's label stride.

        ``state`` and ``cache`` are read where the graph has their inputs and advanced where it
        has their outputs. ``rows``: the state rows the N frames belong to (all when None).
        A split bundle's step reads ``features`` (``encode`` of the same frames), computed here
        when not given.
        """
        reads_state, reads_cache, writes_state, writes_cache = self._role_io[role]
        if self.split:
            feeds = dict(features if features is not None else self.encode(batch))
            feeds.update(aux or {})
        else:
            feeds = {self.manifest.input.name: batch, **(aux or {})}
        if reads_state:
            feeds.update(state.feeds(rows))
        if reads_cache:
            feeds.update(cache.feeds(rows))
        outputs = self.backends[role].run(feeds, host_outputs=self._host_outputs)
        if writes_state:
            state.advance(outputs, rows)
        if writes_cache:
            cache.advance(outputs, rows)
        labels = outputs[self.labels_name]
        scores = outputs[self.scores_name] if self.scores_name else None
        logits = outputs[self.logits_name] if self.logits_name else None
        return [
            GraphOutputs(
                labels[k],
                None if scores is None else scores[k],
                None if logits is None else logits[k],
            )  # fmt: skip
            for k in range(len(labels))
        ]


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
    ) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.resize = resize
        self.telemetry = Telemetry()
        self.model = LoadedModel(bundle, backend, device, threads, cuda_graph)
        t0 = time.perf_counter_ns()
        if warmup:
            self.model.warmup()
        self.warmup_ms = _ms(t0, time.perf_counter_ns())  # load-time runs, not in any Result
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
        aux = {name: provider(x) for name, provider in self.aux}
        key = self.scheduler.is_key(x) if self.scheduler is not None else True
        role = "step" if self.scheduler is None else ("key" if key else "current")
        t1 = time.perf_counter_ns()
        [outputs] = self.model.run(role, x[None], self.state, self.cache, aux, features=features)
        t2 = time.perf_counter_ns()
        height, width = x.shape[:2] if prepared is not None else frame.shape[:2]
        labels, scores = upsample(outputs, height, width) if placement is None or \
            prepared is not None else to_frame(outputs, placement, height, width)  # fmt: skip
        t3 = time.perf_counter_ns()
        timings = FrameTimings(_ms(t0, t1), _ms(t1, t2), _ms(t2, t3))
        if self.scheduler is not None:
            self.scheduler.record(key, timings.total_ms)
        age_ms = _ms(t0 if captured_ns is None else captured_ns, t3)
        self.telemetry.record(timings.total_ms, age_ms, t3)
        result = Result(labels, self._frames, timestamp, timings, key_frame=key, scores=scores,
                        outputs=outputs, placement=placement, age_ms=age_ms)  # fmt: skip
        self._frames += 1
        return result

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
