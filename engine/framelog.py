"""What ``--jsonl`` records: one JSON line per frame (``FrameLog``, ``frame_record``), with each
class's share of the frame and, optionally, its regions as simple polygons (``class_polygons``).

The file follows ``engine.outfile``'s rule: a regular file is written beside its final name and
renamed there when the run ends cleanly (Ctrl-C included), deleted when the run fails; ``-``
(standard output), a FIFO or a device is written through, never replaced.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Sequence

import cv2
import numpy as np

from vidseg.engine.errors import VideoIOError
from vidseg.engine.frame import Frame
from vidseg.engine.geometry import UNSEEN
from vidseg.engine.outfile import TextOutput
from vidseg.engine.segmenter import Result

logger = logging.getLogger(__name__)
POLYGON_EPSILON_PX = 2.0  # approxPolyDP tolerance: a vertex may move this far, in frame pixels
POLYGON_MIN_AREA_PX = 16.0  # regions smaller than this (frame pixels) are left out


def class_shares(labels: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Share of the pixels of (H, W) uint8 ``labels`` per class name (every class, 0 included;
    ``unseen`` too where a crop left pixels out), rounded to 1e-5."""
    counts = np.bincount(labels.ravel(), minlength=256)
    total = max(1, labels.size)
    shares = {name: round(float(counts[k]) / total, 5) for k, name in enumerate(classes)}
    if counts[UNSEEN] and UNSEEN >= len(classes):
        shares["unseen"] = round(float(counts[UNSEEN]) / total, 5)
    return shares


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sign of the cross product (a - o) x (b - o), rowwise over int64 (N, 2) arrays."""
    d = (a[:, 0] - o[:, 0]) * (b[:, 1] - o[:, 1]) - (a[:, 1] - o[:, 1]) * (b[:, 0] - o[:, 0])
    return np.sign(d)


def _within(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Whether c lies in the bounding box of segment ab (c on ab when the three are collinear)."""
    return ((np.minimum(a, b) <= c) & (c <= np.maximum(a, b))).all(axis=1)


def is_simple_polygon(points: np.ndarray) -> bool:
    """Whether the closed ring of (N, 2) integer ``points`` is a simple polygon: at least three
    distinct vertices, an area, and no two edges meeting except neighbours at their shared
    vertex (no crossing, touching or folding back)."""
    p = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    n = len(p)
    if n < 3 or len(set(map(tuple, p.tolist()))) < n:  # a repeated vertex touches itself
        return False
    after = np.arange(1, n + 1) % n
    q, r = p[after], p[after[after]]  # edge k runs p[k] -> q[k]; edge k+1 runs q[k] -> r[k]
    if (p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]).sum() == 0:
        return False
    # neighbouring edges must not run back along each other
    if ((_cross(q, p, r) == 0) & (((p - q) * (r - q)).sum(axis=1) > 0)).any():
        return False
    lo, hi = np.minimum(p, q), np.maximum(p, q)  # edges whose bounding boxes overlap, and few
    overlap = (lo[:, None, 0] <= hi[None, :, 0]) & (lo[None, :, 0] <= hi[:, None, 0])  # do,
    overlap &= (lo[:, None, 1] <= hi[None, :, 1]) & (lo[None, :, 1] <= hi[:, None, 1])  # meet
    i, j = np.nonzero(overlap)
    pair = (j >= i + 2) & ~((i == 0) & (j == n - 1))  # not an edge, its neighbours, or twice
    i, j = i[pair], j[pair]
    if not len(i):
        return True
    a, b, c, d = p[i], q[i], p[j], q[j]
    o1, o2, o3, o4 = _cross(a, b, c), _cross(a, b, d), _cross(c, d, a), _cross(c, d, b)
    meet = (o1 != o2) & (o3 != o4)
    meet |= (o1 == 0) & _within(a, b, c)
    meet |= (o2 == 0) & _within(a, b, d)
    meet |= (o3 == 0) & _within(c, d, a)
    meet |= (o4 == 0) & _within(c, d, b)
    return not meet.any()


def _simple_outline(contour: np.ndarray, epsilon_px: float) -> np.ndarray | None:
    """A simple polygon for one contour: ``approxPolyDP`` at ``epsilon_px`` (finer where that
    crosses itself), else the convex hull; None for a region without area (a line of pixels)."""
    for epsilon in (epsilon_px, epsilon_px / 2, epsilon_px / 4):
        candidate = cv2.approxPolyDP(contour, epsilon, True).reshape(-1, 2)
        if is_simple_polygon(candidate):
            return candidate
    hull = cv2.convexHull(contour).reshape(-1, 2)
    return hull if is_simple_polygon(hull) else None


def class_polygons(
    labels: np.ndarray,
    classes: Sequence[str],
    epsilon_px: float = POLYGON_EPSILON_PX,
    min_area_px: float = POLYGON_MIN_AREA_PX,
) -> dict[str, list[list[list[int]]]]:
    """Outer boundaries of each class's regions in (H, W) ``labels``, in its pixels: per class
    name, a list of polygons, each a list of ``[x, y]`` vertices (``cv2.findContours``, outer
    contours only: holes are not cut out; simplified by ``cv2.approxPolyDP`` with
    ``epsilon_px``). Every polygon is simple (``is_simple_polygon``: three or more vertices, an
    area, no edge crossing or touching another): where the simplified outline is not, a finer
    one or the region's convex hull is given; a region without area (a line one pixel wide)
    has none. Regions under ``min_area_px`` are left out unless one is the class's only one.
    Classes without a polygon: no key."""
    out: dict[str, list[list[list[int]]]] = {}
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)[: len(classes)])
    for k in present:
        mask = (labels == k).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polygons = []
        for contour in contours:
            if cv2.contourArea(contour) < min_area_px and len(contours) > 1:
                continue
            outline = _simple_outline(contour, epsilon_px)
            if outline is not None:
                polygons.append(outline.tolist())
        if polygons:
            out[classes[k]] = polygons
    return out


def frame_record(
    frame: Frame, result: Result, classes: Sequence[str], *, polygons: bool = False
) -> dict[str, Any]:
    """The JSON-ready record of one frame; ``result`` at the frame's size. Its labels are read
    first, so that ``ms.post`` is their upsampling to the frame's size (``FrameTimings``)."""
    shares = class_shares(result.labels, classes)
    t = result.timings
    record: dict[str, Any] = {
        "index": frame.index,
        "pts": frame.pts,
        "time": frame.timestamp_s,
        "key_frame": bool(result.key_frame),
        "ms": {
            "pre": round(t.pre_ms, 3),
            "infer": round(t.infer_ms, 3),
            "post": round(t.post_ms, 3),
            "step": round(t.total_ms, 3),
        },
        "age_ms": round(result.age_ms, 3),
        "classes": shares,
    }
    if result.scores is not None:
        seen = result.labels != UNSEEN
        mean = float(result.scores[seen].mean()) / 255 if seen.any() else 0.0
        record["confidence"] = round(mean, 5)
    if polygons:
        record["polygons"] = class_polygons(result.labels, classes)
    return record


class FrameLog:
    """JSON lines, one per frame (``frame_record``); a context manager. Written under
    ``engine.outfile``'s rule: atomic for a regular file (see module), in place for ``-``
    (standard output), a FIFO or a device."""

    def __init__(
        self, path: str | os.PathLike[str], classes: Sequence[str], *, polygons: bool = False
    ) -> None:
        self.path = Path(path)
        self._output = TextOutput(path)
        self._classes = tuple(classes)
        self._polygons = polygons
        self._file: IO[str] | None = None

    def __enter__(self) -> "FrameLog":
        self._file = self._output.__enter__()
        return self

    def write(self, frame: Frame, result: Result) -> None:
        if self._file is None:
            raise RuntimeError("FrameLog.write outside its with-block")
        line = json.dumps(
            frame_record(frame, result, self._classes, polygons=self._polygons),
            separators=(",", ":"),
        )
        try:
            self._file.write(line + "\n")
        except OSError as error:
            raise VideoIOError(f"cannot write {self.path}: {error.strerror or error}") from error

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file = None
        self._output.__exit__(exc_type, exc, tb)
