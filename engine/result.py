"""What a step takes and what it gives back: ``PreparedFrame`` (a frame made ready for the model)
and ``Result`` (its segmentation).

A step returns what the graph returned, at its label stride, and the geometry to map it back
onto the frame; labels and confidence are taken to a size once, where they are used: on the
first read of ``Result.labels`` or ``Result.scores`` (at the result's ``size``), or by
``Result.at_size`` for another size (a pipeline's output size), which never pays for the first.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vidseg.engine.geometry import Placement, to_frame
from vidseg.engine.timing import FrameTimings, elapsed_ms
from vidseg.engine.upsample import GraphOutputs


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


class Result:
    """The segmentation of one frame. Read-only.

    ``labels`` ((H, W) uint8 class ids) and ``scores`` ((H, W) uint8 confidence, 255 x max
    softmax, or None without a scores output) are at ``size``. A step's result holds the
    graph's ``outputs`` and takes them to ``size`` on the first read of either (once, from
    any thread: ``engine.upsample``, crisp where the bundle has logits; mapped onto the frame
    through ``placement`` by ``engine.geometry.to_frame``); ``timings.post_ms`` is then what
    that took. A result made from ``labels`` (and ``scores``) keeps them as given.

    Args (and attributes):
        labels, scores: the maps at ``size``; None: taken there from ``outputs`` when read.
        index: frames stepped by the segmenter since it was made (resets do not restart it).
        timestamp: seconds, as passed to step (or the frame's pts).
        timings: the step's stages (``FrameTimings``; ``post_ms`` as above once read).
        key_frame: the full model ran on this frame (always, without key frames).
        outputs: the graph's own outputs, at its label stride.
        placement: the frame on the model input (letterbox/crop only).
        age_ms: capture (the frame's ``captured_ns``, else the prepare/step call) to the end
            of the step.
        captured_ns: ``time.monotonic_ns()`` the frame was captured, if known.
        size: (H, W) of ``labels`` and ``scores`` (default: ``labels``' shape).
        canvas: the maps cover the whole model input at ``size`` (a ``PreparedFrame``'s step,
            at the input size), not the frame through ``placement``.
    """

    def __init__(
        self,
        labels: np.ndarray | None,
        index: int,
        timestamp: float | None,
        timings: FrameTimings,
        key_frame: bool = True,
        scores: np.ndarray | None = None,
        outputs: GraphOutputs | None = None,
        placement: Placement | None = None,
        age_ms: float = 0.0,
        captured_ns: int | None = None,
        *,
        size: tuple[int, int] | None = None,
        canvas: bool = False,
    ) -> None:
        if labels is None and outputs is None:
            raise ValueError("a Result needs its labels or the graph's outputs")
        if size is None:
            if labels is None:
                raise ValueError("a Result made from the graph's outputs needs its size")
            size = labels.shape[:2]
        fields = {
            "index": index,
            "timestamp": timestamp,
            "key_frame": key_frame,
            "outputs": outputs,
            "placement": placement,
            "age_ms": age_ms,
            "captured_ns": captured_ns,
            "size": (int(size[0]), int(size[1])),
            "canvas": canvas,
            "_timings": timings,
            "_post_ms": None,  # the time labels and scores took to ``size``, once taken
            "_maps": None if labels is None else (labels, scores),
            "_lock": threading.Lock(),
        }
        self.__dict__.update(fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Result is read-only: cannot set {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def __repr__(self) -> str:
        return (
            f"Result(index={self.index}, timestamp={self.timestamp}, size={self.size}, "
            f"key_frame={self.key_frame}, timings={self.timings})"
        )

    def _fitted(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, scores) at ``size``: taken there from ``outputs`` on the first call."""
        maps = self._maps
        if maps is not None:
            return maps
        with self._lock:
            if self._maps is None:
                t0 = time.perf_counter_ns()
                placement = None if self.canvas else self.placement
                maps = to_frame(self.outputs, placement, *self.size)  # type: ignore[arg-type]
                self.__dict__["_post_ms"] = elapsed_ms(t0, time.perf_counter_ns())
                self.__dict__["_maps"] = maps
            return self._maps

    @property
    def labels(self) -> np.ndarray:
        """(H, W) uint8 class ids at ``size``."""
        return self._fitted()[0]

    @property
    def scores(self) -> np.ndarray | None:
        """(H, W) uint8 confidence at ``size`` (255 x max softmax), if the bundle has it."""
        return self._fitted()[1]

    @property
    def timings(self) -> FrameTimings:
        """The step's stages; ``post_ms``: labels and scores taken to ``size``, once read."""
        post = self._post_ms
        return self._timings if post is None else replace(self._timings, post_ms=post)

    def at_size(self, height: int, width: int) -> "Result":
        """This result with labels and confidence at ``height`` x ``width`` (the frame's size
        or the frame scaled), taken there from the graph's outputs when first read (crisp
        where the bundle has logits; letterbox/crop mapped by ``engine.geometry``; a result
        made from labels: nearest neighbour from them, which become its ``outputs``); itself
        when it is already that size."""
        p = self.placement
        if self.size == (height, width) and (
            not self.canvas or p is None or p.frame_size == self.size
        ):
            return self
        return Result(
            None,
            self.index,
            self.timestamp,
            self._timings,
            self.key_frame,
            outputs=self.outputs or GraphOutputs(*self._fitted()),
            placement=p,
            age_ms=self.age_ms,
            captured_ns=self.captured_ns,
            size=(height, width),
        )
