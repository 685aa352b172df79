"""Training losses: cross-entropy with void, boundary label relaxation (seed 002), the
temporal-consistency term and the warp behind it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidseg.models.data import CAMVID_IGNORE
from vidseg.models.losses import SegLoss, consistency_total, segmentation_loss, warp

K = 11


def _logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_relaxation_is_cross_entropy_without_boundaries() -> None:
    """One class per image (none of them void): every window holds only the centre's class."""
    logits = _logits(3, K, 8, 12).requires_grad_()  # stride 4 of the labels, as the models
    labels = torch.tensor([0, 5, 10])[:, None, None].expand(3, 32, 48).contiguous()
    up = F.interpolate(logits, size=(32, 48), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(up, labels)
    for border in (1, 2):
        relaxed = SegLoss(relax_border=border)(logits, labels)
        torch.testing.assert_close(relaxed, expected)
    grad_ce = torch.autograd.grad(expected, logits)[0]
    grad_relaxed = torch.autograd.grad(SegLoss(relax_border=1)(logits, labels), logits)[0]
    torch.testing.assert_close(grad_relaxed, grad_ce)
    # clips (N, T, K, h, w) flatten the same way
    clip = SegLoss(relax_border=1)(logits.detach()[None], labels[None])
    torch.testing.assert_close(clip, expected.detach())


def test_relaxation_zero_border_is_cross_entropy_everywhere() -> None:
    logits = _logits(2, K, 16, 16)
    labels = torch.randint(0, K + 1, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        SegLoss(relax_border=0)(logits, labels),
        F.cross_entropy(logits, labels, ignore_index=CAMVID_IGNORE),
    )


def test_relaxation_on_a_hand_made_boundary() -> None:
    """A row [a a b b] (classes 0 | 1), 3x3 windows: the two pixels on the boundary may be
    either class, the outer two only their own."""
    logits = _logits(1, K, 1, 4, seed=3)
    labels = torch.tensor([[[0, 0, 1, 1]]])
    p = logits.softmax(1)[0, :, 0]  # (K, 4)
    per_pixel = [
        -math.log(p[0, 0]),
        -math.log(p[0, 1] + p[1, 1]),
        -math.log(p[0, 2] + p[1, 2]),
        -math.log(p[1, 3]),
    ]
    relaxed = SegLoss(relax_border=1)(logits, labels)
    assert math.isclose(relaxed.item(), sum(per_pixel) / 4, rel_tol=1e-5)
    assert relaxed < segmentation_loss(logits, labels)  # the boundary is relaxed
    # a 5x5 window (border 2) reaches across for every pixel of this row
    wide = SegLoss(relax_border=2)(logits, labels)
    union = [-math.log(p[0, i] + p[1, i]) for i in range(4)]
    assert math.isclose(wide.item(), sum(union) / 4, rel_tol=1e-5)


def test_relaxation_void_is_neither_a_centre_nor_a_class() -> None:
    logits = _logits(1, K, 1, 4, seed=4)
    void = CAMVID_IGNORE
    labels = torch.tensor([[[void, 2, 2, void]]])
    relax = SegLoss(relax_border=1)
    # pixels 1 and 2 see only class 2 (void is no class): plain cross-entropy on them
    expected = F.cross_entropy(logits[..., 1:3], labels[..., 1:3])
    torch.testing.assert_close(relax(logits, labels), expected)
    # void centres: their logits do not matter
    other = logits.clone()
    other[0, :, 0, 0] += 5 * torch.arange(K, dtype=torch.float32)
    torch.testing.assert_close(relax(other, labels), expected)


def test_all_void_labels_give_zero_not_nan() -> None:
    """A frame whose labels are all void (propagation off: every frame but the labelled one)
    contributes nothing; F.cross_entropy alone would return NaN."""
    logits = _logits(2, K, 4, 6).requires_grad_()
    labels = torch.full((2, 16, 24), CAMVID_IGNORE)
    up = F.interpolate(logits, size=(16, 24), mode="bilinear", align_corners=False)
    assert torch.isnan(F.cross_entropy(up, labels, ignore_index=CAMVID_IGNORE))
    for loss_fn in (SegLoss(), SegLoss(relax_border=1), segmentation_loss):
        loss = loss_fn(logits, labels)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all() and not grad.any()


def test_segmentation_loss_is_cross_entropy_ignoring_void() -> None:
    logits = _logits(2, K, 8, 8)
    labels = torch.randint(0, K + 1, (2, 8, 8), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        segmentation_loss(logits, labels),
        F.cross_entropy(logits, labels, ignore_index=CAMVID_IGNORE),
    )
    total, count = SegLoss().total(logits, labels)
    assert count == (labels != CAMVID_IGNORE).sum()


def test_warp_follows_the_flow() -> None:
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).view(1, 2, 5, 7)
    flow = torch.zeros(1, 2, 5, 7)
    torch.testing.assert_close(warp(x, flow), x)
    flow[:, 0] = 1.0  # out(x, y) = in(x + 1, y); the last column samples outside: zeros
    shifted = warp(x, flow)
    torch.testing.assert_close(shifted[..., :-1], x[..., 1:])
    assert not shifted[..., -1].any()


def test_consistency_is_zero_for_a_prediction_that_moves_with_the_flow() -> None:
    probs = _logits(2, K, 6, 8).softmax(1)
    valid = torch.ones(2, 6, 8, dtype=torch.bool)
    total, count = consistency_total(probs, probs, torch.zeros(2, 2, 6, 8), valid)
    assert total.abs().item() < 1e-5 and count == 2 * 6 * 8
    flow = torch.zeros(2, 2, 6, 8)
    flow[:, 1] = -1.0  # frame t shows at row y what t - 1 showed at row y - 1: a downward move
    moved = torch.roll(probs, 1, dims=2)
    valid[:, 0] = False  # the top row came from outside t - 1
    total, _ = consistency_total(probs, moved, flow, valid)
    assert total.abs().item() < 1e-5
    other = _logits(2, K, 6, 8, seed=9).softmax(1)
    total, count = consistency_total(probs, other, torch.zeros(2, 2, 6, 8), valid)
    assert 0 < total / count <= 2
    none = torch.zeros_like(valid)
    assert consistency_total(probs, other, flow, none)[0] == 0  # occluded pixels do not count


def _reference_terms(
    logits: torch.Tensor, labels: torch.Tensor, border: int | None
) -> torch.Tensor:
    """Per-pixel unweighted terms, straight from the definitions (logits at the label size):
    cross-entropy, or -log of the probability of the classes in the pixel's window; 0 on void."""
    terms = torch.zeros(labels.shape)
    n, h, w = labels.shape
    for b, y, x in (labels != CAMVID_IGNORE).nonzero().tolist():
        scores = logits[b, :, y, x]
        if border is None:
            allowed = [int(labels[b, y, x])]
        else:
            window = labels[
                b, max(0, y - border) : y + border + 1, max(0, x - border) : x + border + 1
            ]
            allowed = sorted({int(c) for c in window.flatten() if c != CAMVID_IGNORE})
        terms[b, y, x] = scores.logsumexp(0) - scores[allowed].logsumexp(0)
    return terms


def test_class_weights_make_a_weighted_mean_of_each_criterion() -> None:
    """--class-balance: each non-void pixel's term times its class's weight, divided by the
    summed weights; all-ones weights change nothing; all-void labels still give 0."""
    logits = _logits(2, K, 8, 8)
    labels = torch.randint(0, K + 1, (2, 8, 8), generator=torch.Generator().manual_seed(3))
    labels[:, :3, :3] = 4  # a region of one class, so relaxation has an interior too
    weights = tuple(0.25 + 0.5 * k for k in range(K))
    valid = labels != CAMVID_IGNORE
    pixel_w = torch.where(valid, torch.tensor(weights)[labels.clamp(max=K - 1)], 0.0)
    for border in (None, 1):
        plain = SegLoss(relax_border=border)
        weighted = SegLoss(relax_border=border, class_weights=weights)
        ones = SegLoss(relax_border=border, class_weights=(1.0,) * K)
        torch.testing.assert_close(ones(logits, labels), plain(logits, labels))
        terms = _reference_terms(logits, labels, border)
        torch.testing.assert_close(plain(logits, labels), terms.sum() / valid.sum())
        expected = (terms * pixel_w).sum() / pixel_w.sum()
        torch.testing.assert_close(weighted(logits, labels), expected)
        torch.testing.assert_close(weighted.count(labels), pixel_w.sum())
        assert weighted(logits, torch.full_like(labels, CAMVID_IGNORE)).item() == 0.0
