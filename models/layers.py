"""Blocks shared by the model families: input normalisation, conv-BN-ReLU and its
depthwise-separable form, the UNet up-fuse step and the one convolutional GRU cell.

Every family imports these from here, so a change to one of them is a change to all families
(and to their exported graphs).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

PIXEL_CENTRE = 127.0  # uint8 value mapped to 0 by ``normalize``
PIXEL_SCALE = 128.0  # uint8 distance mapped to 1 by ``normalize``


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8-range frames (..., H, W, 3) RGB -> float (..., 3, H, W) scaled as (x - 127) / 128,
    the scaling the Lite0 ImageNet weights expect. Exported graphs run this same function, so
    the engine feeds them raw uint8 frames."""
    x = frames.float()
    lead = tuple(range(x.ndim - 3))
    x = x.permute(*lead, x.ndim - 1, x.ndim - 3, x.ndim - 2)  # positive axes: ONNX-safe
    return (x - PIXEL_CENTRE) / PIXEL_SCALE


def channel_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the channels of (N, K, H, W) logits, written out (max, exp, sum, divide):
    exported, it avoids the Softmax node that ONNX Runtime's CPU provider runs over NCHW's
    channel axis through transposes, several times slower."""
    e = (logits - logits.amax(1, keepdim=True)).exp()
    return e / e.sum(1, keepdim=True)


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def sep_conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU: a 3x3 block at ~1/9 cost."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UpFuse(nn.Module):
    """Bilinear upsampling of the coarse map to the skip's size, concat, then ``block``
    (a 3x3 conv-BN-ReLU by default; the key-frame decoder passes a separable one)."""

    def __init__(
        self,
        c_coarse: int,
        c_skip: int,
        c_out: int,
        block: Callable[[int, int], nn.Module] = conv_bn_relu,
    ) -> None:
        super().__init__()
        self.fuse = block(c_coarse + c_skip, c_out)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up, skip], dim=1))


class ConvGRU(nn.Module):
    """Convolutional GRU: r and z from one conv on concat(x, h), the candidate n from a conv on
    concat(x, r * h), then

        h' = (1 - z) * h + z * n        (z: the update gate, the share of the candidate)

    x, h: (N, C, H, W) with the same C; returns h' of that shape.

    Seed 001 (eqs. 8-11) writes the last line as h' = (1 - z') * n + z' * h: its gate z' is the
    share of the *old state*, z' = 1 - z. ``keep_gate=True`` reads the gate conv's second half
    as that z' (so seed-001 weights mean what the paper says) and computes exactly the paper's
    expression, (1 - z') * n + z' * h: the equation above with z = 1 - z', without rounding
    1 - z' twice. Both conventions share the parameters ``gates`` (C_rz) and ``candidate`` (C_n);
    a state dict from before the cells were one class (seed 001's ``conv_rz``/``conv_n``) loads
    as is.
    """

    OLD_NAMES = {"conv_rz.": "gates.", "conv_n.": "candidate."}  # seed-001 checkpoints

    def __init__(self, channels: int, kernel: int = 3, keep_gate: bool = False) -> None:
        super().__init__()
        self.keep_gate = keep_gate
        self.gates = nn.Conv2d(2 * channels, 2 * channels, kernel, padding=kernel // 2)
        self.candidate = nn.Conv2d(2 * channels, channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r, z = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))
        # (1 - g) * a + g * b: g = z weighs the candidate; g = z' (keep_gate) weighs the state
        a, b = (n, h) if self.keep_gate else (h, n)
        return (1 - z) * a + z * b

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            for old, new in self.OLD_NAMES.items():
                if key.startswith(prefix + old):
                    state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MemoryAdd(nn.Module):
    """A memory added to per-frame features: ``(y, h) -> (y + W h', h')`` with
    ``h' = ConvGRU(y, h)`` and W a 1x1 convolution that starts at zero.

    At initialisation the output is ``y`` whatever the state, so a network that gains these
    cells behind its per-frame blocks starts as exactly that per-frame network: its weights load
    unchanged and training can only add what the memory is worth (a zero-initialised residual
    branch, as in ReZero or ControlNet's zero convolutions).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gru = ConvGRU(channels)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.gru(y, h)
        return y + self.out(h), h
