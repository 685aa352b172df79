"""engine/outputs.py: class shares, polygons, the JSON-lines log (atomic), the GUI check."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.engine.frame import Frame
from vidseg.engine.framelog import (
    FrameLog,
    class_polygons,
    class_shares,
    frame_record,
    is_simple_polygon,
)
from vidseg.engine.geometry import UNSEEN
from vidseg.engine.preview import gui_problem
from vidseg.engine.segmenter import Result
from vidseg.engine.timing import FrameTimings

CLASSES = ("sky", "road", "car")


def scene() -> np.ndarray:
    labels = np.zeros((120, 200), np.uint8)  # sky
    labels[60:] = 1  # road
    cv2.rectangle(labels, (20, 70), (79, 99), 2, thickness=-1)  # a car: 60x30 box
    cv2.circle(labels, (150, 30), 20, 2, thickness=-1)  # a round car in the sky
    return labels


def test_class_shares() -> None:
    labels = scene()
    shares = class_shares(labels, CLASSES)
    assert list(shares) == list(CLASSES)
    counts = np.bincount(labels.ravel(), minlength=3)
    for k, name in enumerate(CLASSES):
        assert shares[name] == pytest.approx(counts[k] / labels.size, abs=1e-5)
    labels[:, :10] = UNSEEN
    assert class_shares(labels, CLASSES)["unseen"] == pytest.approx(0.05)


def test_class_polygons_follow_the_regions() -> None:
    polygons = class_polygons(scene(), CLASSES)
    assert set(polygons) == {"sky", "road", "car"}
    box, disc = sorted(polygons["car"], key=len)
    assert sorted(map(tuple, box)) == [(20, 70), (20, 99), (79, 70), (79, 99)]
    area = cv2.contourArea(np.asarray(disc, np.int32))
    # contours run through the boundary pixels' centres; simplification cuts a little more
    assert area == pytest.approx(np.pi * 19.5**2, rel=0.1) and len(disc) < 40
    for polys in polygons.values():  # in frame pixels
        pts = np.concatenate([np.asarray(p) for p in polys])
        assert pts.min() >= 0 and pts[:, 0].max() < 200 and pts[:, 1].max() < 120
    # rasterised back, the polygons cover what they describe
    road = np.zeros((120, 200), np.uint8)
    cv2.fillPoly(road, [np.asarray(p, np.int32) for p in polygons["road"]], 1)
    assert (road[scene() == 1] == 1).mean() > 0.99


def _on_segment(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> bool:
    """c on the closed segment ab (exact, integers)."""
    cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return (
        cross == 0
        and min(a[0], b[0]) <= c[0] <= max(a[0], b[0])
        and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])
    )


def _segments_meet(p1, q1, p2, q2) -> bool:
    def side(a, b, c) -> int:
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return (v > 0) - (v < 0)

    if side(p1, q1, p2) * side(p1, q1, q2) < 0 and side(p2, q2, p1) * side(p2, q2, q1) < 0:
        return True
    return (
        _on_segment(p1, q1, p2)
        or _on_segment(p1, q1, q2)
        or _on_segment(p2, q2, p1)
        or _on_segment(p2, q2, q1)
    )


def simple_by_hand(polygon: list[list[int]]) -> bool:
    """A simple polygon, checked pair by pair in plain Python (independent of the engine's)."""
    pts = [tuple(p) for p in polygon]
    n = len(pts)
    if n < 3 or len(set(pts)) < n:
        return False
    if (
        sum(pts[k][0] * pts[(k + 1) % n][1] - pts[(k + 1) % n][0] * pts[k][1] for k in range(n))
        == 0
    ):
        return False
    edges = [(pts[k], pts[(k + 1) % n]) for k in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):  # neighbours share one vertex, no more
                shared = edges[i][1] if j == i + 1 else edges[i][0]
                far_i = edges[i][0] if j == i + 1 else edges[i][1]
                far_j = edges[j][1] if j == i + 1 else edges[j][0]
                if _on_segment(shared, far_i, far_j) or _on_segment(shared, far_j, far_i):
                    return False
            elif _segments_meet(*edges[i], *edges[j]):
                return False
    return True


def test_simple_polygon_check_agrees_with_the_hand_check() -> None:
    rng = np.random.default_rng(0)
    squares = [[[0, 0], [4, 0], [4, 4], [0, 4]], [[0, 0], [4, 4], [4, 0], [0, 4]]]
    for polygon in squares + [
        rng.integers(0, 5, (int(rng.integers(2, 8)), 2)).tolist() for _ in range(2000)
    ]:
        assert is_simple_polygon(np.asarray(polygon)) == simple_by_hand(polygon), polygon
    assert is_simple_polygon(np.asarray(squares[0])) and not is_simple_polygon(
        np.asarray(squares[1])
    )


@pytest.mark.parametrize("seed", range(40))
def test_polygons_are_simple_on_random_label_maps(seed: int) -> None:
    """Blobs of 2-4 classes at random scales with speckle, thin lines and single pixels: every
    polygon has 3+ distinct vertices, an area, no crossing or touching edges, and lies in the
    frame (was: 2-point polygons and self-crossing ones)."""
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(6, 60, 2))
    classes = int(rng.integers(2, 5))
    cell = int(rng.integers(1, 9))
    grid = rng.integers(0, classes, (-(-height // cell), -(-width // cell))).astype(np.uint8)
    labels = cv2.resize(grid, (width, height), interpolation=cv2.INTER_NEAREST)
    speckle = rng.random((height, width)) < rng.uniform(0, 0.15)
    labels[speckle] = rng.integers(0, classes, int(speckle.sum()))
    labels[int(rng.integers(0, height)), :] = classes - 1  # a line one pixel thick
    names = ("a", "b", "c", "d")[:classes]
    polygons = class_polygons(labels, names, min_area_px=float(rng.choice([0.0, 16.0])))
    for polys in polygons.values():
        for polygon in polys:
            assert simple_by_hand(polygon), polygon
            pts = np.asarray(polygon)
            assert pts.min() >= 0 and pts[:, 0].max() < width and pts[:, 1].max() < height


def result(labels: np.ndarray, scores: np.ndarray | None) -> Result:
    return Result(
        labels, 0, 0.04, FrameTimings(1.0, 2.0, 3.0), key_frame=False, scores=scores, age_ms=9.5
    )


def test_frame_record() -> None:
    labels = scene()
    scores = np.full(labels.shape, 204, np.uint8)
    frame = Frame(np.zeros((120, 200, 3), np.uint8), 7, 3584, Fraction(1, 12800))
    rec = frame_record(frame, result(labels, scores), CLASSES, polygons=True)
    assert (rec["index"], rec["pts"], rec["time"], rec["key_frame"]) == (7, 3584, 0.28, False)
    assert rec["ms"] == {"pre": 1.0, "infer": 2.0, "post": 3.0, "step": 6.0}
    assert rec["age_ms"] == 9.5 and rec["confidence"] == pytest.approx(0.8)
    assert set(rec["polygons"]) == {"sky", "road", "car"}
    assert "confidence" not in frame_record(frame, result(labels, None), CLASSES)
    json.dumps(rec)  # JSON-ready


def test_frame_log_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    frame = Frame(np.zeros((120, 200, 3), np.uint8), 0, 0, Fraction(1, 25))
    with pytest.raises(RuntimeError, match="boom"):
        with FrameLog(path, CLASSES) as log:
            log.write(frame, result(scene(), None))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    with FrameLog(path, CLASSES) as log:
        for _ in range(3):
            log.write(frame, result(scene(), None))
    assert [p.name for p in tmp_path.iterdir()] == ["f.jsonl"]
    assert len([json.loads(line) for line in path.read_text().splitlines()]) == 3


def test_gui_problem_names_the_fix() -> None:
    gui = "NONE" not in next(
        line for line in cv2.getBuildInformation().splitlines() if "GUI:" in line
    )
    problem = gui_problem()
    if not gui:
        assert problem is not None and "opencv-python" in problem
