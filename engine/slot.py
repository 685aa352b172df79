"""One stream's path through a step, shared by ``Segmenter`` and every stream of
``MultiStreamSegmenter``: the one copy of the per-frame rules.

A frame goes through :func:`prepare` (stateless: checked, fitted to the model input by the
resize mode, a split bundle's encoder where asked), :meth:`StreamSlot.admit` (the stream's
state reset where ``engine.guard`` says, its aux inputs, the graph role its planner picks),
the graph run (the owner's: one frame, or the streams of a batch together) and
:meth:`StreamSlot.result` (the ``Result``, the telemetry, the schedule's record).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from vidseg.engine.frame import Frame
from vidseg.engine.geometry import fit
from vidseg.engine.guard import StreamGuard
from vidseg.engine.loaded import LoadedModel, check_frame
from vidseg.engine.refresh import Refresh
from vidseg.engine.result import PreparedFrame, Result
from vidseg.engine.roles import RolePlanner
from vidseg.engine.schedule import Schedule
from vidseg.engine.state import StreamState
from vidseg.engine.telemetry import Telemetry
from vidseg.engine.timing import FrameTimings, elapsed_ms


def prepare(
    input_size: tuple[int, int],
    resize: str,
    frame: np.ndarray | Frame,
    encode: Callable[[np.ndarray], dict[str, Any]] | None = None,
) -> PreparedFrame:
    """``frame`` checked and fitted to a model input of ``input_size`` by ``resize``
    (``engine.geometry``) and, with ``encode`` (a split bundle's ``LoadedModel.encode``),
    through its encoder; a ``Frame``'s timestamp, capture time and ``discontinuity`` carried
    along (else captured now). Thread-safe. Every stepper prepares its frames by it: the
    ``Segmenter``, each stream of a ``MultiStreamSegmenter``, the Triton client.

    Raises:
        FrameError: ``frame`` is not an (H, W, 3) uint8 array with H, W >= 1.
    """
    captured = time.monotonic_ns()
    source = frame if isinstance(frame, Frame) else None
    image = check_frame(frame.image if source is not None else frame)
    x, placement = fit(image, input_size, resize)
    features = encode(x[None]) if encode is not None else None
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


class StreamSlot:
    """One stream on ``row`` of ``state`` and ``cache`` (None: a batch of one): its guard, aux
    providers, role planner, telemetry and frame count. Not thread-safe.

    Args:
        name: prefix of the guard's log lines (``"stream 2"``).
        device, memory, refresh: the guard's (``engine.guard.StreamGuard``).
        schedule: the planner's key-frame policy (bundles with key frames).
    """

    def __init__(
        self,
        model: LoadedModel,
        state: StreamState,
        cache: StreamState,
        row: int | None = None,
        *,
        name: str = "",
        device: str = "cpu",
        schedule: Schedule | None = None,
        memory: bool = True,
        refresh: Refresh | None = None,
    ) -> None:
        self.state, self.cache, self.row = state, cache, row
        self.guard = StreamGuard(
            device, name, memory=memory, refresh=refresh, carries=model.carries
        )
        self.aux = model.new_aux()
        self.planner = model.planner(schedule)
        self.telemetry = Telemetry()
        self.frames = 0  # frames stepped since the slot was made (resets do not restart it)

    def clear(self, count: bool = True) -> None:
        """State and cache rows, aux providers and schedule back to a stream's start; ``count``
        it in the telemetry's resets."""
        if count:
            self.telemetry.note_reset()
        self.state.reset(self.row)
        self.cache.reset(self.row)
        for _, provider in self.aux:
            provider.reset()
        self.planner.reset()

    def forget(self) -> None:
        """Forget the past (a seek, a cut, a new stream): cleared, counted, and the next frame
        nobody's successor."""
        self.guard.forget()
        self.clear()

    def admit(self, frame: PreparedFrame, timestamp: float | None) -> tuple[dict[str, Any], str]:
        """Before ``frame`` (at ``timestamp``) runs: the stream reset where ``engine.guard``
        says (a cut, NaN/Inf, a stale memory; before every frame without memory), then the
        frame's aux inputs and the graph role to run it with."""
        guard, index, x = self.guard, self.frames, frame.image
        size = frame.frame_size or x.shape[:2]
        reset = guard.cut(index, size, frame.discontinuity) or guard.poisoned(
            index, self.state, self.cache, row=self.row
        )
        if guard.stale(index, timestamp, fresh=reset) or reset:
            self.clear()
        if not guard.memory:
            self.clear(count=False)
        aux = {name: provider(x) for name, provider in self.aux}
        if guard.unexplained(index, (provider for _, provider in self.aux)):
            self.clear()
            aux = {name: provider(x) for name, provider in self.aux}
        return aux, self.planner.role(x)

    def result(
        self,
        role: str,
        outputs: Any,
        frame: PreparedFrame,
        timings: FrameTimings,
        timestamp: float | None,
        captured_ns: int,
        canvas: bool = False,
    ) -> Result:
        """The ``Result`` of ``frame``, which graph ``role`` ran into ``outputs`` in
        ``timings``: at the frame's size (``canvas``: at the model input's), taken there when
        read. Recorded in the telemetry and the schedule; the frame counted."""
        self.planner.record(role, timings.total_ms)
        age_ms = elapsed_ms(captured_ns, time.monotonic_ns())
        self.telemetry.record(timings.total_ms, age_ms)
        x = frame.image
        result = Result(
            None,
            self.frames,
            timestamp,
            timings,
            RolePlanner.full_frame(role),
            outputs=outputs,
            placement=frame.placement,
            age_ms=age_ms,
            captured_ns=captured_ns,
            size=x.shape[:2] if canvas else frame.frame_size or x.shape[:2],
            canvas=canvas,
        )
        self.frames += 1
        return result
