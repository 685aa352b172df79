"""Segmentation metrics: confusion matrix, per-class IoU, mIoU (numpy only, no torch).

Shared by the torch evaluation of checkpoints (:mod:`vidseg.models.evaluate`) and the engine's
evaluation of exported bundles (:mod:`vidseg.benchmarks.accuracy`), so both count alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = truth, columns = prediction; truth ids >= K are ignored."""
    keep = truth < num_classes
    idx = truth[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegMetrics:
    miou: float  # mean IoU over classes present in truth or prediction, in percent
    pixel_acc: float  # percent of non-void pixels right
    iou: tuple[float, ...]  # per class, percent (nan when the class never occurs)

    @classmethod
    def from_confusion(cls, cm: np.ndarray) -> "SegMetrics":
        tp = np.diag(cm).astype(np.float64)
        union = cm.sum(0) + cm.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        return cls(
            miou=float(np.nanmean(iou) * 100),
            pixel_acc=float(tp.sum() / max(cm.sum(), 1) * 100),
            iou=tuple(float(v * 100) for v in iou),
        )
