"""engine/outputs.py: class shares, polygons, the JSON-lines log (atomic), the GUI check."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.engine.geometry import UNSEEN
from vidseg.engine.outputs import FrameLog, class_polygons, class_shares, frame_record, gui_problem
from vidseg.engine.segmenter import Result
from vidseg.engine.timing import FrameTimings
from vidseg.engine.video import Frame

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


def result(labels: np.ndarray, scores: np.ndarray | None) -> Result:
    return Result(labels, 0, 0.04, FrameTimings(1.0, 2.0, 3.0), key_frame=False, scores=scores,
                  age_ms=9.5)  # fmt: skip


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
