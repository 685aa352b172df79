"""Sequence evaluation of a torch model on CamVid (metrics in :mod:`vidseg.models.metrics`)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vidseg.models.data import CAMVID_IGNORE, LabelledFrames
from vidseg.models.metrics import SegMetrics, confusion
from vidseg.models.protocol import TemporalModel


@torch.no_grad()
def evaluate_sequence(
    model: TemporalModel,
    data: LabelledFrames,
    carry_state: bool = True,
    ignore_index: int | None = CAMVID_IGNORE,
) -> SegMetrics:
    """Run ``model`` over ``data`` in file order, one frame at a time, as the engine would.

    Scored the way the engine delivers labels: the frame is resized to the model's input size
    (bilinear), the logits upsampled to that size and arg-maxed (as inside the exported graph),
    then the labels resized to the ground truth's size with nearest neighbour. Each frame is one
    ``model.stream_logits`` step; with ``carry_state`` its memory (recurrent state, key-frame
    cache, flow) flows from frame to frame (CamVid val is one drive at 15 Hz), without it every
    frame starts a new stream. Runs on the device of the model's parameters, in float32.
    ``ignore_index`` is void: never scored, never a class of the mean (also where the model
    has it among its classes).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    height, width = model.cfg.input_size
    num_classes = model.cfg.num_classes
    cm = np.zeros((num_classes, num_classes), np.int64)
    memory: object = None
    for image, label in zip(data.images, data.labels):
        x = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        logits, new_memory = model.stream_logits(torch.from_numpy(x)[None].to(device), memory)
        if carry_state:
            memory = new_memory
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        pred = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        pred = cv2.resize(pred, label.shape[::-1], interpolation=cv2.INTER_NEAREST)
        cm += confusion(pred, label, num_classes, ignore_index)
    model.train(was_training)
    return SegMetrics.from_confusion(cm, ignore_index)
