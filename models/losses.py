"""Training losses shared by the model families."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidseg.models.data import CAMVID_IGNORE


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor,
                      ignore_index: int = CAMVID_IGNORE) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of logits (N, K, h, w) or (N, T, K, h, w) against labels (N, [T,] H, W).

    Logits are upsampled bilinearly to the label size first; ``ignore_index`` pixels are skipped.
    """
    if logits.ndim == 5:
        logits, labels = logits.flatten(0, 1), labels.flatten(0, 1)
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)
