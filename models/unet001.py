"""Seed-001 temporal UNets: cRNN / cGRU cells on the skips of a small UNet, three block types.

Sheludzko, Schwemmer, Gómez Ruiz, "Video Semantic Segmentation" (Lab Vision Systems WS22/23,
Bonn; seed 001 of the project's reading list). The network is a plain UNet trained from
scratch:

* encoder: a stem block at full resolution, then per level a 2x2 stride-2 conv and a block;
  widths per Table 1 -- ``original`` (64, 128, 256), ``shallow`` (16, 32, 64) and ``deep``
  (16, 32, 64, 128);
* a temporal cell (cRNN or cGRU, 3x3 convs, hidden width = block width) at the end of every
  encoder block. The cells sit on the skip path: the encoder itself is stateless, so on clips it
  runs on all frames at once and only the cells loop over time. The deepest cell's state is the
  decoder's input;
* decoder: per level a 2x2 stride-2 transposed conv halving the width, concatenated with that
  level's hidden state (the concat doubles the width back, as Table 1 notes), then a block;
* a 3x3 conv to the class logits at full input resolution.

Block types (paper 2.2 / Fig. 5): ``vanilla`` (two conv-BN-ReLU, as in UNet), ``resnet``
(ResNet-18 basic block with a 1x1 projection shortcut; 7x7 stem conv as in ResNet-18) and
``convnext`` (ConvNeXt block with BatchNorm, up-blocks with ConvUNeXt's gated skip fusion). The
paper's text fixes the widths, cells, kernels and resampling; the block internals that only its
Fig. 5 shows were chosen so that every Table 3 parameter count is reproduced exactly (with the
paper's 20 Cityscapes labels; see ``PAPER_TABLE3_PARAMS``).

The per-frame baselines (``perframe-unet-*``) are the same networks without the cells: the
encoder features go straight to the decoder, which is how Table 3's "Vanilla UNET" row counts.

As in the rest of vidseg, state is explicit: ``forward(x, *state) -> (logits, *state)``, one
state tensor per cell, zeros at the start of a stream.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from vidseg.engine.errors import VidsegError
from vidseg.models.layers import ConvGRU
from vidseg.models.protocol import TemporalModule
from vidseg.models.registry import ModelCfg, StateCfg, register_model

# Table 1 widths per encoder level (the decoder mirrors them).
WIDTHS: dict[str, tuple[int, ...]] = {
    "original": (64, 128, 256),
    "shallow": (16, 32, 64),
    "deep": (16, 32, 64, 128),
}

# Table 3 of the paper: parameter counts with its 20 Cityscapes labels (19 classes + "other").
PAPER_NUM_CLASSES = 20
PAPER_TABLE3_PARAMS: dict[str, int] = {
    "perframe-unet-vanilla-shallow": 125_732,
    "perframe-unet-vanilla-deep": 507_940,
    "perframe-unet-vanilla-original": 1_958_996,
    "recurrent-unet-vanilla-shallow-crnn": 222_724,
    "recurrent-unet-vanilla-deep-crnn": 900_100,
    "recurrent-unet-vanilla-original-crnn": 3_508_180,
    "recurrent-unet-vanilla-shallow-cgru": 416_372,
    "recurrent-unet-vanilla-deep-cgru": 1_683_700,
    "recurrent-unet-vanilla-original-cgru": 6_605_204,
    "recurrent-unet-resnet-shallow-crnn": 229_908,
    "recurrent-unet-resnet-deep-crnn": 923_860,
    "recurrent-unet-resnet-original-crnn": 3_598_356,
    "recurrent-unet-resnet-shallow-cgru": 423_556,
    "recurrent-unet-resnet-deep-cgru": 1_707_460,
    "recurrent-unet-resnet-original-cgru": 6_695_380,
    "recurrent-unet-convnext-deep-crnn": 760_420,
    "recurrent-unet-convnext-original-crnn": 2_933_588,
    "recurrent-unet-convnext-deep-cgru": 1_544_020,
    "recurrent-unet-convnext-original-cgru": 6_030_612,
}

# ---------------------------------------------------------------------------------------------
# blocks


def conv_bn_act(
    c_in: int, c_out: int, kernel: int, act: Callable[[], nn.Module] | None = nn.ReLU
) -> nn.Sequential:
    """Conv (with bias, as the paper's counts include it) -> BatchNorm -> activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2),
        nn.BatchNorm2d(c_out),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def down_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """The paper's downsampling: 2x2 conv, stride 2."""
    return nn.Conv2d(c_in, c_out, 2, stride=2)


def up_conv(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    """The paper's upsampling: 2x2 transposed conv, stride 2."""
    return nn.ConvTranspose2d(c_in, c_out, 2, stride=2)


class VanillaDown(nn.Module):
    """2x2/2 conv at ``c_in``, then UNet's two 3x3 conv-BN-ReLU to ``c_out``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = down_conv(c_in, c_in)
        self.block = nn.Sequential(conv_bn_act(c_in, c_out, 3), conv_bn_act(c_out, c_out, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.down(x))


class VanillaUp(nn.Module):
    """Transposed conv ``c_deep -> c_skip``, concat with the skip, two conv-BN-ReLU to c_skip."""

    def __init__(self, c_deep: int, c_skip: int) -> None:
        super().__init__()
        self.up = up_conv(c_deep, c_skip)
        self.block = nn.Sequential(
            conv_bn_act(2 * c_skip, c_skip, 3), conv_bn_act(c_skip, c_skip, 3)
        )

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(deep), skip], dim=1))


def vanilla_stem(width: int) -> nn.Module:
    return nn.Sequential(conv_bn_act(3, width, 3), conv_bn_act(width, width, 3))


class ResidualBlock(nn.Module):
    """ResNet-18 basic block: conv-BN-ReLU, conv-BN, plus a 1x1 conv projection of the input
    (ResNet option C: projected even where widths agree), then ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_act(c_in, c_out, 3), conv_bn_act(c_out, c_out, 3, None))
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNetDown(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = down_conv(c_in, c_in)
        self.block = ResidualBlock(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.down(x))


class ResNetUp(nn.Module):
    def __init__(self, c_deep: int, c_skip: int) -> None:
        super().__init__()
        self.up = up_conv(c_deep, c_skip)
        self.block = ResidualBlock(2 * c_skip, c_skip)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(deep), skip], dim=1))


def resnet_stem(width: int) -> nn.Module:
    """ResNet-18's 7x7 stem conv (at stride 1 here), then a 3x3 conv-BN-ReLU."""
    return nn.Sequential(conv_bn_act(3, width, 7), conv_bn_act(width, width, 3))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block with BatchNorm: depthwise 7x7, BN, 1x1 to 4x, GELU, 1x1 back, BN, then
    GELU of the residual sum. Pointwise layers are 1x1 convs (same parameters as the Linear
    layers of the original, no layout permutes in the exported graph)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 7, padding=3, groups=width),
            nn.BatchNorm2d(width),
            nn.Conv2d(width, 4 * width, 1),
            nn.GELU(),
            nn.Conv2d(4 * width, width, 1),
            nn.BatchNorm2d(width),
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ConvNeXtDown(nn.Module):
    """2x2/2 conv straight to ``c_out`` (ConvNeXt's downsampling layer), then a block."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = down_conv(c_in, c_out)
        self.block = ConvNeXtBlock(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.down(x))


class ConvNeXtUp(nn.Module):
    """ConvUNeXt up-block: BN, transposed conv ``c_deep -> c_skip``; the upsampled map gates
    the skip (g1, g2, g3 from one 1x1 conv: skip' = W2(sigmoid(W1(g1 + skip)) * skip +
    sigmoid(g2) * tanh(g3))); 1x1 conv fuses concat(skip', up) to ``c_skip``; a ConvNeXt block.
    """

    def __init__(self, c_deep: int, c_skip: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(c_deep)
        self.up = up_conv(c_deep, c_skip)
        self.gate = nn.Conv2d(c_skip, 3 * c_skip, 1)
        self.gate_skip = nn.Conv2d(c_skip, c_skip, 1)
        self.project_skip = nn.Conv2d(c_skip, c_skip, 1)
        self.fuse = nn.Conv2d(2 * c_skip, c_skip, 1)
        self.block = ConvNeXtBlock(c_skip)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(self.norm(deep))
        g1, g2, g3 = self.gate(up).chunk(3, dim=1)
        skip = torch.sigmoid(self.gate_skip(g1 + skip)) * skip + torch.sigmoid(g2) * torch.tanh(g3)
        return self.block(self.fuse(torch.cat([self.project_skip(skip), up], dim=1)))


def convnext_stem(width: int) -> nn.Module:
    return nn.Sequential(conv_bn_act(3, width, 7, nn.GELU), ConvNeXtBlock(width))


class BlockKind(NamedTuple):
    stem: Callable[[int], nn.Module]  # width -> module, full resolution, input 3 channels
    down: Callable[[int, int], nn.Module]  # (c_in, c_out) -> module halving H and W
    up: Callable[[int, int], nn.Module]  # (c_deep, c_skip) -> module(deep, skip) doubling H, W


BLOCKS: dict[str, BlockKind] = {
    "vanilla": BlockKind(vanilla_stem, VanillaDown, VanillaUp),
    "resnet": BlockKind(resnet_stem, ResNetDown, ResNetUp),
    "convnext": BlockKind(convnext_stem, ConvNeXtDown, ConvNeXtUp),
}


class ConvRNNCell(nn.Module):
    """cRNN (paper eq. 3): y_t = tanh(C_x * x_t + C_h * y_{t-1}); y is output and state.

    The paper leaves the activation f generic; tanh keeps the state bounded over arbitrarily
    long streams. x, y: (N, C, H, W), same C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_x = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_h = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv_x(x) + self.conv_h(h))


def seed001_gru(channels: int) -> ConvGRU:
    """cGRU (paper eqs. 8-11, A.2): the one ConvGRU with the paper's gate, which weighs the old
    state: h' = (1 - z') . n + z' . h (``ConvGRU(keep_gate=True)``; z' = 1 - z of vidseg's
    convention). 3x3 convs, one C_rz and one C_n."""
    return ConvGRU(channels, kernel=3, keep_gate=True)


CELLS: dict[str, Callable[[int], nn.Module]] = {"crnn": ConvRNNCell, "cgru": seed001_gru}

# ---------------------------------------------------------------------------------------------
# model


class TemporalUNet(TemporalModule):
    """UNet with an optional temporal cell per encoder level (see the module docstring).

    Input: normalized float frames (N, 3, H, W) or clips (N, T, 3, H, W), H and W multiples of
    ``cfg.stride``. Output: logits at full resolution (N, K, H, W) (clips: (N, T, K, H, W)),
    then the new state, one (N, C_i, H / s_i, W / s_i) tensor per ``cfg.state`` entry. Without
    state arguments the state starts at zeros; clips carry it across their T frames.
    """

    def __init__(
        self, cfg: ModelCfg, block: str, widths: tuple[int, ...], cell: str | None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        kind = BLOCKS[block]
        self.stem = kind.stem(widths[0])
        self.downs = nn.ModuleList(kind.down(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.cells = nn.ModuleList(CELLS[cell](w) for w in widths) if cell else None
        # ups[i] merges level i + 1 into level i; applied deepest first
        self.ups = nn.ModuleList(kind.up(b, a) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Conv2d(widths[0], cfg.num_classes, 3, padding=1)

    def _check_input(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> None:
        if x.ndim not in (4, 5) or x.shape[-3] != 3:
            raise VidsegError(
                f"{self.cfg.name}: expected (N, 3, H, W) or (N, T, 3, H, W), got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        if height % self.cfg.stride or width % self.cfg.stride:
            raise VidsegError(
                f"{self.cfg.name}: H and W must be multiples of "
                f"{self.cfg.stride}, got {height}x{width}"
            )
        if state and len(state) != len(self.cfg.state):
            names = ", ".join(s.name for s in self.cfg.state)
            raise VidsegError(
                f"{self.cfg.name}: expected {len(self.cfg.state)} state tensors "
                f"({names}), got {len(state)}"
            )

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._check_input(x, state)
        clip = x.ndim == 5
        n, t = (x.shape[0], x.shape[1]) if clip else (x.shape[0], 1)
        frames = x.flatten(0, 1) if clip else x
        features = [self.stem(frames)]  # stateless encoder: all frames at once
        for down in self.downs:
            features.append(down(features[-1]))
        if self.cells is not None:
            hs = list(state) or [
                features[0].new_zeros(n, s.channels, *(d // s.stride for d in frames.shape[-2:]))
                for s in self.cfg.state
            ]
            skips = []
            for i, (cell, f) in enumerate(zip(self.cells, features)):
                if clip:
                    seq, outs = f.unflatten(0, (n, t)), []
                    for step in range(t):
                        hs[i] = cell(seq[:, step], hs[i])
                        outs.append(hs[i])
                    skips.append(torch.stack(outs, dim=1).flatten(0, 1))
                else:
                    hs[i] = cell(f, hs[i])
                    skips.append(hs[i])
        else:
            hs, skips = [], features
        y = skips[-1]
        for up, skip in zip(reversed(self.ups), reversed(skips[:-1])):
            y = up(y, skip)
        logits = self.head(y)
        if clip:
            logits = logits.unflatten(0, (n, t))
        return (logits, *hs)


# ---------------------------------------------------------------------------------------------
# builder and variants


def _create_unet001(
    name: str,
    block: str,
    size: str,
    cell: str | None,
    pretrained: bool = False,
    input_size: tuple[int, int] = (352, 480),
    num_classes: int = 11,
) -> TemporalUNet:
    """Build one variant. The paper trains from scratch, so there are no weights to load.

    Raises:
        VidsegError: ``pretrained`` is true, ``input_size`` is not a multiple of the stride, or
            ``num_classes`` < 1.
    """
    if pretrained:
        raise VidsegError(
            f"{name} has no pretrained weights (seed-001 UNets train from "
            "scratch); use pretrained=False (vidseg-train --scratch)"
        )
    widths = WIDTHS[size]
    stride = 2 ** (len(widths) - 1)
    height, width = (int(v) for v in input_size)
    if height <= 0 or width <= 0 or height % stride or width % stride:
        raise VidsegError(
            f"{name}: input_size {height}x{width} must be positive multiples of {stride}"
        )
    if num_classes < 1:
        raise VidsegError(f"{name}: num_classes must be >= 1, got {num_classes}")
    state = tuple(StateCfg(f"h{2**i}", w, 2**i) for i, w in enumerate(widths)) if cell else ()
    cfg = ModelCfg(
        name=name,
        family="recurrent" if cell else "perframe",
        input_size=(height, width),
        stride=stride,
        num_classes=num_classes,
        state=state,
    )
    return TemporalUNet(cfg, block, widths, cell)


def _recurrent(block: str, size: str, cell: str, kwargs: dict) -> TemporalUNet:
    return _create_unet001(f"recurrent-unet-{block}-{size}-{cell}", block, size, cell, **kwargs)


def _perframe(block: str, size: str, kwargs: dict) -> TemporalUNet:
    return _create_unet001(f"perframe-unet-{block}-{size}", block, size, None, **kwargs)


@register_model
def recurrent_unet_vanilla_shallow_crnn(**kwargs: object) -> TemporalUNet:
    """Vanilla blocks, widths 16/32/64, cRNN cells (Table 3: 222,724 params)."""
    return _recurrent("vanilla", "shallow", "crnn", kwargs)


@register_model
def recurrent_unet_vanilla_shallow_cgru(**kwargs: object) -> TemporalUNet:
    """Vanilla blocks, widths 16/32/64, cGRU cells (Table 3: 416,372 params)."""
    return _recurrent("vanilla", "shallow", "cgru", kwargs)


@register_model
def recurrent_unet_vanilla_deep_crnn(**kwargs: object) -> TemporalUNet:
    """Vanilla blocks, widths 16/32/64/128, cRNN cells (Table 3: 900,100 params)."""
    return _recurrent("vanilla", "deep", "crnn", kwargs)


@register_model
def recurrent_unet_vanilla_deep_cgru(**kwargs: object) -> TemporalUNet:
    """Vanilla blocks, widths 16/32/64/128, cGRU cells (Table 3: 1,683,700 params)."""
    return _recurrent("vanilla", "deep", "cgru", kwargs)


@register_model
def recurrent_unet_vanilla_original_crnn(**kwargs: object) -> TemporalUNet:
    """Vanilla blocks, widths 64/128/256, cRNN cells (Table 3: 3,508,180 params)."""
    return _recurrent("vanilla", "original", "crnn", kwargs)


@register_model
def recurrent_unet_vanilla_original_cgru(**kwargs: object) -> TemporalUNet:
    """Vanilla blocks, widths 64/128/256, cGRU cells (Table 3: 6,605,204 params)."""
    return _recurrent("vanilla", "original", "cgru", kwargs)


@register_model
def recurrent_unet_resnet_shallow_crnn(**kwargs: object) -> TemporalUNet:
    """ResNet blocks, widths 16/32/64, cRNN cells (Table 3: 229,908 params)."""
    return _recurrent("resnet", "shallow", "crnn", kwargs)


@register_model
def recurrent_unet_resnet_shallow_cgru(**kwargs: object) -> TemporalUNet:
    """ResNet blocks, widths 16/32/64, cGRU cells (Table 3: 423,556 params)."""
    return _recurrent("resnet", "shallow", "cgru", kwargs)


@register_model
def recurrent_unet_resnet_deep_crnn(**kwargs: object) -> TemporalUNet:
    """ResNet blocks, widths 16/32/64/128, cRNN cells (Table 3: 923,860 params)."""
    return _recurrent("resnet", "deep", "crnn", kwargs)


@register_model
def recurrent_unet_resnet_deep_cgru(**kwargs: object) -> TemporalUNet:
    """ResNet blocks, widths 16/32/64/128, cGRU cells (Table 3: 1,707,460 params; the
    paper's best model)."""
    return _recurrent("resnet", "deep", "cgru", kwargs)


@register_model
def recurrent_unet_resnet_original_crnn(**kwargs: object) -> TemporalUNet:
    """ResNet blocks, widths 64/128/256, cRNN cells (Table 3: 3,598,356 params)."""
    return _recurrent("resnet", "original", "crnn", kwargs)


@register_model
def recurrent_unet_resnet_original_cgru(**kwargs: object) -> TemporalUNet:
    """ResNet blocks, widths 64/128/256, cGRU cells (Table 3: 6,695,380 params)."""
    return _recurrent("resnet", "original", "cgru", kwargs)


@register_model
def recurrent_unet_convnext_deep_crnn(**kwargs: object) -> TemporalUNet:
    """ConvNeXt blocks, widths 16/32/64/128, cRNN cells (Table 3: 760,420 params)."""
    return _recurrent("convnext", "deep", "crnn", kwargs)


@register_model
def recurrent_unet_convnext_deep_cgru(**kwargs: object) -> TemporalUNet:
    """ConvNeXt blocks, widths 16/32/64/128, cGRU cells (Table 3: 1,544,020 params)."""
    return _recurrent("convnext", "deep", "cgru", kwargs)


@register_model
def recurrent_unet_convnext_original_crnn(**kwargs: object) -> TemporalUNet:
    """ConvNeXt blocks, widths 64/128/256, cRNN cells (Table 3: 2,933,588 params)."""
    return _recurrent("convnext", "original", "crnn", kwargs)


@register_model
def recurrent_unet_convnext_original_cgru(**kwargs: object) -> TemporalUNet:
    """ConvNeXt blocks, widths 64/128/256, cGRU cells (Table 3: 6,030,612 params)."""
    return _recurrent("convnext", "original", "cgru", kwargs)


@register_model
def perframe_unet_vanilla_shallow(**kwargs: object) -> TemporalUNet:
    """Per-frame baseline, vanilla blocks, widths 16/32/64 (Table 3: 125,732 params)."""
    return _perframe("vanilla", "shallow", kwargs)


@register_model
def perframe_unet_vanilla_deep(**kwargs: object) -> TemporalUNet:
    """Per-frame baseline, vanilla blocks, widths 16/32/64/128 (Table 3: 507,940 params)."""
    return _perframe("vanilla", "deep", kwargs)


@register_model
def perframe_unet_vanilla_original(**kwargs: object) -> TemporalUNet:
    """Per-frame baseline, vanilla blocks, widths 64/128/256 (Table 3: 1,958,996 params)."""
    return _perframe("vanilla", "original", kwargs)


@register_model
def perframe_unet_resnet_shallow(**kwargs: object) -> TemporalUNet:
    """Per-frame twin of the ResNet shallow models (not in the paper's tables)."""
    return _perframe("resnet", "shallow", kwargs)


@register_model
def perframe_unet_resnet_deep(**kwargs: object) -> TemporalUNet:
    """Per-frame twin of the ResNet deep models (not in the paper's tables)."""
    return _perframe("resnet", "deep", kwargs)


@register_model
def perframe_unet_resnet_original(**kwargs: object) -> TemporalUNet:
    """Per-frame twin of the ResNet original-size models (not in the paper's tables)."""
    return _perframe("resnet", "original", kwargs)


@register_model
def perframe_unet_convnext_deep(**kwargs: object) -> TemporalUNet:
    """Per-frame twin of the ConvNeXt deep models (not in the paper's tables)."""
    return _perframe("convnext", "deep", kwargs)


@register_model
def perframe_unet_convnext_original(**kwargs: object) -> TemporalUNet:
    """Per-frame twin of the ConvNeXt original-size models (not in the paper's tables)."""
    return _perframe("convnext", "original", kwargs)
