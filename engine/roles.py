"""Graph roles: which graphs a bundle may ship, and which one runs on each frame of a stream.

A manifest names its graphs by role, and the roles alone say how a stream runs (its ``family``
is a label for people; the engine never reads it):

* ``step``: one graph, run on every frame; it reads and writes the recurrent ``state``;
* ``key`` and ``current``: a bundle with key frames. ``key`` runs on key frames and writes the
  ``cache``, ``current`` runs on the others and reads it; the manifest's ``schedule`` (its
  defaults where it has none) picks the key frames (``engine.schedule``);
* ``encode`` (optional, beside ``step`` only): a split bundle's stateless front, frame ->
  ``features``, which ``step`` reads in place of the frame; the engine may run it ahead.

What a graph reads and writes besides (state, cache, engine-computed ``aux_inputs``) follows
from its own inputs and outputs (``engine.loaded``). :func:`structure_problem` is the manifest's
check of these rules; :class:`RolePlanner` chooses one stream's graph frame by frame, for
``Segmenter``, each stream of ``MultiStreamSegmenter`` and the export parity check alike.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from vidseg.engine.schedule import KeyFrameScheduler, Schedule

__all__ = [
    "CURRENT",
    "ENCODE",
    "KEY",
    "ROLES",
    "STEP",
    "RolePlanner",
    "frame_roles",
    "structure_problem",
]

STEP, KEY, CURRENT, ENCODE = "step", "key", "current", "encode"
ROLES = (STEP, KEY, CURRENT, ENCODE)


def frame_roles(roles: Collection[str]) -> tuple[str, ...]:
    """The roles among ``roles`` whose graphs label frames, in the order a warm-up runs them:
    ``(key, current)`` for a bundle with key frames (key first: it fills the cache), else
    ``(step,)``."""
    return (KEY, CURRENT) if KEY in roles else (STEP,)


def structure_problem(
    graphs: Mapping[str, Any], *, cache: bool, features: bool, schedule: bool
) -> tuple[str, str] | None:
    """The first way a manifest's ``graphs`` (role -> file) and whether it declares a
    ``cache``, ``features`` and a ``schedule`` break the role rules (module docstring), as
    (field, problem); None when they fit."""
    for role, name in graphs.items():
        if role not in ROLES:
            return f"graphs.{role}", f"is not a graph role (one of {', '.join(ROLES)})"
        if not isinstance(name, str) or not name:
            return f"graphs.{role}", "must be a .onnx file name"
    if KEY in graphs or CURRENT in graphs:
        for role, other in ((KEY, CURRENT), (CURRENT, KEY)):
            if role not in graphs:
                return (
                    f"graphs.{role}",
                    f"is required beside graphs.{other}: key frames run key, "
                    "the frames between them current",
                )
        if STEP in graphs:
            return "graphs.step", "cannot sit beside graphs.key and graphs.current"
        if ENCODE in graphs:
            return f"graphs.{ENCODE}", "splits a step graph; a bundle with key frames has none"
        if not cache:
            return "cache", "is required with graphs.key and graphs.current (key writes it)"
    else:
        if STEP not in graphs:
            return (
                "graphs.step",
                "is required (a .onnx file name), or graphs.key and graphs.current",
            )
        if cache:
            return "cache", "is for bundles with key frames (graphs.key and graphs.current)"
        if schedule:
            return "schedule", "is for bundles with key frames (graphs.key and graphs.current)"
    if (ENCODE in graphs) != features:
        return (
            "features",
            f"and graphs.{ENCODE} come together: the encode graph computes "
            "the features the step graph reads",
        )
    return None


class RolePlanner:
    """One stream's choice of graph, frame by frame: ``step`` on every frame, or for a bundle
    with key frames ``key`` where its scheduler wants a key frame and ``current`` elsewhere.

    Args:
        roles: the bundle's graph roles (a manifest's ``graphs``, a model's export graphs).
        schedule: the key-frame policy (default: ``Schedule()``); unused without key frames.
    """

    def __init__(self, roles: Collection[str], schedule: Schedule | None = None) -> None:
        self.roles = frame_roles(roles)
        self.scheduler = KeyFrameScheduler(schedule or Schedule()) if KEY in roles else None

    def reset(self) -> None:
        """A stream's start: the next frame is a key frame."""
        if self.scheduler is not None:
            self.scheduler.reset()

    def role(self, frame: np.ndarray) -> str:
        """The graph to run on ``frame`` ((h, w, 3) uint8 RGB at the model input size; only an
        adaptive schedule reads it). Report what the frame cost with ``record``."""
        if self.scheduler is None:
            return STEP
        return KEY if self.scheduler.is_key(frame) else CURRENT

    def record(self, role: str, elapsed_ms: float) -> None:
        """The frame ``role`` chose took ``elapsed_ms`` (a deadline schedule spends it)."""
        if self.scheduler is not None:
            self.scheduler.record(role == KEY, elapsed_ms)

    @staticmethod
    def full_frame(role: str) -> bool:
        """Whether ``role`` runs the whole model on its frame (``Result.key_frame``): every
        frame of a ``step`` bundle, the key frames of one with key frames."""
        return role != CURRENT
