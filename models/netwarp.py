"""NetWarp: the per-frame Lite0 UNet with the previous frame's features warped in by optical flow.

Seed 004 (Gadde, Jampani, Gehler, "Semantic Video CNNs through Representation Warping",
ICCV 2017). A NetWarp module at layer k takes the previous
frame's activations z_{t-1}, warps them to the current frame with the optical flow F_t refined by
a small FlowCNN Λ, and combines them per channel with the current activations:
``z~_t = w1 * z_t + w2 * Warp(z_{t-1}, Λ(F_t))``, w1 = 1 and w2 = 0 at init, so the untrained
video net is the image net.

Here the image net is ``perframe-lite0`` (its blocks and parameter names, imported from
``segnet``), and NetWarp sits on the projected 1/8 (32 ch) and 1/16 (64 ch) encoder features,
before the 3x3 blocks that feed the decoder. Both projections depend on the current frame only,
so the state is a one-frame look-back as in the paper, and a clip trains in one batched pass.

* Flow: DIS (``vidseg.engine.aux_inputs.dis_flow.dis_flow``) at 1/4 of the input size, from the
  current frame to the previous one, in pixels of that grid. Training computes it on the uint8 clip
  frames with the same function the engine's ``dis_flow`` provider uses.
* FlowCNN (seed 3.1): input flow, previous and current frame and their difference (11 channels,
  frames as the normalised input average-pooled to 1/4); 3x3 convs to 16, 32 and 2 channels, each
  followed by ReLU; the output concatenated with the raw flow; a last 3x3 conv to 2 channels. One
  FlowCNN serves both modules (as in the paper). Unlike the paper (Gaussian noise everywhere),
  the last conv starts as the identity on the raw-flow channels plus small noise on the learnt
  ones, so warping starts from the DIS flow.
* Warp: bilinear with border padding (the paper back-projects to the nearest border),
  ``grid_sample`` in training and row gathers in the exported graph (:func:`warp`), pixel i's
  centre at normalised (2 i + 1) / size - 1 (``align_corners=False``). The refined 1/4 flow is
  average-pooled to each level and divided by the stride ratio. The paper's epsilon on the
  flow is not needed: ``grid_sample`` has gradients at integer positions.
* State (zeros at stream start): ``image4`` (3, H/4, W/4) the previous normalised frame at
  1/4, ``z8`` (32, H/8, W/8) and ``z16`` (64, H/16, W/16), the previous frame's projected features
  before combination; ``netwarp-lite0-deep`` also warps the 1/32 features (``z32``, 96 ch),
  ``netwarp-lite0-late`` the classifier's input (``d4``, 32 ch at 1/4).
* ``netwarp-lite0-recursive`` (the late variant's modules and state): each level's state is the
  frame's *combined* features, ``z~_t = w1 * z_t + w2 * Warp(z~_{t-1})``, so the past
  accumulates over the stream (a flow-aligned recurrence) instead of reaching back one frame.
  A clip runs the encoder and decoder batched and only the combinations frame by frame.
* First frame: the warped term is gated by ``has_previous`` = "``image4`` state is not all
  zeros" per sample, ``z~ = z + has_previous * (w1 * z + w2 * warp - z)``, so a stream's first
  frame (zero state, zero flow) runs exactly the per-frame path whatever w1 and w2 learnt. A
  normalised frame is all zeros only if every 4x4 block of every channel averages exactly 127;
  the frame after such a grey frame also runs the per-frame path, which is harmless.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidseg.engine.aux_inputs.dis_flow import DIS_FLOW, DIS_PRESET, DisFlowProvider, dis_flow
from vidseg.engine.bundle import AuxSpec
from vidseg.models.layers import normalize
from vidseg.models.lite0 import load_lite0_imagenet
from vidseg.models.losses import CROSS_ENTROPY, SegLoss
from vidseg.models.protocol import GraphSpec
from vidseg.models.registry import ModelCfg, StateCfg, register_model
from vidseg.models.segnet import Lite0UNet

FLOW = "flow"  # the step graph's aux input: DIS flow from the engine's provider
FLOW_STRIDE = 4  # the flow and the FlowCNN run at 1/4 of the model input size
WARP_STRIDES = (8, 16)  # encoder levels with a NetWarp module (projected features)
DEEP_WARP_STRIDES = (8, 16, 32)  # netwarp-lite0-deep: the coarsest, most semantic level too
LEVEL_STRIDES = (8, 16, 32)  # strides of the projected features (``Lite0UNet.project``)
DECODER_CHANNELS = 32  # the classifier's input: netwarp-lite0-late warps it at stride 4
FLOWCNN_WIDTHS = (16, 32, 2)  # seed 3.1: output channels of the first three 3x3 convs
FLOWCNN_OUT_STD = 1e-3  # init noise of the last conv's weights on the learnt channels

# ---------------------------------------------------------------------------------------------
# blocks


def warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``features`` (N, C, h, w) by ``flow`` (N, 2, h, w), bilinear.

    ``flow[:, :, y, x] = (dx, dy)`` in pixels of this (h, w) grid, from the current frame to the
    previous one (``vidseg.engine.aux_inputs.dis_flow``'s convention): the output at (x, y) samples
    ``features`` at (x + dx, y + dy); positions outside clamp to the border. Zero flow is the
    identity.

    Training runs ``grid_sample``; an ONNX export writes the same sampling as row gathers
    (:func:`gather_warp`), which ONNX Runtime's CPU kernels run about 3x faster than its
    ``GridSample`` (benchmarks/research/NOTES.md). The two agree to float rounding (tested).
    """
    if torch.onnx.is_in_onnx_export():
        return gather_warp(features, flow)
    _, _, h, w = features.shape
    x, y = _sample_positions(flow)
    gx = (2 * x + 1) / w - 1  # pixel centres, align_corners=False
    gy = (2 * y + 1) / h - 1
    grid = torch.stack([gx, gy], dim=-1)  # (N, h, w, 2)
    return F.grid_sample(
        features, grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def _sample_positions(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + dx, y + dy), each (N, h, w), of every pixel of (N, 2, h, w) ``flow``: where the
    warp samples, in pixels of the flow's grid."""
    _, _, h, w = flow.shape
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w)
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1)
    return xs + flow[:, 0], ys + flow[:, 1]


def _corners(position: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis of ``size`` pixels for (N, h, w) ``position`` (border
    clamped): the lower and upper index (int64) and the upper tap's weight in [0, 1]."""
    position = position.clamp(0, size - 1)
    low = position.floor().clamp(max=max(size - 2, 0))
    high = (low + 1).clamp(max=size - 1)
    return low.long(), high.long(), position - low


def gather_warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """:func:`warp` as four row gathers of the channels-last features and a bilinear blend: the
    form ONNX Runtime runs fast (one ``Gather`` copies all C channels of a pixel at once)."""
    n, c, h, w = features.shape
    x, y = _sample_positions(flow)
    x0, x1, ax = _corners(x, w)
    y0, y1, ay = _corners(y, h)
    offset = (torch.arange(n, device=flow.device) * (h * w)).view(n, 1, 1)
    rows = features.permute(0, 2, 3, 1).reshape(n * h * w, c)

    def tap(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return rows.index_select(0, (offset + y * w + x).reshape(-1)).view(n, h, w, c)

    ax = ax.to(features.dtype).unsqueeze(-1)
    ay = ay.to(features.dtype).unsqueeze(-1)
    top, bottom = tap(y0, x0), tap(y1, x0)
    top = top + ax * (tap(y0, x1) - top)
    bottom = bottom + ax * (tap(y1, x1) - bottom)
    return (top + ay * (bottom - top)).permute(0, 3, 1, 2)


class FlowCNN(nn.Module):
    """Seed 3.1's flow transformation Λ at the flow's resolution.

    Input: flow (N, 2, h, w) in pixels, previous and current frame (N, 3, h, w) normalised.
    Output: refined flow (N, 2, h, w) in the same units; close to the input flow at init.
    """

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3 = FLOWCNN_WIDTHS
        self.body = nn.Sequential(
            nn.Conv2d(2 + 3 + 3 + 3, c1, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(c3 + 2, 2, 3, padding=1)
        with torch.no_grad():  # identity on the raw flow (the skip), small noise elsewhere
            self.out.weight.normal_(0.0, FLOWCNN_OUT_STD)
            self.out.weight[:, c3:] = 0.0
            self.out.weight[0, c3, 1, 1] = 1.0
            self.out.weight[1, c3 + 1, 1, 1] = 1.0
            self.out.bias.zero_()

    def forward(
        self, flow: torch.Tensor, previous: torch.Tensor, current: torch.Tensor
    ) -> torch.Tensor:
        h = self.body(torch.cat([flow, previous, current, current - previous], dim=1))
        return self.out(torch.cat([h, flow], dim=1))


class NetWarp(nn.Module):
    """Per-channel combination of the current and the warped previous features (seed eq. 3).

    ``scale``: the level's stride over the flow's stride; the refined flow is average-pooled by
    it and divided by it to get pixels of the level's grid.
    """

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.w1 = nn.Parameter(torch.ones(channels))
        self.w2 = nn.Parameter(torch.zeros(channels))

    def forward(
        self,
        z: torch.Tensor,
        z_previous: torch.Tensor,
        flow: torch.Tensor,
        has_previous: torch.Tensor,
    ) -> torch.Tensor:
        """z, z_previous: (N, C, h, w); flow: (N, 2, h * scale, w * scale) at the flow's
        stride; has_previous: (N, 1, 1, 1) 0/1. Returns (N, C, h, w)."""
        if self.scale > 1:
            flow = F.avg_pool2d(flow, self.scale) / self.scale
        warped = warp(z_previous, flow)
        mixed = self.w1.view(1, -1, 1, 1) * z + self.w2.view(1, -1, 1, 1) * warped
        return z + has_previous * (mixed - z)


# ---------------------------------------------------------------------------------------------
# model


class NetWarpLite0(Lite0UNet):
    """``perframe-lite0`` (same modules and parameter names) plus FlowCNN and NetWarp modules
    on the projected features at ``warp_strides`` (1/8 and 1/16 by default).

    ``forward(x, flow, *state) -> (logits, image4, z8, z16[, z32])``:
    x normalised (N, 3, H, W) or a clip (N, T, 3, H, W); flow (N, 2, H/4, W/4) or (N, T, 2, H/4,
    W/4) from each frame to the one before (zeros where there is none, e.g. a clip's first
    frame after a reset); state as in the module docstring, zeros (or omitted) at a stream's
    start. Logits (N, K, H/4, W/4) (or (N, T, K, H/4, W/4)); the state after the (last) frame.
    """

    clip_state: ClassVar[bool] = False  # forward needs the clip's flow: ``training_loss`` has it
    cpu_only_training: ClassVar[str] = "its DIS optical flow reads the frames as numpy arrays"

    def __init__(
        self,
        cfg: ModelCfg,
        hidden: tuple[int, int, int],
        warp_strides: tuple[int, ...] = WARP_STRIDES,
        late: bool = False,
        recursive: bool = False,
        block: str = "conv",
    ) -> None:
        super().__init__(cfg, hidden, cell="block", block=block)
        self.recursive = recursive  # the state holds the combined features, not the frame's
        if not set(warp_strides) <= set(LEVEL_STRIDES):
            raise ValueError(f"warp strides {warp_strides} not among {LEVEL_STRIDES}")
        # indices into the projected levels (``LEVEL_STRIDES``) that get a NetWarp
        self.warped_levels = tuple(i for i, s in enumerate(LEVEL_STRIDES) if s in warp_strides)
        self.flow_cnn = FlowCNN()
        self.netwarps = nn.ModuleList(
            NetWarp(hidden[i], LEVEL_STRIDES[i] // FLOW_STRIDE) for i in self.warped_levels
        )
        # the decoder's last features (the classifier's input, at the flow's stride 4)
        self.late_warp = NetWarp(self.classifier.in_channels, 1) if late else None

    @property
    def flow_size(self) -> tuple[int, int]:
        """(h, w) of the flow input at the model's input size."""
        height, width = self.cfg.input_size
        return height // FLOW_STRIDE, width // FLOW_STRIDE

    @property
    def flow_spec(self) -> AuxSpec:
        """The step graph's aux input: (2, h, w) float32 DIS flow at ``flow_size``."""
        return AuxSpec(name=FLOW, provider=DIS_FLOW, shape=(2, *self.flow_size))

    def export_graphs(self) -> dict[str, GraphSpec]:
        """One ``step`` graph: ``forward(x, flow, *state) -> (logits, *state)``."""
        state = self.cfg.state
        return {"step": GraphSpec(self, state, state, aux=(self.flow_spec,))}

    def split(self) -> None:
        """None: ``Lite0UNet``'s ``features``/``head`` would leave the warps out (the step also
        reads the flow and the downscaled frame), so a netwarp bundle ships one step graph."""
        return None

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor, *state: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        clip = x.ndim == 5
        n, t = (x.shape[0], x.shape[1]) if clip else (x.shape[0], 1)
        frames = x.flatten(0, 1) if clip else x
        f4, *deep = self.encoder(frames)  # the image net runs on every frame at once
        projected = [p(f) for p, f in zip(self.project, deep)]
        image4 = F.avg_pool2d(frames, FLOW_STRIDE)
        previous_state = list(state) if state else self.initial_state(n, *frames.shape[-2:])
        n_early = 1 + len(self.warped_levels)  # image4 and the warped encoder levels
        early_state, late_state = previous_state[:n_early], previous_state[n_early:]

        def look_back(c: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(each frame's previous, the state after the last frame): in a clip frame t's
            previous is frame t - 1, the first frame's the given state."""
            if not clip:
                return s, c
            seq = c.unflatten(0, (n, t))
            return torch.cat([s[:, None], seq[:, :-1]], dim=1).flatten(0, 1), seq[:, -1]

        if clip:
            flow = flow.flatten(0, 1)
        image4_prev, image4_last = look_back(image4, early_state[0])
        has_previous = (image4_prev.flatten(1).abs().amax(1) > 0).to(x.dtype).view(-1, 1, 1, 1)
        refined = self.flow_cnn(flow, image4_prev, image4)

        def combine(
            nw: NetWarp, z: torch.Tensor, s: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """(the combined features, the state after the last frame). Recursive: each frame's
            past is the previous frame's combined features, so a clip runs the (cheap)
            combination frame by frame; otherwise the previous frame's own features."""
            if not self.recursive:
                z_prev, last = look_back(z, s)
                return nw(z, z_prev, refined, has_previous), last
            if not clip:
                out = nw(z, s, refined, has_previous)
                return out, out
            per_frame = [u.unflatten(0, (n, t)) for u in (z, refined, has_previous)]
            outs = []
            for z_t, flow_t, has_t in zip(*(u.unbind(1) for u in per_frame)):
                s = nw(z_t, s, flow_t, has_t)
                outs.append(s)
            return torch.stack(outs, dim=1).flatten(0, 1), s

        new_state = [image4_last]
        for nw, i, s in zip(self.netwarps, self.warped_levels, early_state[1:]):
            projected[i], last = combine(nw, projected[i], s)
            new_state.append(last)
        s8, s16, s32 = [cell(p) for cell, p in zip(self.cells, projected)]
        d4 = self.up4(self.up8(self.up16(s32, s16), s8), f4)
        if self.late_warp is not None:
            d4, last = combine(self.late_warp, d4, late_state[0])
            new_state.append(last)
        logits = self.classifier(d4)
        if clip:
            logits = logits.unflatten(0, (n, t))
        return (logits, *new_state)

    def clip_flow(self, frames: np.ndarray) -> torch.Tensor:
        """DIS flow of each clip frame to the one before: frames (B, T, h, w, 3) uint8 RGB ->
        (B, T, 2, h/4, w/4) float32, zeros for t = 0 (as the engine's provider on a first
        frame)."""
        b, t, h, w, _ = frames.shape
        size = (h // FLOW_STRIDE, w // FLOW_STRIDE)
        flow = np.zeros((b, t, 2, *size), np.float32)
        dis = cv2.DISOpticalFlow_create(DIS_PRESET)
        for i in range(b):
            for j in range(1, t):
                flow[i, j] = dis_flow(frames[i, j - 1], frames[i, j], size, dis)
        return torch.from_numpy(flow)

    def training_loss(
        self, frames: torch.Tensor, labels: torch.Tensor, criterion: SegLoss = CROSS_ENTROPY
    ) -> torch.Tensor:
        """``criterion`` (cross-entropy by default) over every frame of clips: frames
        (B, T, h, w, 3) uint8, labels (B, T, h, w) int64. Each clip starts from zero state and
        zero flow, so T = 1 batches train the per-frame path; h, w multiples of 32."""
        flow = self.clip_flow(frames.numpy())
        logits = self(normalize(frames), flow)[0]
        return criterion(logits, labels)

    def stream_logits(
        self,
        frame: torch.Tensor,
        memory: object | None,
        aux: Mapping[str, torch.Tensor] | None = None,
        key_interval: int | None = None,
    ) -> tuple[torch.Tensor, object]:
        """One streaming step as the engine runs it: frame (1, H, W, 3) uint8 at the input size;
        memory (the flow provider and the state) is None at a stream's start. ``aux``: the
        frame's flow precomputed ({"flow": (1, 2, h, w)}); None: the provider computes it from
        the frame (on the CPU)."""
        if memory is None:
            memory = (None if aux is not None else DisFlowProvider(self.flow_spec.shape), ())
        provider, state = memory  # type: ignore[misc]
        if aux is not None:
            flow = aux[FLOW]
        else:
            flow = torch.from_numpy(provider(frame[0].numpy()))
        logits, *new_state = self(normalize(frame), flow, *state)
        return logits, (provider, tuple(new_state))


# ---------------------------------------------------------------------------------------------
# builders and variants


def _create_netwarp(
    name: str,
    pretrained: bool = True,
    input_size: tuple[int, int] = (352, 480),
    num_classes: int = 11,
    hidden: tuple[int, int, int] = (32, 64, 96),
    warp_strides: tuple[int, ...] = WARP_STRIDES,
    late: bool = False,
    recursive: bool = False,
    block: str = "conv",
) -> NetWarpLite0:
    state = (StateCfg("image4", 3, FLOW_STRIDE),) + tuple(
        StateCfg(f"z{s}", c, s) for s, c in zip(LEVEL_STRIDES, hidden) if s in warp_strides
    )
    if late:  # the classifier's input (Lite0UNet's up4 output, 32 channels)
        state += (StateCfg("d4", DECODER_CHANNELS, FLOW_STRIDE),)
    cfg = ModelCfg(
        name=name,
        family="netwarp",
        input_size=tuple(input_size),  # type: ignore[arg-type]
        num_classes=num_classes,
        state=state,
        pretrained="efficientnet-lite0 ImageNet (Apache-2.0 wheel)" if pretrained else "",
    )
    model = NetWarpLite0(cfg, hidden, warp_strides, late, recursive, block)
    if pretrained:
        load_lite0_imagenet(model.encoder)
    return model


@register_model
def netwarp_lite0(**kwargs: object) -> NetWarpLite0:
    """perframe-lite0 + NetWarp on the projected 1/8 and 1/16 features, DIS flow at 1/4."""
    return _create_netwarp("netwarp-lite0", **kwargs)  # type: ignore[arg-type]


@register_model
def netwarp_lite0_deep(**kwargs: object) -> NetWarpLite0:
    """netwarp-lite0 with a third NetWarp module on the projected 1/32 features (state ``z32``)."""
    return _create_netwarp("netwarp-lite0-deep", warp_strides=DEEP_WARP_STRIDES, **kwargs)  # type: ignore[arg-type]


@register_model
def netwarp_lite0_late(**kwargs: object) -> NetWarpLite0:
    """netwarp-lite0 with a third NetWarp on the decoder's last features, the classifier's input
    at 1/4 (state ``d4``), as the seed's best placement: late, before the classifier."""
    return _create_netwarp("netwarp-lite0-late", late=True, **kwargs)  # type: ignore[arg-type]


@register_model
def netwarp_lite0_recursive(**kwargs: object) -> NetWarpLite0:
    """netwarp-lite0-late (same modules and state) made recursive: each level's state is the
    previous frame's combined features, so the past accumulates over the stream instead of
    reaching back one frame."""
    return _create_netwarp("netwarp-lite0-recursive", late=True, recursive=True, **kwargs)  # type: ignore[arg-type]


@register_model
def netwarp_lite0_sep_late(**kwargs: object) -> NetWarpLite0:
    """netwarp-lite0-late on ``perframe-lite0-sep`` (depthwise-separable cells and decoder): it
    loads a perframe-lite0-sep checkpoint, to which it adds the FlowCNN and the NetWarps."""
    return _create_netwarp("netwarp-lite0-sep-late", late=True, block="separable", **kwargs)  # type: ignore[arg-type]
