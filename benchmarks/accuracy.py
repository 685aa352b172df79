"""Accuracy and temporal consistency of an exported bundle, measured through the engine (ONNX
Runtime, no torch).

The CamVid val split is one drive of 101 labelled frames at 15 Hz, in file order: each frame
goes through ``Segmenter.step`` exactly as a video frame would (resize to the model input in the
engine, labels back at the frame's size), with the recurrent state or key-frame schedule carried
from frame to frame, and is scored against its label. ``carry_state=False`` resets the segmenter
before every frame: the gap between the two says what the model's memory is worth on real video.

The same pass measures flicker (:class:`FlickerMeter`), over each pair of consecutive frames and
the pixels that are non-void in both labels, pooled over the split, in percent:

* ``flicker`` -- pixels whose predicted label changes from one frame to the next;
* ``truth_flicker`` -- pixels whose true label changes: the floor that real motion sets;
* ``excess_flicker`` -- pixels whose prediction changes while the truth does not.

On unlabelled video the meter measures ``flicker`` alone, over every pixel.

This scores what ships -- the graph, its label stride, the engine's resizing -- rather than the
torch checkpoint it came from (:func:`vidseg.models.evaluate.evaluate_sequence`); the two agree
within the export's parity tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vidseg.engine.errors import VidsegError
from vidseg.engine.segmenter import Segmenter
from vidseg.models.data import CAMVID_CLASSES, LabelledFrames, load_split
from vidseg.models.metrics import SegMetrics, confusion


@dataclass(frozen=True)
class Flicker:
    """Frame-to-frame label changes, percent of the pixels counted (nan: no pair counted)."""

    pred: float  # predicted label changes
    truth: float  # true label changes (nan without truth)
    excess: float  # predicted changes where the truth stays the same (nan without truth)


class FlickerMeter:
    """Accumulates :class:`Flicker` over a sequence, one frame at a time (numpy only).

    With truth, a pixel of a pair counts when its truth is a class id (``< num_classes``, so not
    void) in both frames; without truth every pixel counts. Give truth for all frames or none.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._prev: tuple[np.ndarray, np.ndarray | None] | None = None
        self._counted = self._pred = self._truth = self._excess = 0

    def add(self, pred: np.ndarray, truth: np.ndarray | None = None) -> None:
        """The next frame's (H, W) predicted labels and, if labelled, its (H, W) true labels."""
        if truth is not None and truth.shape != pred.shape:
            raise ValueError(f"labels {pred.shape} and truth {truth.shape} differ in shape")
        if self._prev is not None:
            prev_pred, prev_truth = self._prev
            if prev_pred.shape != pred.shape or (prev_truth is None) != (truth is None):
                raise ValueError("every frame of a sequence needs the same shape, and truth "
                                 "for all frames or none")  # fmt: skip
            changed = prev_pred != pred
            if truth is None:
                self._counted += changed.size
                self._pred += int(changed.sum())
            else:
                keep = (prev_truth < self.num_classes) & (truth < self.num_classes)
                truth_changed = (prev_truth != truth) & keep
                changed &= keep
                self._counted += int(keep.sum())
                self._pred += int(changed.sum())
                self._truth += int(truth_changed.sum())
                self._excess += int((changed & ~truth_changed).sum())
        self._prev = (pred.copy(), None if truth is None else truth.copy())

    def result(self) -> Flicker:
        if not self._counted:
            return Flicker(float("nan"), float("nan"), float("nan"))
        pred = 100 * self._pred / self._counted
        if self._prev is None or self._prev[1] is None:  # unlabelled
            return Flicker(pred, float("nan"), float("nan"))
        return Flicker(pred, 100 * self._truth / self._counted, 100 * self._excess / self._counted)


@dataclass(frozen=True)
class BundleScore:
    """A bundle scored over a labelled sequence: per-frame metrics and frame-to-frame flicker."""

    metrics: SegMetrics
    flicker: Flicker


def evaluate_bundle(
    segmenter: Segmenter, data: LabelledFrames, carry_state: bool = True
) -> BundleScore:
    """Score ``segmenter`` over ``data`` in order (state carried unless ``carry_state`` is off).

    Raises:
        VidsegError: the bundle's classes are not CamVid's.
    """
    classes = tuple(segmenter.manifest.classes)
    if classes != CAMVID_CLASSES:
        raise VidsegError(f"accuracy is measured on CamVid; the bundle's classes are {classes}")
    num_classes = len(classes)
    cm = np.zeros((num_classes, num_classes), np.int64)
    flicker = FlickerMeter(num_classes)
    segmenter.reset()
    for image, label in zip(data.images, data.labels):
        if not carry_state:
            segmenter.reset()
        pred = segmenter.step(image).labels
        cm += confusion(pred, label, num_classes)
        flicker.add(pred, label)
    segmenter.reset()
    return BundleScore(SegMetrics.from_confusion(cm), flicker.result())


def accuracy_report(segmenter: Segmenter, data_root: str | Path) -> dict[str, object]:
    """CamVid val metrics of ``segmenter`` with state carried and with a reset every frame, and
    the flicker of the carried run."""
    data = load_split(data_root, "val")
    carried = evaluate_bundle(segmenter, data, carry_state=True)
    reset = evaluate_bundle(segmenter, data, carry_state=False)
    return {
        "split": f"CamVid val ({len(data.images)} frames in order)",
        "miou": round(carried.metrics.miou, 2),
        "miou_reset_every_frame": round(reset.metrics.miou, 2),
        "pixel_acc": round(carried.metrics.pixel_acc, 2),
        "flicker": round(carried.flicker.pred, 2),
        "excess_flicker": round(carried.flicker.excess, 2),
        "truth_flicker": round(carried.flicker.truth, 2),
        "flicker_reset_every_frame": round(reset.flicker.pred, 2),
        "iou": {c: round(v, 2) for c, v in zip(CAMVID_CLASSES, asdict(carried.metrics)["iou"])},
    }
