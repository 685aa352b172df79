"""Segmentation metrics: confusion matrix, per-class IoU, mIoU (numpy only, no torch).

Shared by the torch evaluation of checkpoints (:mod:`vidseg.models.evaluate`) and the engine's
evaluation of exported bundles (:mod:`vidseg.benchmarks.accuracy`), so both count alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion(
    pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """(K, K) int64 counts, rows = truth, columns = prediction; truth ids >= K and
    ``ignore_index`` are void (not counted)."""
    keep = truth < num_classes
    if ignore_index is not None and ignore_index < num_classes:
        keep &= truth != ignore_index
    idx = truth[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegMetrics:
    miou: float  # mean IoU over classes present in truth or prediction, in percent
    pixel_acc: float  # percent of non-void pixels right
    iou: tuple[float, ...]  # per class, percent (nan when the class never occurs, or is void)

    @classmethod
    def from_confusion(cls, cm: np.ndarray, ignore_index: int | None = None) -> "SegMetrics":
        """The metrics of a (K, K) confusion (rows truth, columns prediction).

        ``ignore_index``: the void class. It is never a class of the mean, even where it is one
        of the K (a wrapped model that lists Void among its classes): its pixels of truth are
        not counted and its IoU is nan; a pixel of another class predicted as void is that
        class's miss.
        """
        cm = np.asarray(cm)
        void = ignore_index is not None and 0 <= ignore_index < len(cm)
        if void:
            cm = cm.copy()
            cm[ignore_index, :] = 0
        tp = np.diag(cm).astype(np.float64)
        union = cm.sum(0) + cm.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        if void:
            iou[ignore_index] = np.nan
        present = iou[~np.isnan(iou)]
        return cls(
            miou=float(present.mean() * 100) if present.size else float("nan"),
            pixel_acc=float(tp.sum() / max(cm.sum(), 1) * 100),
            iou=tuple(float(v * 100) for v in iou),
        )
