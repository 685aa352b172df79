"""Key-frame scheduling for ``keyframe`` bundles: when to run the expensive ``key`` graph.

Policies (seed 003 uses a fixed key distance of 2-15):

* ``fixed`` -- a key frame every ``interval`` frames.
* ``adaptive`` -- also a key frame as soon as the frame differs from the last key frame by more
  than ``threshold`` (mean absolute difference of 64x48 grey thumbnails, 0..1): a cut or a fast
  pan refreshes the cache at once; ``max_interval`` still bounds the distance.
* ``deadline`` -- like ``fixed``, but a due key frame is postponed while its expected cost
  (running mean of past key frames) would exceed ``budget_ms`` and the time saved on cheap
  frames since the last key frame does not cover the overrun; after ``max_interval`` frames the
  key frame runs regardless (catch-up), so the cache never goes stale without bound.

The first frame after construction or ``reset()`` is always a key frame (the cache is empty).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from vidseg.engine.errors import BundleError

POLICIES = ("fixed", "adaptive", "deadline")
THUMB_SIZE = (64, 48)  # (width, height) of the grey thumbnails compared by ``adaptive``


class ScheduleValueError(ValueError):
    """A schedule value out of range; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


# manifest field -> the JSON types it accepts (bool is refused where int is asked)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "policy": (str,),
    "interval": (int,),
    "threshold": (int, float),
    "budget_ms": (int, float, type(None)),
    "max_interval": (int,),
}


@dataclass(frozen=True)
class Schedule:
    """Key-frame policy; a bundle's manifest ``schedule`` holds the defaults (the engine's
    ``Manifest.schedule``, validated by ``from_manifest`` when the bundle loads)."""

    policy: str = "fixed"
    interval: int = 5  # frames between key frames (fixed, deadline)
    threshold: float = 0.1  # adaptive: frame change that forces a key frame, 0..1
    budget_ms: float | None = None  # deadline: per-frame latency budget
    max_interval: int = 30  # adaptive/deadline: longest distance between key frames

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ScheduleValueError(
                "policy",
                f"schedule policy must be one of {', '.join(POLICIES)}, got {self.policy!r}",
            )
        if self.interval < 1 or self.max_interval < self.interval:
            raise ScheduleValueError(
                "interval" if self.interval < 1 else "max_interval",
                f"need 1 <= interval <= max_interval, got {self.interval}, {self.max_interval}",
            )
        if self.policy == "deadline" and not (self.budget_ms and self.budget_ms > 0):
            raise ScheduleValueError("budget_ms", "the deadline policy needs budget_ms > 0")

    @classmethod
    def from_manifest(
        cls, raw: "dict[str, Any] | Schedule | None", source: str = "manifest.json"
    ) -> "Schedule":
        """Parse a manifest's ``schedule`` object; unknown keys, wrong types or bad values ->
        BundleError naming the field (``schedule.<key>``). A ``Schedule`` (a loaded manifest's
        field) is returned as it is; None or {} gives the defaults."""
        if isinstance(raw, Schedule):
            return raw
        raw = raw or {}
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise BundleError(f"{source}: field 'schedule' has unknown keys {sorted(unknown)}")
        for key, value in raw.items():
            kinds = _FIELD_TYPES[key]
            if not isinstance(value, kinds) or isinstance(value, bool):
                names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise BundleError(
                    f"{source}: field 'schedule.{key}' must be {names}, got {type(value).__name__}"
                )
        try:
            return cls(**raw)
        except ScheduleValueError as exc:
            raise BundleError(f"{source}: field 'schedule.{exc.field}' is invalid: {exc}") from exc

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``schedule`` object."""
        return asdict(self)


def _thumb(frame: np.ndarray) -> np.ndarray:
    import cv2  # on first use: importing the engine loads no OpenCV

    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


class KeyFrameScheduler:
    """Decides per frame whether to run the key graph; fed back the cost of each frame."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.reset()

    def reset(self) -> None:
        self._since_key: int | None = None  # frames since the last key frame; None = no cache
        self._key_thumb: np.ndarray | None = None
        self._key_ms: float | None = None  # running mean cost of key frames
        self._credit_ms = 0.0  # budget left unused by cheap frames since the last key frame
        self.last_change = 0.0  # adaptive: change measured on the last frame

    def is_key(self, frame: np.ndarray) -> bool:
        """``frame``: (h, w, 3) uint8 RGB at the model size. True: run the key graph now."""
        s = self.schedule
        if self._since_key is None:
            key = True
        elif s.policy == "fixed":
            key = self._since_key >= s.interval
        elif s.policy == "adaptive":
            thumb = _thumb(frame)
            self.last_change = float(np.abs(thumb - self._key_thumb).mean())
            key = self._since_key >= s.max_interval or self.last_change > s.threshold
        else:  # deadline
            due = self._since_key >= s.interval
            overrun = (self._key_ms or 0.0) - float(s.budget_ms)  # type: ignore[arg-type]
            affordable = overrun <= 0 or self._credit_ms >= overrun
            key = self._since_key >= s.max_interval or (due and affordable)
        if key and s.policy == "adaptive":
            self._key_thumb = _thumb(frame)
        return key

    def record(self, key: bool, elapsed_ms: float) -> None:
        """Report how long the frame just decided took (engine-measured)."""
        if key:
            self._since_key = 1
            self._key_ms = (
                elapsed_ms if self._key_ms is None else (0.8 * self._key_ms + 0.2 * elapsed_ms)
            )
            self._credit_ms = 0.0
        else:
            self._since_key = (self._since_key or 0) + 1
            if self.schedule.budget_ms:
                self._credit_ms += max(0.0, self.schedule.budget_ms - elapsed_ms)
