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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from vidseg.engine.backends import BackendOptions, create_backend
from vidseg.engine.bundle import Bundle, default_bundle_path, load_bundle
from vidseg.engine.errors import BundleError, FrameError
from vidseg.engine.state import StreamState, check_state_specs
from vidseg.engine.video import Frame

logger = logging.getLogger(__name__)
SUPPORTED_FAMILIES = ("perframe", "recurrent")


@dataclass(frozen=True)
class FrameTimings:
    """Wall time of each stage of one ``step``, in milliseconds (``perf_counter_ns``)."""

    pre_ms: float  # resize to the model input, batch axis
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
    """A bundle opened on a backend, with its graph checked against the manifest.

    Shared by ``Segmenter`` (one stream) and ``MultiStreamSegmenter`` (a batch of streams):
    it resizes frames to the model input, runs the graph, and resizes labels back.

    Raises:
        BundleError / StateSpecError: the bundle is invalid or disagrees with its graph.
        BackendError: the backend is unavailable or cannot load the graph.
    """

    def __init__(self, bundle: str | Path | Bundle | None, backend: str, device: str,
                 threads: int | None) -> None:  # fmt: skip
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(
            default_bundle_path() if bundle is None else bundle)  # fmt: skip
        manifest = self.manifest = self.bundle.manifest
        if manifest.family not in SUPPORTED_FAMILIES:
            raise BundleError(
                f"{self.bundle.root}: family {manifest.family!r} is not supported by this engine "
                f"yet (supported: {', '.join(SUPPORTED_FAMILIES)})"
            )
        graph = str(self.bundle.graph_path("step"))
        self.backend = create_backend(backend, graph, BackendOptions(device, threads))
        self._check_io(graph)
        self.input_size = (manifest.input.height, manifest.input.width)
        self.labels_name = manifest.labels_output

    def _check_io(self, graph: str) -> None:
        inputs = {t.name: t for t in self.backend.inputs}
        spec = self.manifest.input
        frame = inputs.get(spec.name)
        expected = (spec.height, spec.width, 3)
        if frame is None or frame.dtype != "uint8" or frame.shape[1:] != expected:
            raise BundleError(
                f"{graph}: expected frame input {spec.name!r} uint8 [batch, "
                f"{spec.height}, {spec.width}, 3], the graph has "
                f"{[(t.name, t.dtype, list(t.shape)) for t in self.backend.inputs]}"
            )
        if self.manifest.labels_output not in {t.name for t in self.backend.outputs}:
            raise BundleError(f"{graph}: no output named {self.manifest.labels_output!r}")
        check_state_specs(self.manifest.state, self.backend, graph)
        extra = set(inputs) - {spec.name} - {s.input for s in self.manifest.state}
        if extra:
            raise BundleError(f"{graph}: graph inputs {sorted(extra)} are not in the manifest")

    def new_state(self, batch: int = 1) -> StreamState:
        return StreamState(self.manifest.state, self.backend, batch)

    def to_input(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) at the model's input size (bilinear), contiguous."""
        height, width = self.input_size
        if check_frame(frame).shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(frame)

    def run(self, batch: np.ndarray, state: StreamState,
            rows: Sequence[int] | None = None) -> np.ndarray:  # fmt: skip
        """Run (N, h, w, 3) frames with ``state`` (advanced in place); (N, h, w) labels.

        ``rows``: the state rows the N frames belong to (all rows when None).
        """
        outputs = self.backend.run({self.manifest.input.name: batch, **state.feeds(rows)},
                                   host_outputs=(self.labels_name,))  # fmt: skip
        state.advance(outputs, rows)
        return outputs[self.labels_name]

    @staticmethod
    def to_frame(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """(h, w) labels -> the frame's (H, W) with nearest neighbour (ids never blend)."""
        if labels.shape != shape[:2]:
            labels = cv2.resize(labels, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return labels


class Segmenter:
    """Runs a model bundle on frames of one stream.

    Args:
        bundle: a bundle directory, a loaded ``Bundle``, or None for the shipped default.
        backend: backend name ("ort").
        device: "cpu" (or "cuda" with a GPU backend).
        threads: intra-op threads for the backend (None = runtime default).

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
    ) -> None:
        self.model = LoadedModel(bundle, backend, device, threads)
        self.bundle, self.manifest = self.model.bundle, self.model.manifest
        self.input_size = self.model.input_size
        self.state = self.model.new_state()
        self._frames = 0

    def reset(self) -> None:
        """Forget the past: state back to zeros (call on a seek, a cut, or a new stream)."""
        self.state.reset()

    def step(self, frame: np.ndarray, timestamp: float | None = None) -> Result:
        """Segment one frame and carry the state to the next.

        Args:
            frame: (H, W, 3) uint8 RGB, any size (resized to the model input internally).
            timestamp: seconds, passed through to the result.
        Raises:
            FrameError: ``frame`` is not an (H, W, 3) uint8 array.
        """
        t0 = time.perf_counter_ns()
        x = self.model.to_input(frame)[None]
        t1 = time.perf_counter_ns()
        labels = self.model.run(x, self.state)[0]
        t2 = time.perf_counter_ns()
        labels = self.model.to_frame(labels, frame.shape)
        t3 = time.perf_counter_ns()
        result = Result(labels, self._frames, timestamp,
                        FrameTimings(_ms(t0, t1), _ms(t1, t2), _ms(t2, t3)))  # fmt: skip
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
