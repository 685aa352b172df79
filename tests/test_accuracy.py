"""Bundle accuracy through the engine: scored frame by frame against labels we control."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.benchmarks.accuracy import EDGE_PX, FlickerMeter, accuracy_report, evaluate_bundle
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


def _reference_flicker(preds: list[np.ndarray], truths: list[np.ndarray]) -> tuple[float, ...]:
    """(flicker, truth_flicker, excess_flicker) in percent, straight from the definitions."""
    counted = changed = truth_changed = excess = 0
    for a, b, ta, tb in zip(preds, preds[1:], truths, truths[1:]):
        keep = (ta != CAMVID_IGNORE) & (tb != CAMVID_IGNORE)
        counted += keep.sum()
        changed += ((a != b) & keep).sum()
        truth_changed += ((ta != tb) & keep).sum()
        excess += ((a != b) & (ta == tb) & keep).sum()
    return 100 * changed / counted, 100 * truth_changed / counted, 100 * excess / counted


def test_scores_match_a_reference_loop(tiny_bundle: Path, camvid: Path, tmp_path: Path) -> None:
    carried = _predictions(tiny_bundle, camvid, carry=True)
    truth = [p.copy() for p in carried]
    truth[0][:40] = CAMVID_IGNORE  # void never counts
    data = load_split(_root_with_labels(camvid, tmp_path / "a", truth), "val")
    segmenter = Segmenter(tiny_bundle)
    perfect = evaluate_bundle(segmenter, data)
    assert perfect.metrics.miou == 100.0 and perfect.metrics.pixel_acc == 100.0
    # predictions that are the truth flicker exactly as much as the truth, never in excess
    assert perfect.flicker.pred > 0  # else the comparisons below say nothing
    assert perfect.flicker.pred == perfect.flicker.truth and perfect.flicker.excess == 0
    # a frame-by-frame fresh state scores exactly its agreement with the carried labels
    fresh = _predictions(tiny_bundle, camvid, carry=False)
    keep = [t != CAMVID_IGNORE for t in truth]
    expected = sum(((f == t) & k).sum() for f, t, k in zip(fresh, truth, keep)) / sum(
        k.sum() for k in keep
    )
    assert expected < 1  # the state matters, so a missing reset would show
    reset = evaluate_bundle(segmenter, data, carry_state=False)
    assert reset.metrics.pixel_acc == pytest.approx(100 * expected, abs=1e-9)
    # ... and flickers as its own labels do, against the carried ones as truth
    want = _reference_flicker(fresh, truth)
    assert want[2] > 0 and want[0] != want[1]
    assert (reset.flicker.pred, reset.flicker.truth, reset.flicker.excess) == pytest.approx(want)
    # wrong truth on one frame lowers the score by exactly that frame's pixels
    wrong = [t.copy() for t in truth]
    wrong[3] = np.where(wrong[3] == CAMVID_IGNORE, CAMVID_IGNORE, (wrong[3] + 1) % 11)
    worse = evaluate_bundle(
        segmenter, load_split(_root_with_labels(camvid, tmp_path / "b", wrong), "val")
    )
    assert worse.metrics.pixel_acc == pytest.approx(
        100 * (1 - keep[3].sum() / sum(k.sum() for k in keep))
    )
    assert worse.metrics.miou < 100.0
    assert worse.flicker.pred == perfect.flicker.pred  # same predictions, same pixels counted
    assert (worse.flicker.pred, worse.flicker.truth, worse.flicker.excess) == pytest.approx(
        _reference_flicker(carried, wrong)
    )
    assert worse.flicker.truth > perfect.flicker.truth


def test_flicker_counts_by_hand() -> None:
    void = CAMVID_IGNORE
    preds = [np.zeros((10, 20), np.uint8) for _ in range(3)]
    preds[1][0:2, 0:5] = 3  # 10 pixels change into frame 1 and back out of it
    truths = [np.zeros((10, 20), np.uint8) for _ in range(3)]
    truths[1][0:2, 0:2] = 3  # 4 of those 10 change in the truth too
    truths[1][5, 0:8] = 4  # 8 more change in the truth only
    truths[2][9] = void  # the last row of the 2nd pair does not count
    meter = FlickerMeter(11)
    for p, t in zip(preds, truths):
        meter.add(p, t)
    counted = 200 + 180
    got = meter.result()
    assert got.pred == pytest.approx(100 * 20 / counted)
    assert got.truth == pytest.approx(100 * 24 / counted)
    assert got.excess == pytest.approx(100 * 12 / counted)
    # without truth: every pixel of both pairs counts
    unlabelled = FlickerMeter(11)
    for p in preds:
        unlabelled.add(p)
    got = unlabelled.result()
    assert got.pred == pytest.approx(100 * 20 / 400)
    assert np.isnan(got.truth) and np.isnan(got.excess)
    # one frame has no pair to count; a reused buffer is not mistaken for an unchanged frame
    single = FlickerMeter(11)
    buffer = np.zeros((4, 4), np.uint8)
    single.add(buffer)
    assert np.isnan(single.result().pred)
    buffer[:] = 2
    single.add(buffer)
    assert single.result().pred == 100.0
    with pytest.raises(ValueError, match="give truth for all frames or none"):
        single.add(buffer, truths[0][:4, :4])  # truth for some frames only


def test_excess_flicker_at_edges_counts_changes_near_a_true_boundary() -> None:
    """Truth: classes 1 | 3 split at x = 20 in both frames. The prediction changes in a 2x3
    patch 2-4 px from that edge and in a 2x2 patch 16+ px from it: both are excess flicker,
    only the first is within EDGE_PX of an edge."""
    assert EDGE_PX == 6
    truth = np.ones((40, 40), np.uint8)
    truth[:, 20:] = 3
    first, second = truth.copy(), truth.copy()
    second[0:2, 16:19] = 3  # near: 2 to 4 px left of the edge
    second[30:32, 2:4] = 5  # far: 16 px and more
    meter = FlickerMeter(11)
    meter.add(first, truth)
    meter.add(second, truth)
    got = meter.result()
    assert got.excess == pytest.approx(100 * 10 / 1600)
    assert got.excess_at_edges == pytest.approx(100 * 6 / 1600)
    unlabelled = FlickerMeter(11)
    unlabelled.add(first)
    unlabelled.add(second)
    assert np.isnan(unlabelled.result().excess_at_edges)


def test_error_persistence_counts_errors_that_stay() -> None:
    """Truth class 1 everywhere, unchanged. Frame 1 is wrong on 10 pixels, frame 2 on 4 of
    them and 6 others, frame 3 on none: 4 of 10, then 0 of 10, stayed wrong (20 %). Pixels
    whose truth changes, or void, are never counted."""
    truth = np.ones((10, 10), np.uint8)
    first, second, third = truth.copy(), truth.copy(), truth.copy()
    first[0, :] = 2
    second[0, :4] = 2
    second[5, :6] = 4
    meter = FlickerMeter(11)
    for pred in (first, second, third):
        meter.add(pred, truth)
    assert meter.result().persistence == pytest.approx(100 * 4 / 20)
    # the same errors where the truth itself changes (or is void) do not count
    moved = truth.copy()
    moved[0, :] = 2
    moved[9, 0] = 11
    meter = FlickerMeter(11)
    meter.add(first, truth)
    meter.add(first, moved)
    assert np.isnan(meter.result().persistence)
    unlabelled = FlickerMeter(11)
    unlabelled.add(first)
    unlabelled.add(second)
    assert np.isnan(unlabelled.result().persistence)


def test_reverting_share_counts_blips_not_steps() -> None:
    """Truth class 1 everywhere for four frames. Frame 1 blips one pixel to 2 (undone in frame
    2) and steps another to 3 (kept): of the pair (0, 1)'s two excess changes one is undone;
    frame 2's undoing is itself an excess change, kept in frame 3. One of three: 33.3 %. A cut
    forgets the last pair."""
    truth = np.ones((4, 4), np.uint8)
    frames = [truth.copy() for _ in range(4)]
    frames[1][0, 0] = 2
    frames[1][3, 3] = frames[2][3, 3] = frames[3][3, 3] = 3
    meter = FlickerMeter(11)
    for pred in frames:
        meter.add(pred, truth)
    assert meter.result().reverting == pytest.approx(100 / 3)
    cut = FlickerMeter(11)
    cut.add(frames[0], truth)
    cut.add(frames[1], truth)
    cut.cut()
    cut.add(frames[2], truth)
    assert np.isnan(cut.result().reverting)
    # where the truth changes in the third frame, the change is not counted
    moved = FlickerMeter(11)
    third = truth.copy()
    third[0, 0] = third[3, 3] = 5
    for pred, true in zip(frames[:3], (truth, truth, third)):
        moved.add(pred, true)
    assert np.isnan(moved.result().reverting)


def test_accuracy_report_fields(tiny_bundle: Path, camvid: Path, tmp_path: Path) -> None:
    root = _root_with_labels(camvid, tmp_path, _predictions(tiny_bundle, camvid, carry=True))
    report = accuracy_report(Segmenter(tiny_bundle), root)
    assert report["miou"] == 100.0 and report["split"] == f"CamVid val ({FRAMES} frames in order)"
    assert 0 <= report["miou_reset_every_frame"] <= 100
    assert report["flicker"] == report["truth_flicker"] > 0 and report["excess_flicker"] == 0
    assert set(report["iou"]) >= {"sky", "road", "bicyclist"}
