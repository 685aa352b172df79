"""Accuracy of an exported bundle, measured through the engine (ONNX Runtime, no torch).

The CamVid val split is one drive of 101 labelled frames at 15 Hz, in file order: each frame
goes through ``Segmenter.step`` exactly as a video frame would (resize to the model input in the
engine, labels back at the frame's size), with the recurrent state or key-frame schedule carried
from frame to frame, and is scored against its label. ``carry_state=False`` resets the segmenter
before every frame: the gap between the two says what the model's memory is worth on real video.

This scores what ships -- the graph, its label stride, the engine's resizing -- rather than the
torch checkpoint it came from (:func:`vidseg.models.evaluate.evaluate_sequence`); the two agree
within the export's parity tolerance.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from vidseg.engine.errors import VidsegError
from vidseg.engine.segmenter import Segmenter
from vidseg.models.data import CAMVID_CLASSES, LabelledFrames, load_split
from vidseg.models.metrics import SegMetrics, confusion


def evaluate_bundle(
    segmenter: Segmenter, data: LabelledFrames, carry_state: bool = True
) -> SegMetrics:
    """Score ``segmenter`` over ``data`` in order (state carried unless ``carry_state`` is off).

    Raises:
        VidsegError: the bundle's classes are not CamVid's.
    """
    classes = tuple(segmenter.manifest.classes)
    if classes != CAMVID_CLASSES:
        raise VidsegError(f"accuracy is measured on CamVid; the bundle's classes are {classes}")
    num_classes = len(classes)
    cm = np.zeros((num_classes, num_classes), np.int64)
    segmenter.reset()
    for image, label in zip(data.images, data.labels):
        if not carry_state:
            segmenter.reset()
        cm += confusion(segmenter.step(image).labels, label, num_classes)
    segmenter.reset()
    return SegMetrics.from_confusion(cm)


def accuracy_report(segmenter: Segmenter, data_root: str | Path) -> dict[str, object]:
    """CamVid val metrics of ``segmenter`` with state carried and with a reset every frame."""
    data = load_split(data_root, "val")
    carried = evaluate_bundle(segmenter, data, carry_state=True)
    reset = evaluate_bundle(segmenter, data, carry_state=False)
    return {
        "split": f"CamVid val ({len(data.images)} frames in order)",
        "miou": round(carried.miou, 2),
        "miou_reset_every_frame": round(reset.miou, 2),
        "pixel_acc": round(carried.pixel_acc, 2),
        "iou": {c: round(v, 2) for c, v in zip(CAMVID_CLASSES, asdict(carried)["iou"])},
    }
