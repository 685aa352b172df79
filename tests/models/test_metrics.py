"""The void class is never a class of the mean: ``SegMetrics.from_confusion`` and the
training-time evaluation, where a model lists Void among its classes (11 classes + Void,
ignore index 11)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vidseg.models.data import LabelledFrames
from vidseg.models.evaluate import evaluate_sequence
from vidseg.models.metrics import SegMetrics, confusion

VOID = 11


def test_a_listed_void_class_is_left_out_of_the_mean() -> None:
    """A 12-class confusion whose class 11 is the ignore index: the mean is over the 11 others
    (IoU written out class by class), void's truth row is not counted and its IoU is nan; a
    class pixel predicted as void is that class's miss."""
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 50, (12, 12)) + np.diag(rng.integers(100, 400, 12))
    got = SegMetrics.from_confusion(cm, ignore_index=VOID)
    scored = cm[:VOID]  # truth rows of the 11 classes; every prediction column
    ious = [
        scored[c, c] / (scored[c].sum() + scored[:, c].sum() - scored[c, c]) for c in range(VOID)
    ]
    assert got.miou == pytest.approx(100 * np.mean(ious))
    assert got.iou[:VOID] == pytest.approx(tuple(100 * v for v in ious))
    assert np.isnan(got.iou[VOID]) and len(got.iou) == 12
    assert got.pixel_acc == pytest.approx(100 * np.trace(scored) / scored.sum())
    # without an ignore index every class counts, as before
    plain = SegMetrics.from_confusion(cm)
    assert not np.isnan(plain.iou[VOID]) and plain.miou != pytest.approx(got.miou)


class _FixedModel(torch.nn.Module):
    """Stands in for a temporal model with 12 classes: one-hot logits of ``pred``."""

    def __init__(self, pred: np.ndarray) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(input_size=pred.shape, num_classes=12)
        self.logits = torch.nn.functional.one_hot(torch.from_numpy(pred).long(), 12)
        self.logits = self.logits.permute(2, 0, 1)[None].float()

    def stream_logits(self, x: torch.Tensor, memory: object) -> tuple[torch.Tensor, object]:
        return self.logits, memory


def test_training_evaluation_leaves_a_listed_void_out() -> None:
    """Truth: classes 0 | 1 in two halves, one void pixel; the model says void on the void
    pixel and on one class-0 pixel. Class 0: 10 of 11, class 1: 12 of 12; void is not a third
    class with IoU 0 (that made the mean 2/3 of this)."""
    truth = np.zeros((4, 6), np.uint8)
    truth[:, 3:] = 1
    truth[0, 0] = VOID
    pred = truth.copy()
    pred[1, 0] = VOID
    data = LabelledFrames(np.zeros((1, 4, 6, 3), np.uint8), truth[None], ("f_1.png",))
    metrics = evaluate_sequence(_FixedModel(pred), data)
    assert metrics.miou == pytest.approx((100 * 10 / 11 + 100) / 2)
    assert confusion(pred, truth, 12, VOID).sum() == 23  # the void pixel is not counted
