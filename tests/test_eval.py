"""vidseg-eval: a labelled frame folder scored through the engine, checked against plain loops."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from vidseg.benchmarks import evaluate
from vidseg.benchmarks.accuracy import boundary_band, evaluate_bundle, sequence_of
from vidseg.engine import Segmenter
from vidseg.models.data import labelled_frame_paths, read_labelled_frame

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
VOID = 11  # the tiny bundle's ignore index (CamVid void)
K = 11
JSON_KEYS = {
    "miou",
    "per_class",
    "pixel_acc",
    "flicker",
    "excess_flicker",
    "truth_flicker",
    "excess_flicker_at_edges",
    "trimap_iou",
    "fps",
    "frames",
    "sequences",
    "model",
    "reset_every_frame",
    "device",
    "error_persistence",
    "excess_flicker_reverting",
}


def _val_images(camvid: Path, n: int) -> list[Path]:
    return sorted((camvid / "val").glob("*.png"))[:n]


def _folder(
    root: Path, camvid: Path, names: list[str], labels: list[np.ndarray] | None = None
) -> tuple[Path, Path]:
    """``root/frames`` and ``root/labels``: the first CamVid val frames renamed to ``names``,
    with their real labels or ``labels``."""
    frames, annots = root / "frames", root / "labels"
    frames.mkdir(parents=True)
    annots.mkdir()
    for i, (src, name) in enumerate(zip(_val_images(camvid, len(names)), names)):
        shutil.copy(src, frames / f"{name}.png")
        if labels is None:
            shutil.copy(camvid / "valannot" / src.name, annots / f"{name}.png")
        else:
            cv2.imwrite(str(annots / f"{name}.png"), labels[i])
    return frames, annots


def _images(frames: Path) -> list[np.ndarray]:
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(frames.iterdir())]


def _loop(bundle: Path, images: list[np.ndarray], reset_before: set[int]) -> list[np.ndarray]:
    """Plain reference loop: ``reset()`` before the frames in ``reset_before``."""
    segmenter = Segmenter(bundle)
    out = []
    for i, image in enumerate(images):
        if i in reset_before:
            segmenter.reset()
        out.append(segmenter.step(image).labels.copy())
    return out


def _score(bundle: Path, frames: Path, labels: Path, carry_state: bool = True):
    lazy = (read_labelled_frame(i, lb) for i, lb in labelled_frame_paths(frames, labels))
    return evaluate_bundle(Segmenter(bundle), lazy, carry_state=carry_state)


def _band_by_offsets(truth: np.ndarray, radius: int = 2) -> np.ndarray:
    """The trimap band straight from its definition, one disk offset at a time: pixel p is in
    it when some q of another class (neither void) lies within ``radius`` of it."""
    h, w = truth.shape
    band = np.zeros((h, w), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
            p = truth[ys, xs]
            q = truth[max(0, dy) : min(h, h + dy), max(0, dx) : min(w, w + dx)]
            band[ys, xs] |= (p < K) & (q < K) & (p != q)
    return band


def _miou(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, list[float]]:
    """(mIoU, pixel acc, per-class IoU) in percent from (pred, truth) pixel arrays, written out
    class by class: void (truth >= K) never counts, classes absent from both are left out."""
    tp, pred_n, truth_n = np.zeros(K), np.zeros(K), np.zeros(K)
    for pred, truth in pairs:
        keep = truth < K
        p, t = pred[keep], truth[keep]
        for c in range(K):
            tp[c] += np.sum((p == c) & (t == c))
            pred_n[c] += np.sum(p == c)
            truth_n[c] += np.sum(t == c)
    union = pred_n + truth_n - tp
    iou = [100 * tp[c] / union[c] if union[c] else float("nan") for c in range(K)]
    return float(np.nanmean(iou)), 100 * tp.sum() / truth_n.sum(), iou


def test_scores_equal_a_plain_loop(tiny_bundle: Path, camvid: Path, tmp_path: Path) -> None:
    names = [p.stem for p in _val_images(camvid, 4)]
    frames, labels = _folder(tmp_path, camvid, names)
    out = tmp_path / "eval.json"
    assert (
        evaluate.main(
            [
                "--model",
                str(tiny_bundle),
                "--frames",
                str(frames),
                "--labels",
                str(labels),
                "--json",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    got = json.loads(out.read_text())
    assert JSON_KEYS <= set(got)
    assert got["frames"] == 4 and got["sequences"] == 1 and got["reset_every_frame"] is False
    assert got["device"] == "cpu"
    assert got["model"] == Segmenter(tiny_bundle).manifest.name and got["fps"] > 0
    images = _images(frames)
    truths = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(labels.iterdir())]
    preds = _loop(tiny_bundle, images, reset_before={0})
    assert all(p.shape == t.shape == (360, 480) for p, t in zip(preds, truths))  # frame's size
    miou, acc, iou = _miou(list(zip(preds, truths)))
    assert got["miou"] == pytest.approx(miou, abs=0.005)
    assert got["pixel_acc"] == pytest.approx(acc, abs=0.005)
    for c, name in enumerate(Segmenter(tiny_bundle).manifest.classes):
        if np.isnan(iou[c]):
            assert got["per_class"][name] is None
        else:
            assert got["per_class"][name] == pytest.approx(iou[c], abs=0.005)
    bands = [_band_by_offsets(t) for t in truths]
    assert 0 < sum(b.sum() for b in bands) < sum(t.size for t in truths) / 4
    trimap, _, _ = _miou([(p[b], t[b]) for p, t, b in zip(preds, truths, bands)])
    assert got["trimap_iou"] == pytest.approx(trimap, abs=0.005)
    assert got["trimap_iou"] != pytest.approx(got["miou"], abs=0.5)  # the band is not the frame
    counted = changed = truth_changed = excess = at_edges = wrong = wrong_again = 0
    for a, b, ta, tb in zip(preds, preds[1:], truths, truths[1:]):
        keep = (ta < K) & (tb < K)
        counted += keep.sum()
        changed += ((a != b) & keep).sum()
        truth_changed += ((ta != tb) & keep).sum()
        excess += ((a != b) & (ta == tb) & keep).sum()
        edges = _band_by_offsets(ta, got["edge_px"]) | _band_by_offsets(tb, got["edge_px"])
        at_edges += ((a != b) & (ta == tb) & keep & edges).sum()
        wrong += ((a != ta) & (ta == tb) & keep).sum()
        wrong_again += ((a != ta) & (b != tb) & (ta == tb) & keep).sum()
    assert got["flicker"] == pytest.approx(100 * changed / counted, abs=0.005)
    assert got["truth_flicker"] == pytest.approx(100 * truth_changed / counted, abs=0.005)
    assert got["excess_flicker"] == pytest.approx(100 * excess / counted, abs=0.005)
    assert got["excess_flicker_at_edges"] == pytest.approx(100 * at_edges / counted, abs=0.005)
    assert wrong and got["error_persistence"] == pytest.approx(100 * wrong_again / wrong, abs=0.005)
    steps = undone = 0
    for a, b, c, ta, tb, tc in zip(preds, preds[1:], preds[2:], truths, truths[1:], truths[2:]):
        steady = (a != b) & (ta == tb) & (tb == tc) & (ta < K)
        steps += steady.sum()
        undone += (steady & (c == a)).sum()
    if steps:
        assert got["excess_flicker_reverting"] == pytest.approx(100 * undone / steps, abs=0.005)
    else:
        assert got["excess_flicker_reverting"] is None


def test_state_resets_where_the_drive_changes(
    tiny_bundle: Path, camvid: Path, tmp_path: Path
) -> None:
    names = ["a_001", "a_002", "a_003", "b_001", "b_002"]
    assert [sequence_of(f"{n}.png") for n in names] == ["a"] * 3 + ["b"] * 2
    images = _images(_folder(tmp_path / "probe", camvid, names)[0])
    at_drive = _loop(tiny_bundle, images, reset_before={0, 3})
    carried = _loop(tiny_bundle, images, reset_before={0})
    # the state changes some labels on both of drive b's frames (about 0.1 % of the pixels for
    # this untrained net), else a missing reset could not show
    assert all((x != y).sum() > 0 for x, y in zip(at_drive[3:], carried[3:]))
    # labels = the loop that resets at the drive change: perfect score, through CLI and library
    frames, labels = _folder(tmp_path / "reset", camvid, names, labels=at_drive)
    out = tmp_path / "reset.json"
    assert (
        evaluate.main(
            [
                "--model",
                str(tiny_bundle),
                "--frames",
                str(frames),
                "--labels",
                str(labels),
                "--json",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    got = json.loads(out.read_text())
    assert got["sequences"] == 2 and got["frames"] == 5
    assert got["pixel_acc"] == 100.0 and got["miou"] == 100.0
    assert _score(tiny_bundle, frames, labels).metrics.pixel_acc == 100.0
    # labels = the loop that carries the state across the change: the engine's labels differ
    frames, labels = _folder(tmp_path / "carried", camvid, names, labels=carried)
    assert _score(tiny_bundle, frames, labels).metrics.pixel_acc < 100.0


def test_reset_every_frame_matches_a_resetting_loop(
    tiny_bundle: Path, camvid: Path, tmp_path: Path
) -> None:
    names = [p.stem for p in _val_images(camvid, 4)]
    images = _images(_folder(tmp_path / "probe", camvid, names)[0])
    fresh = _loop(tiny_bundle, images, reset_before=set(range(4)))
    frames, labels = _folder(tmp_path / "fresh", camvid, names, labels=fresh)
    out = tmp_path / "fresh.json"
    assert (
        evaluate.main(
            [
                "--model",
                str(tiny_bundle),
                "--frames",
                str(frames),
                "--labels",
                str(labels),
                "--json",
                str(out),
                "-q",
                "--reset-every-frame",
            ]
        )
        == 0
    )
    got = json.loads(out.read_text())
    assert got["reset_every_frame"] is True and got["pixel_acc"] == 100.0
    assert _score(tiny_bundle, frames, labels, carry_state=False).metrics.pixel_acc == 100.0
    assert _score(tiny_bundle, frames, labels, carry_state=True).metrics.pixel_acc < 100.0


def test_stream_order_strides_and_shuffles_each_drive() -> None:
    names = ["a_01", "a_02", "a_03", "a_04", "a_05", "b_01", "b_02", "b_03"]
    pairs = [(Path(f"f/{n}.png"), Path(f"l/{n}.png")) for n in names]

    def fed(*args) -> list[tuple[str, float | None]]:
        return [(i.stem, t) for i, _, t in evaluate.stream_order(pairs, *args)]

    assert fed() == [(n, None) for n in names]
    assert fed(2, None, 10.0) == [
        ("a_01", 0.0),
        ("a_03", 0.2),
        ("a_05", 0.4),
        ("b_01", 0.0),
        ("b_03", 0.2),
    ]
    shuffled = fed(1, 0, 10.0)
    assert shuffled == fed(1, 0, 10.0) and shuffled != fed(1, 1, 10.0)  # fixed by the seed
    # each drive whole and in place, its frames with their own timestamps, in a new order
    assert sorted(shuffled[:5]) == fed(1, None, 10.0)[:5] and shuffled[:5] != fed()[:5]
    assert sorted(shuffled[5:]) == fed(1, None, 10.0)[5:]
    assert sorted(fed(2, 3)) == sorted(fed(2))
    for bad in ((0,), (1, None, 0.0)):
        with pytest.raises(ValueError):
            evaluate.stream_order(pairs, *bad)


def _names_of(camvid: Path, n: int) -> list[str]:
    return [p.stem for p in _val_images(camvid, n)]


@pytest.mark.parametrize(
    "flags, order",
    [
        (["--stride", "2"], [0, 2, 4]),
        (["--shuffle", "0"], None),  # the order stream_order gives
    ],
)
def test_frames_far_apart_are_one_stream_with_the_state_carried(
    flags: list[str], order: list[int] | None, tiny_bundle: Path, camvid: Path, tmp_path: Path
) -> None:
    names = _names_of(camvid, 6)
    if order is None:
        pairs = [(Path(f"{n}.png"), Path(f"{n}.png")) for n in names]
        fed = [i.stem for i, _, _ in evaluate.stream_order(pairs, 1, 0)]
        order = [names.index(n) for n in fed]
    images = _images(_folder(tmp_path / "probe", camvid, names)[0])
    fed_images = [images[i] for i in order]
    carried = _loop(tiny_bundle, fed_images, reset_before={0})
    # labels = the loop over the frames fed, state carried: a perfect score
    truth = [np.zeros((360, 480), np.uint8)] * len(names)
    for i, labels in zip(order, carried):
        truth[i] = labels
    frames, labels = _folder(tmp_path / "fed", camvid, names, labels=truth)
    out = tmp_path / "fed.json"
    args = [
        "--model",
        str(tiny_bundle),
        "--frames",
        str(frames),
        "--labels",
        str(labels),
        "--json",
        str(out),
        "-q",
        *flags,
    ]
    assert evaluate.main(args) == 0
    got = json.loads(out.read_text())
    assert got["frames"] == len(order) and got["pixel_acc"] == 100.0
    assert got["stride"] == (2 if "--stride" in flags else 1)
    assert got["shuffle"] == (0 if "--shuffle" in flags else None)
    # the state is carried: a loop that resets before every frame scores below
    fresh = _loop(tiny_bundle, fed_images, reset_before=set(range(len(order))))
    assert any((a != b).any() for a, b in zip(carried[1:], fresh[1:]))
    assert evaluate.main([*args, "--reset-every-frame"]) == 0
    assert json.loads(out.read_text())["pixel_acc"] < 100.0
    # and --reset-every-frame still resets before every frame, in the same order
    for i, labels in zip(order, fresh):
        truth[i] = labels
    frames, labels = _folder(tmp_path / "fresh", camvid, names, labels=truth)
    args[3], args[5] = str(frames), str(labels)
    assert evaluate.main([*args, "--reset-every-frame"]) == 0
    got = json.loads(out.read_text())
    assert got["reset_every_frame"] is True and got["pixel_acc"] == 100.0


def test_frame_rate_gives_the_engine_the_gaps(
    tiny_bundle: Path, camvid: Path, tmp_path: Path
) -> None:
    """At 1 Hz every second frame is 2 s after the one before: the engine refreshes the memory
    before each (its default gap limit is below that), so the carried run is the reset one;
    --no-refresh carries it across the gaps."""
    names = _names_of(camvid, 6)
    images = _images(_folder(tmp_path / "probe", camvid, names)[0])[::2]
    fresh = _loop(tiny_bundle, images, reset_before={0, 1, 2})
    truth = [np.zeros((360, 480), np.uint8)] * len(names)
    truth[::2] = fresh
    frames, labels = _folder(tmp_path / "fresh", camvid, names, labels=truth)
    out = tmp_path / "rate.json"
    args = [
        "--model",
        str(tiny_bundle),
        "--frames",
        str(frames),
        "--labels",
        str(labels),
        "--json",
        str(out),
        "-q",
        "--stride",
        "2",
    ]
    assert evaluate.main([*args, "--frame-rate", "1"]) == 0
    got = json.loads(out.read_text())
    assert got["frame_rate"] == 1.0 and got["pixel_acc"] == 100.0 and got["refreshed"] == 2
    for extra in (["--frame-rate", "1", "--no-refresh"], ["--frame-rate", "15"], []):
        assert evaluate.main([*args, *extra]) == 0
        got = json.loads(out.read_text())
        assert got["pixel_acc"] < 100.0 and got["refreshed"] == 0, extra


@pytest.mark.parametrize(
    "flag, value",
    [("--stride", "0"), ("--shuffle", "-1"), ("--frame-rate", "0"), ("--frame-rate", "nan")],
)
def test_bad_order_flags_are_usage_errors(flag: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--frames", "f", "--labels", "l", flag, value])
    assert exc.value.code == 2 and flag in capsys.readouterr().err


def test_boundary_band_by_hand() -> None:
    v = 255  # void (any id >= K)
    truth = np.array(
        [
            [0, 0, 0, 0, 1, 1, 1, 1],
            [0, 0, 0, 0, 1, 1, 1, 1],
            [0, 0, v, v, v, 1, 1, 1],
            [2, 2, v, v, v, 1, 1, 1],
        ],
        np.uint8,
    )
    # rows 0-1: the columns within 2 of the 0|1 edge (cols 2..5), and row 1's 0s within 2 rows
    # of the 2s; rows 2-3: the 0s and 2s next to each other; the 1s of rows 2-3 touch only 1s
    # and void (row 1's 0 at col 3 is sqrt(5) from row 2's col 5), and the 2 at col 1 and the 1
    # at col 5 of row 3 sit 4 apart across the void
    want = np.array(
        [
            [0, 0, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(boundary_band(truth, K), want)
    np.testing.assert_array_equal(_band_by_offsets(truth), want)
    # the disk: one pixel of class 1 lights up the 12 pixels within distance 2 (and itself)
    dot = np.zeros((7, 7), np.uint8)
    dot[3, 3] = 1
    band = boundary_band(dot, K)
    assert band.sum() == 13 and band[3, 1] and band[2, 2] and not band[1, 2] and not band[1, 1]


class _FixedSegmenter:
    """Stands in for a Segmenter: returns ``preds`` in turn and logs resets and steps."""

    def __init__(self, preds: list[np.ndarray]) -> None:
        self.manifest = SimpleNamespace(classes=("x", "y", "z"), ignore_index=9, name="fixed")
        self.preds, self.log = list(preds), []

    def reset(self) -> None:
        self.log.append("reset")

    def step(self, frame: np.ndarray) -> SimpleNamespace:
        self.log.append("step")
        return SimpleNamespace(labels=self.preds.pop(0))


def test_trimap_iou_by_hand() -> None:
    from vidseg.models.data import LabelledFrame

    truth = np.zeros((4, 6), np.uint8)
    truth[:, 3:] = 1  # the edge between cols 2 and 3: band = cols 1..4
    truth[0, 0] = 9  # the ignore index: void, outside every count
    pred = np.zeros((4, 6), np.uint8)
    pred[:, 4:] = 1  # the predicted edge one column right
    frame = LabelledFrame("d_1.png", np.zeros((4, 6, 3), np.uint8), truth)
    seg = _FixedSegmenter([pred])
    score = evaluate_bundle(seg, [frame])
    # band: class 0 truth cols 1-2 (8 px), predicted 0 on cols 1-3 (12): IoU 8/12
    #       class 1 truth cols 3-4 (8 px), predicted 1 on col 4 (4): IoU 4/8; class 2 absent
    assert score.trimap.iou[:2] == pytest.approx((100 * 8 / 12, 50.0)) and np.isnan(
        score.trimap.iou[2]
    )
    assert score.trimap.miou == pytest.approx((100 * 8 / 12 + 50) / 2)
    # whole frame: class 0 truth 11 px, pred 15 (void pixel left out) -> 11/15; class 1 8/12
    assert score.metrics.miou == pytest.approx((100 * 11 / 15 + 100 * 8 / 12) / 2)
    # resets: before the first frame and at each drive change, never in between
    names = ["a_1", "a_2", "b_1", "b_2", "c_1"]
    seg = _FixedSegmenter([pred] * 5)
    score = evaluate_bundle(seg, [LabelledFrame(f"{n}.png", frame.image, truth) for n in names])
    assert seg.log == ["reset", "step", "step", "reset", "step", "step", "reset", "step", "reset"]
    assert score.sequences == 3 and score.frames == 5
    assert score.flicker.truth == 0 and score.flicker.pred == 0  # no pair across drives


def test_void_listed_among_the_classes_is_not_in_the_mean() -> None:
    """A wrapped 12-class bundle (11 classes + Void, ignore index 11): the void class is never
    a class of the mean (it scored 0 IoU and pulled the mIoU to 2/3 here), for vidseg-eval and
    vidseg-bench --accuracy alike (both score through evaluate_bundle)."""
    from vidseg.models.data import LabelledFrame

    truth = np.zeros((4, 6), np.uint8)
    truth[:, 3:] = 1
    truth[0, 0] = 11  # void
    pred = truth.copy()
    pred[1, 0] = 11  # the model says void on a class-0 pixel: class 0's miss
    seg = _FixedSegmenter([pred])
    names = tuple(f"c{i}" for i in range(11)) + ("Void",)
    seg.manifest = SimpleNamespace(classes=names, ignore_index=11, name="wrapped")
    score = evaluate_bundle(seg, [LabelledFrame("d_1.png", np.zeros((4, 6, 3), np.uint8), truth)])
    assert score.metrics.miou == pytest.approx((100 * 10 / 11 + 100) / 2)
    assert np.isnan(score.metrics.iou[11]) and np.isnan(score.trimap.iou[11])


@pytest.mark.parametrize(
    "fault, message",
    [
        ("no_frames", "frame folder not found"),
        ("no_label", "no label for frame f2.png"),
        ("size", "is 48x36 but its frame f2.png is 480x360"),
        ("rgb", "has 3 channels"),
        ("empty", "no PNG or JPEG images"),
        ("unreadable", "unreadable image"),
        ("all_void", "every labelled pixel of the 3 frames is void"),
    ],
)
def test_bad_inputs_fail_in_one_line(
    fault: str, message: str, tiny_bundle: Path, camvid: Path, tmp_path: Path, capsys
) -> None:
    frames, labels = _folder(tmp_path, camvid, ["f1", "f2", "f3"])
    if fault == "no_frames":
        frames = tmp_path / "missing"
    elif fault == "no_label":
        (labels / "f2.png").unlink()
    elif fault == "size":
        label = cv2.imread(str(labels / "f2.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(
            str(labels / "f2.png"), cv2.resize(label, (48, 36), interpolation=cv2.INTER_NEAREST)
        )
    elif fault == "rgb":
        label = cv2.imread(str(labels / "f2.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(labels / "f2.png"), np.dstack([label] * 3))
    elif fault == "empty":
        for path in frames.iterdir():
            path.unlink()
    elif fault == "unreadable":
        (frames / "f2.png").write_bytes(b"not a png")
    elif fault == "all_void":  # was scored: "mIoU n/a", pixel acc 0.00 and numpy's warning
        for path in labels.iterdir():
            cv2.imwrite(str(path), np.full((360, 480), 11, np.uint8))
    out = tmp_path / "never.json"
    code = evaluate.main(
        [
            "--model",
            str(tiny_bundle),
            "--frames",
            str(frames),
            "--labels",
            str(labels),
            "--json",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if line.startswith("vidseg-eval")]
    assert code == 1 and not out.exists()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_bad_bundle_exits_3(camvid: Path, tmp_path: Path, capsys) -> None:
    frames, labels = _folder(tmp_path, camvid, ["f1"])
    code = evaluate.main(
        [
            "--model",
            str(tmp_path / "nope.vidseg"),
            "--frames",
            str(frames),
            "--labels",
            str(labels),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and err.startswith("vidseg-eval: error:")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: the cuda run is tested below")
def test_cuda_without_a_gpu_is_one_line(
    tiny_bundle: Path, camvid: Path, tmp_path: Path, capsys
) -> None:
    frames, labels = _folder(tmp_path, camvid, ["f1"])
    code = evaluate.main(
        [
            "--model",
            str(tiny_bundle),
            "--frames",
            str(frames),
            "--labels",
            str(labels),
            "--device",
            "cuda",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 4 and err.count("\n") == 1 and "needs onnxruntime-gpu" in err, err  # backend


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a CUDA GPU")
def test_cuda_scores_as_the_cpu(tiny_bundle: Path, camvid: Path, tmp_path: Path) -> None:
    names = [p.stem for p in _val_images(camvid, 6)]
    frames, labels = _folder(tmp_path, camvid, names)
    got = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.json"
        assert (
            evaluate.main(
                [
                    "--model",
                    str(tiny_bundle),
                    "--frames",
                    str(frames),
                    "--labels",
                    str(labels),
                    "--device",
                    device,
                    "--json",
                    str(out),
                    "-q",
                ]
            )
            == 0
        )
        got[device] = json.loads(out.read_text())
    assert got["cuda"]["device"] == "cuda"
    for key in ("miou", "pixel_acc", "trimap_iou", "excess_flicker"):
        assert got["cuda"][key] == pytest.approx(got["cpu"][key], abs=0.1), key


def test_eval_never_imports_torch(tiny_bundle: Path, camvid: Path, tmp_path: Path) -> None:
    frames, labels = _folder(tmp_path, camvid, ["f1", "f2"])
    code = (
        "import sys\n"
        "from vidseg.benchmarks import evaluate\n"
        f"assert evaluate.main(['--model', {str(tiny_bundle)!r}, '--frames', {str(frames)!r}, "
        f"'--labels', {str(labels)!r}, '-q']) == 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or "
        "m.startswith('vidseg.export'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    repo = Path(__file__).resolve().parents[1]
    forbidden = re.compile(r"^\s*(import|from)\s+(torch|vidseg\.export)\b", re.M)
    for rel in (
        "benchmarks/evaluate.py",
        "benchmarks/accuracy.py",
        "models/data.py",
        "models/metrics.py",
    ):
        assert not forbidden.search((repo / rel).read_text()), f"{rel} imports torch/export"


def test_accuracy_page_documents_the_flags_that_exist() -> None:
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "accuracy.md").read_text()
    commands = " ".join(line for line in text.splitlines() if line.startswith("vidseg-eval "))
    flags = set(re.findall(r"--[a-z][a-z-]*", commands))
    assert {"--model", "--frames", "--labels", "--json", "--reset-every-frame"} <= flags
    assert flags <= set(re.findall(r"--[a-z][a-z-]*", evaluate.build_parser().format_help()))
    assert "## Score a bundle" in text
