"""Bundle accuracy through the engine: scored frame by frame against labels we control."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.benchmarks.accuracy import accuracy_report, evaluate_bundle
from vidseg.engine import Segmenter
from vidseg.models.data import CAMVID_IGNORE, load_split

FRAMES = 6


def _root_with_labels(camvid: Path, root: Path, labels: list[np.ndarray]) -> Path:
    """A CamVid root whose val split is the first frames of the real one with ``labels``."""
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    for path, label in zip(sorted((camvid / "val").glob("*.png"))[:FRAMES], labels):
        shutil.copy(path, root / "val" / path.name)
        cv2.imwrite(str(root / "valannot" / path.name), label)
    return root


def _predictions(bundle: Path, camvid: Path, carry: bool) -> list[np.ndarray]:
    images = load_split(camvid, "val", limit=FRAMES).images
    segmenter = Segmenter(bundle)
    out = []
    for image in images:
        if not carry:
            segmenter.reset()
        out.append(segmenter.step(image).labels.copy())
    return out


def test_scores_match_a_reference_loop(tiny_bundle: Path, camvid: Path, tmp_path: Path) -> None:
    carried = _predictions(tiny_bundle, camvid, carry=True)
    truth = [p.copy() for p in carried]
    truth[0][:40] = CAMVID_IGNORE  # void never counts
    data = load_split(_root_with_labels(camvid, tmp_path / "a", truth), "val")
    segmenter = Segmenter(tiny_bundle)
    perfect = evaluate_bundle(segmenter, data)
    assert perfect.miou == 100.0 and perfect.pixel_acc == 100.0
    # a frame-by-frame fresh state scores exactly its agreement with the carried labels
    fresh = _predictions(tiny_bundle, camvid, carry=False)
    keep = [t != CAMVID_IGNORE for t in truth]
    expected = sum(((f == t) & k).sum() for f, t, k in zip(fresh, truth, keep)) / sum(
        k.sum() for k in keep)  # fmt: skip
    assert expected < 1  # the state matters, so a missing reset would show
    reset = evaluate_bundle(segmenter, data, carry_state=False)
    assert reset.pixel_acc == pytest.approx(100 * expected, abs=1e-9)
    # wrong truth on one frame lowers the score by exactly that frame's pixels
    wrong = [t.copy() for t in truth]
    wrong[3] = np.where(wrong[3] == CAMVID_IGNORE, CAMVID_IGNORE, (wrong[3] + 1) % 11)
    worse = evaluate_bundle(segmenter, load_split(_root_with_labels(camvid, tmp_path / "b", wrong),
                                                  "val"))  # fmt: skip
    assert worse.pixel_acc == pytest.approx(100 * (1 - keep[3].sum() / sum(k.sum() for k in keep)))
    assert worse.miou < 100.0


def test_accuracy_report_fields(tiny_bundle: Path, camvid: Path, tmp_path: Path) -> None:
    root = _root_with_labels(camvid, tmp_path, _predictions(tiny_bundle, camvid, carry=True))
    report = accuracy_report(Segmenter(tiny_bundle), root)
    assert report["miou"] == 100.0 and report["split"] == f"CamVid val ({FRAMES} frames in order)"
    assert 0 <= report["miou_reset_every_frame"] <= 100
    assert set(report["iou"]) >= {"sky", "road", "bicyclist"}
