"""Lite0 UNet segmenters: the recurrent ConvGRU family and its per-frame baseline.

Seed 001 (ConvRNN/ConvGRU UNet): a convolutional GRU sits at the end of encoder stages and the
decoder concatenates the hidden states instead of the raw skip features. Here the encoder is an
ImageNet EfficientNet-Lite0; cells sit at strides 8, 16 and 32 (the stride-4 skip stays
stateless: its cost would dominate at full resolution). The per-frame baseline swaps each cell
for a 3x3 conv block of the same width, so the two differ only in memory. A third variant keeps
the per-frame blocks and adds a zero-initialised memory behind each (``layers.MemoryAdd``): it
starts as its per-frame twin, whose checkpoint it loads (``vidseg-train --init-from``).

Like RobustVideoMatting, one set of weights runs on clips (N, T, 3, H, W) for training and on
single frames for export; the state is explicit: ``forward(x, *state) -> (logits, *state)``.
"""

from __future__ import annotations

import torch
from torch import nn

from vidseg.models.layers import ConvGRU, MemoryAdd, UpFuse, conv_bn_relu, sep_conv_bn_relu
from vidseg.models.lite0 import Lite0Encoder, load_lite0_imagenet
from vidseg.models.protocol import GraphFn, TemporalModule
from vidseg.models.registry import ModelCfg, StateCfg, register_model

# ---------------------------------------------------------------------------------------------
# model


class Lite0UNet(TemporalModule):
    """Lite0 encoder, temporal cells (or plain blocks) at strides 8/16/32, UNet decoder to 1/4.

    Input: normalized float (N, 3, H, W) or clips (N, T, 3, H, W); H, W multiples of 32.
    Output: logits at 1/4 resolution (N, K, H/4, W/4) (or (N, T, K, H/4, W/4)), then the new
    state tensors, one per cell, each (N, C_i, H/s_i, W/s_i).
    """

    CELLS = ("gru", "block", "residual")  # ConvGRU cells, per-frame blocks, blocks + MemoryAdd

    BLOCKS = {"conv": conv_bn_relu, "separable": sep_conv_bn_relu}  # 3x3 blocks of the decoder

    def __init__(
        self, cfg: ModelCfg, hidden: tuple[int, int, int], cell: str, block: str = "conv"
    ) -> None:
        super().__init__()
        if cell not in self.CELLS:
            raise ValueError(f"cell must be one of {self.CELLS}, got {cell!r}")
        if block not in self.BLOCKS:
            raise ValueError(f"block must be one of {tuple(self.BLOCKS)}, got {block!r}")
        conv = self.BLOCKS[block]
        self.cfg = cfg
        self.cell = cell
        self.temporal = cell != "block"
        self.encoder = Lite0Encoder()
        c4, c8, c16, c32 = Lite0Encoder.channels
        self.project = nn.ModuleList(
            conv_bn_relu(c, h, kernel=1) for c, h in zip((c8, c16, c32), hidden)
        )
        if cell == "gru":
            self.cells = nn.ModuleList(ConvGRU(h) for h in hidden)
        else:
            self.cells = nn.ModuleList(conv(h, h) for h in hidden)
        self.memory = nn.ModuleList(MemoryAdd(h) for h in hidden) if cell == "residual" else None
        h8, h16, h32 = hidden
        self.up16 = UpFuse(h32, h16, 64, block=conv)
        self.up8 = UpFuse(64, h8, 48, block=conv)
        self.up4 = UpFuse(48, c4, 32, block=conv)
        self.classifier = nn.Conv2d(32, cfg.num_classes, 1)

    def features(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """The stateless part: (N, 3, H, W) -> [stride-4 skip, projected stride 8/16/32 maps].

        Exported on its own as a split bundle's ``encode`` graph (most of the cost), which the
        engine may run a frame ahead in another thread.
        """
        f4, *deep = self.encoder(frames)
        return [f4, *(p(f) for p, f in zip(self.project, deep))]

    def head(self, f4: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The rest, for single frames: ``features`` output and the state -> (logits, *state).

        ``rest``: the three projected maps, then the state tensors (zeros when omitted).
        """
        projected, state = rest[:3], rest[3:]
        inputs = self.cell_inputs(list(projected))
        if self.temporal:
            height, width = 4 * f4.shape[-2], 4 * f4.shape[-1]
            hs = list(state) if state else self.initial_state(f4.shape[0], height, width)
            skips, hs = zip(*(self.cell_step(i, x, h) for i, (x, h) in enumerate(zip(inputs, hs))))
            return (self.decode(list(skips), f4), *hs)
        return (self.decode(inputs, f4),)

    def cell_inputs(self, projected: list[torch.Tensor]) -> list[torch.Tensor]:
        """The stateless part of the cells, on any number of frames at once: the per-frame
        blocks (per-frame and residual variants), nothing for the ConvGRU cells."""
        if self.cell == "gru":
            return projected
        return [cell(p) for cell, p in zip(self.cells, projected)]

    def cell_step(self, i: int, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Cell ``i`` on one frame: its input from ``cell_inputs`` and state -> (decoder skip,
        new state)."""
        if self.cell == "gru":
            h = self.cells[i](x, h)
            return h, h
        return self.memory[i](x, h)

    def split(self) -> tuple[GraphFn, GraphFn]:
        return self.features, self.head

    def decode(self, skips: list[torch.Tensor], f4: torch.Tensor) -> torch.Tensor:
        """Cell outputs at strides 8/16/32 and the stride-4 skip -> logits at stride 4."""
        s8, s16, s32 = skips
        return self.classifier(self.up4(self.up8(self.up16(s32, s16), s8), f4))

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.ndim == 4:  # one frame per row: exactly the split graphs' composition
            return self.head(*self.features(x), *state)
        n, t = x.shape[:2]
        f4, *projected = self.features(x.flatten(0, 1))  # stateless parts on all frames at once
        inputs = self.cell_inputs(projected)
        if self.temporal:
            hs = list(state) if state else self.initial_state(n, *x.shape[-2:])
            outs: list[list[torch.Tensor]] = [[] for _ in hs]
            for step in range(t):
                for i, x_i in enumerate(inputs):
                    skip, hs[i] = self.cell_step(i, x_i.unflatten(0, (n, t))[:, step], hs[i])
                    outs[i].append(skip)
            skips = [torch.stack(o, dim=1).flatten(0, 1) for o in outs]
        else:
            hs = []
            skips = inputs
        return (self.decode(skips, f4).unflatten(0, (n, t)), *hs)


# ---------------------------------------------------------------------------------------------
# builders and variants


def _create_lite0_unet(
    name: str,
    cell: str,
    pretrained: bool = True,
    input_size: tuple[int, int] = (352, 480),
    num_classes: int = 11,
    hidden: tuple[int, int, int] = (32, 64, 96),
    block: str = "conv",
) -> Lite0UNet:
    temporal = cell != "block"
    state = tuple(StateCfg(f"h{s}", c, s) for s, c in zip((8, 16, 32), hidden)) if temporal else ()
    cfg = ModelCfg(
        name=name,
        family="recurrent" if temporal else "perframe",
        input_size=tuple(input_size),  # type: ignore[arg-type]
        num_classes=num_classes,
        state=state,
        pretrained="efficientnet-lite0 ImageNet (Apache-2.0 wheel)" if pretrained else "",
    )
    model = Lite0UNet(cfg, hidden, cell, block)
    if pretrained:
        load_lite0_imagenet(model.encoder)
    return model


@register_model
def recurrent_lite0_gru(**kwargs: object) -> Lite0UNet:
    """Lite0 encoder + ConvGRU cells at strides 8/16/32 (32/64/96 ch) + UNet decoder."""
    return _create_lite0_unet("recurrent-lite0-gru", cell="gru", **kwargs)  # type: ignore[arg-type]


@register_model
def perframe_lite0(**kwargs: object) -> Lite0UNet:
    """The same network with each ConvGRU replaced by a 3x3 conv block: the baseline."""
    return _create_lite0_unet("perframe-lite0", cell="block", **kwargs)  # type: ignore[arg-type]


@register_model
def perframe_lite0_sep(**kwargs: object) -> Lite0UNet:
    """``perframe-lite0`` with depthwise-separable 3x3 blocks (cells and decoder): the decoder
    at about a third of its time, for a larger input at the same cost."""
    return _create_lite0_unet("perframe-lite0-sep", cell="block", block="separable", **kwargs)  # type: ignore[arg-type]


@register_model
def recurrent_lite0_res(**kwargs: object) -> Lite0UNet:
    """``perframe-lite0`` plus a zero-initialised ConvGRU memory added behind each block
    (``layers.MemoryAdd``): it starts as its twin and loads the twin's checkpoint."""
    return _create_lite0_unet("recurrent-lite0-res", cell="residual", **kwargs)  # type: ignore[arg-type]
