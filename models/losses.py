"""Training losses shared by the model families.

Every family computes its supervised term through a :class:`SegLoss` (``criterion``): plain
cross-entropy by default, or seed 002's boundary label relaxation (Zhu et al. 2019) with
``SegLoss(relax_border=R)``, so one trainer flag reaches every family. Losses average over the
labelled (non-void) pixels and are 0, not NaN, when every pixel is void.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidseg.models.data import CAMVID_IGNORE


def _at_label_size(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, [T,] K, h, w) logits and (N, [T,] H, W) labels -> (M, K, H, W) logits upsampled
    bilinearly to the label size in float32 (also for bf16 logits), (M, H, W) labels."""
    if logits.ndim == 5:
        logits, labels = logits.flatten(0, 1), labels.flatten(0, 1)
    logits = logits.float()
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return logits, labels


def pixel_weights(
    labels: torch.Tensor, class_weights: torch.Tensor | None, ignore_index: int = CAMVID_IGNORE
) -> torch.Tensor:
    """Each pixel's weight in the loss: 0 on void, else its class's weight (1 without
    ``class_weights``, a (K,) tensor)."""
    valid = labels != ignore_index
    if class_weights is None:
        return valid.float()
    return class_weights.to(labels.device)[torch.where(valid, labels, 0)] * valid


def cross_entropy_total(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = CAMVID_IGNORE,
    class_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy summed over the non-void pixels, each times its class's weight, and the
    sum of those weights (without ``class_weights``: the number of non-void pixels)."""
    logits, labels = _at_label_size(logits, labels)
    weight = None if class_weights is None else class_weights.to(logits.device)
    total = F.cross_entropy(
        logits, labels, weight=weight, ignore_index=ignore_index, reduction="sum"
    )
    return total, pixel_weights(labels, class_weights, ignore_index).sum()


def boundary_relaxation_total(
    logits: torch.Tensor,
    labels: torch.Tensor,
    border: int = 1,
    ignore_index: int = CAMVID_IGNORE,
    class_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary label relaxation (Zhu et al. 2019, seed 002), summed, and the pixel count (with
    ``class_weights``: each pixel's term times its own class's weight, and those weights
    summed).

    At each non-void pixel p: ``-log(sum over classes c in N(p) of softmax(p)_c)``, N(p) the
    classes of the label map in the (2 border + 1)^2 window around p (void is not a class).
    Inside a region of one class it is cross-entropy; on a boundary any class of the window
    may claim the pixel. Computed at the label size (logits upsampled bilinearly) with a
    one-hot map and a max-pool.
    """
    logits, labels = _at_label_size(logits, labels)
    k = logits.shape[1]
    valid = labels != ignore_index
    index = torch.where(valid, labels, k)[:, None]  # void -> an extra channel, dropped below
    onehot = torch.zeros(labels.shape[0], k + 1, *labels.shape[1:], device=labels.device)
    onehot.scatter_(1, index, 1.0)
    window = 2 * border + 1
    present = F.max_pool2d(onehot[:, :k], window, stride=1, padding=border) > 0
    # void centres: every class "present", so their term is exactly 0 and its gradient finite
    present |= ~valid[:, None]
    per_pixel = logits.logsumexp(1) - logits.masked_fill(~present, float("-inf")).logsumexp(1)
    weights = pixel_weights(labels, class_weights, ignore_index)
    return (per_pixel * weights).sum(), weights.sum()


@dataclass(frozen=True)
class SegLoss:
    """The supervised loss every family's training uses: a callable ``(logits, labels) ->
    scalar``, the mean over non-void pixels (0 when there are none).

    ``logits``: (N, K, h, w) or (N, T, K, h, w), upsampled to the labels' size first;
    ``labels``: (N, [T,] H, W) int64 class ids, ``ignore_index`` = void.
    """

    relax_border: int | None = None  # None: cross-entropy; R: relaxation over (2R+1)^2
    ignore_index: int = CAMVID_IGNORE
    class_weights: tuple[float, ...] | None = None  # per-class pixel weights (None: all 1)

    @property
    def _weights(self) -> torch.Tensor | None:
        return None if self.class_weights is None else torch.tensor(self.class_weights)

    def count(self, labels: torch.Tensor) -> torch.Tensor:
        """The denominator of the mean: the summed pixel weights (without class weights, the
        number of non-void pixels)."""
        return pixel_weights(labels, self._weights, self.ignore_index).sum()

    def total(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the weighted per-pixel loss, :meth:`count`): what chunked training
        (truncated BPTT) needs to weight chunks as one mean over the whole clip."""
        logits, ids = _at_label_size(logits, labels)
        if self.relax_border is None:
            total, count = cross_entropy_total(logits, ids, self.ignore_index, self._weights)
        else:
            total, count = boundary_relaxation_total(
                logits, ids, self.relax_border, self.ignore_index, self._weights
            )
        return total, count

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total, count = self.total(logits, labels)
        return total / count.to(total.dtype).clamp(min=1e-12)  # 0 (not NaN) when all void


CROSS_ENTROPY = SegLoss()  # the default criterion


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = CAMVID_IGNORE
) -> torch.Tensor:
    """Cross-entropy of logits (N, K, h, w) or (N, T, K, h, w) against labels (N, [T,] H, W).

    Logits are upsampled bilinearly to the label size first; ``ignore_index`` pixels are
    skipped; all-void labels give 0 (``F.cross_entropy`` alone would give NaN).
    """
    return SegLoss(ignore_index=ignore_index)(logits, labels)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warping: ``out[:, :, y, x] = x[:, :, y + dy, x + dx]`` (bilinear, zeros
    outside), ``flow`` (N, 2, h, w) = (dx, dy) in pixels of ``x``'s (N, C, h, w) grid."""
    n, _, h, w = x.shape
    gy, gx = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=flow.dtype),
        torch.arange(w, device=x.device, dtype=flow.dtype),
        indexing="ij",
    )
    px, py = gx + flow[:, 0], gy + flow[:, 1]
    grid = torch.stack([2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1], dim=-1)
    return F.grid_sample(
        x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True
    )


def consistency_total(
    previous: torch.Tensor, current: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal consistency of class probabilities, summed, and the number of pixels scored.

    ``previous``, ``current``: (N, K, h, w) probabilities of frames t - 1 and t; ``flow``:
    (N, 2, h, w) backward flow of frame t to frame t - 1 on that grid; ``valid`` (N, h, w)
    bool, the pixels of t visible in t - 1. Per valid pixel: the L1 distance between t's
    probabilities and t - 1's warped onto t (in [0, 2]; 0 when the prediction moves with the
    flow). Both frames get the gradient.
    """
    distance = (current - warp(previous, flow)).abs().sum(1)
    return torch.where(valid, distance, 0).sum(), valid.sum()
