"""Sequence evaluation of a torch model on CamVid (metrics in :mod:`vidseg.models.metrics`)."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vidseg.models.data import LabelledFrames
from vidseg.models.metrics import SegMetrics, confusion
from vidseg.models.segnet import normalize


def zero_state(model: torch.nn.Module, batch: int, height: int, width: int,
               device: torch.device) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """The model's zero recurrent state for ``batch`` frames of ``height`` x ``width``, made on
    ``device`` (``initial_state`` builds its zeros with the default device, the CPU); () for
    models without state or without ``initial_state``."""
    initial_state = getattr(model, "initial_state", None)
    if initial_state is None or not model.cfg.state:
        return ()
    with torch.device(device):
        return tuple(initial_state(batch, height, width))


def _stream_logits(model: torch.nn.Module, frame: torch.Tensor,
                   memory: object) -> tuple[torch.Tensor, object]:  # fmt: skip
    """One streaming step of a ``forward(x, *state) -> (logits, *state)`` model.

    frame: (1, h, w, 3) uint8; memory: the state tuple, None at the start of a stream (zeros on
    the frame's device). Models with other streaming logic (key frames, optical flow) define
    ``stream_logits`` themselves.
    """
    if memory is None:
        memory = zero_state(model, frame.shape[0], frame.shape[1], frame.shape[2], frame.device)
    logits, *state = model(normalize(frame), *memory)  # type: ignore[misc]
    return logits, tuple(state)


@torch.no_grad()
def evaluate_sequence(
    model: torch.nn.Module, data: LabelledFrames, carry_state: bool = True
) -> SegMetrics:
    """Run ``model`` over ``data`` in file order, one frame at a time, as the engine would.

    Scored the way the engine delivers labels: the frame is resized to the model's input size
    (bilinear), the logits upsampled to that size and arg-maxed (as inside the exported graph),
    then the labels resized to the ground truth's size with nearest neighbour. With ``carry_state`` the recurrent state flows from frame to
    frame (CamVid val is one drive at 15 Hz); without it every frame starts from zeros. Runs on
    the device of the model's parameters, in float32.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    height, width = model.cfg.input_size
    num_classes = model.cfg.num_classes
    cm = np.zeros((num_classes, num_classes), np.int64)
    stream = getattr(model, "stream_logits", None) or partial(_stream_logits, model)
    memory: object = None
    for image, label in zip(data.images, data.labels):
        x = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        logits, new_memory = stream(torch.from_numpy(x)[None].to(device), memory)
        if carry_state:
            memory = new_memory
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        pred = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        pred = cv2.resize(pred, label.shape[::-1], interpolation=cv2.INTER_NEAREST)
        cm += confusion(pred, label, num_classes)
    model.train(was_training)
    return SegMetrics.from_confusion(cm)
