"""Key-frame feature caching on a Lite0 UNet: the deep encoder runs on key frames only.

Seed 003 ("semi-supervised" key-frame caching, after Li et al.'s low-latency scheme): the
network splits into a low-level extractor that runs on every frame, a high-level extractor that
runs on key frames only, and a decoder shared by both. The key frame's high-level features are
cached and reach the decoder of the following (current) frames through a skip connection -- no
flow, no warping. Caching more levels skips more of the network on current frames (faster, Table
5.1) but lets current frames see less of themselves (less accurate, Table 5.2).

Here, on an ImageNet EfficientNet-Lite0 (block taps: 2 -> 1/4, 4 -> 1/8, 10 -> 1/16, 15 -> 1/32):

* ``keyframe-lite0-c2`` caches two levels: the projected 1/16 (64 ch) and 1/32 (96 ch)
  features. Current frames run the stem and blocks 0-4 only (1/4 and 1/8 features).
* ``keyframe-lite0-c1`` caches one level: the projected 1/32 (96 ch) features. Current frames
  also run blocks 5-10 (their own 1/16 features), as in the seed's one-level setup.

The decoder starts at the boundary stride (the finest cached stride / 2): it concatenates the
boundary features of the frame (1x1 lateral conv) with every cached level upsampled to that
stride, fuses them (1x1 conv, then a depthwise-separable 3x3 block) and climbs to 1/4 with the
remaining skips. Key frames feed it their fresh high-level features, so a key frame is exactly a
per-frame model. Current frames feed it the cache and add one residual depthwise-separable
"adapter" on the fused boundary features (zero at initialisation, i.e. the seed's plain skip),
which lets the network correct for the cache being stale.

Training (``training_loss``): frame 0 of each clip is the key frame and frames 1.. are current
frames reading its cache; cross-entropy on every frame plus the seed's L1 term between the
cache and the high-level features the key path would compute for each current frame.

The cache is explicit I/O, as recurrent state is elsewhere in vidseg:
``forward_key(x) -> (logits, *cache)`` and ``forward_current(x, *cache) -> logits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.engine.errors import VidsegError
from vidseg.engine.schedule import Schedule
from vidseg.models.layers import UpFuse, conv_bn_relu, normalize, sep_conv_bn_relu
from vidseg.models.lite0 import LITE0_TAPS, Lite0Encoder, load_lite0_imagenet
from vidseg.models.losses import CROSS_ENTROPY, SegLoss
from vidseg.models.protocol import GraphSpec, TemporalModule
from vidseg.models.registry import ModelCfg, StateCfg, register_model

KEY_INTERVAL = 5  # frames from one key frame to the next in fixed-interval streaming
L1_WEIGHT = 0.1  # weight of the mean |cache - current high-level features| term
SCHEDULE_POLICY = "fixed"  # the engine's key-frame policy the bundle's manifest names
SCHEDULE_THRESHOLD = 0.1  # change score for adaptive policies (unused by "fixed")
MAX_KEY_INTERVAL = 30  # adaptive/deadline policies: the longest distance between key frames
CACHE_WIDTHS: dict[int, int] = {16: 64, 32: 96}  # projected width of each cacheable stride
LATERAL_WIDTHS: dict[int, int] = {8: 32, 16: 64}  # 1x1 lateral width of each boundary stride
DECODER_WIDTHS: dict[int, int] = {4: 32, 8: 48, 16: 64}  # decoder width at each stride

# ---------------------------------------------------------------------------------------------
# blocks


class CacheAdapter(nn.Module):
    """Residual correction of the fused boundary features on current frames only.

    x (N, C, H, W) -> x + BN(pw(ReLU(BN(dw3x3(x))))). The last BN's scale starts at zero, so an
    untrained adapter is the identity (the seed's adapter-free skip) and learns how far to
    trust the stale cache from the current frame's own features it sees in ``x``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        nn.init.zeros_(self.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@dataclass(frozen=True)
class KeyframeMemory:
    """What ``stream_logits`` carries between frames of one stream."""

    frames_seen: int  # frames run since the stream (re)started; a multiple of the interval = key
    cache: tuple[torch.Tensor, ...]  # the last key frame's cache, one (1, C, H/s, W/s) per level


# ---------------------------------------------------------------------------------------------
# model


class KeyframeLite0(TemporalModule):
    """Lite0 split into a per-frame low-level extractor and a key-frame-only high-level one.

    Input: normalized float (N, 3, H, W), H and W multiples of 32. Logits come out at 1/4
    resolution (N, K, H/4, W/4). The cache is one (N, C, H/s, W/s) tensor per ``cfg.cache``
    entry, in that order.
    """

    clip_state: ClassVar[bool] = False  # clips train through ``training_loss`` (key + current)

    def __init__(self, cfg: ModelCfg, key_interval: int = KEY_INTERVAL) -> None:
        super().__init__()
        if key_interval < 1:
            raise VidsegError(f"key_interval must be >= 1, got {key_interval}")
        self.cfg = cfg
        self.key_interval = key_interval
        self.cached_strides = tuple(c.stride for c in cfg.cache)
        self.boundary = min(self.cached_strides) // 2  # coarsest stride current frames compute
        self.low_strides = tuple(s for s in Lite0Encoder.strides if s <= self.boundary)
        self.low_last_block = LITE0_TAPS[self.boundary][0]
        self.encoder = Lite0Encoder()
        self.project = nn.ModuleList(
            conv_bn_relu(LITE0_TAPS[c.stride][1], c.channels, kernel=1) for c in cfg.cache
        )
        b = self.boundary
        self.lateral = conv_bn_relu(LITE0_TAPS[b][1], LATERAL_WIDTHS[b], kernel=1)
        width = DECODER_WIDTHS[b]
        self.fuse = nn.Sequential(
            conv_bn_relu(LATERAL_WIDTHS[b] + sum(c.channels for c in cfg.cache), width, kernel=1),
            sep_conv_bn_relu(width, width),
        )
        self.adapter = CacheAdapter(width)
        self.skip_lateral = nn.ModuleDict()  # 1x1 laterals of the skips between 1/4 and b
        self.up = nn.ModuleList()
        for s in reversed(self.low_strides[:-1]):  # finer strides, coarse to fine
            c_skip = LITE0_TAPS[s][1]
            if s != 4:  # the stride-4 skip goes in raw, as in the UNet family
                self.skip_lateral[str(s)] = conv_bn_relu(c_skip, LATERAL_WIDTHS[s], kernel=1)
                c_skip = LATERAL_WIDTHS[s]
            self.up.append(UpFuse(width, c_skip, DECODER_WIDTHS[s], block=sep_conv_bn_relu))
            width = DECODER_WIDTHS[s]
        self.classifier = nn.Conv2d(width, cfg.num_classes, 1)

    # -- the two extractors -------------------------------------------------------------------

    def extract_low(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stem and blocks up to the boundary tap: features at ``low_strides`` (every frame)."""
        enc = self.encoder
        x = enc.act(enc._bn0(enc._conv_stem(x)))
        taps = {LITE0_TAPS[s][0] for s in self.low_strides}
        feats = []
        for index in range(self.low_last_block + 1):
            x = enc._blocks[index](x)
            if index in taps:
                feats.append(x)
        return feats

    def extract_high(self, boundary: torch.Tensor) -> list[torch.Tensor]:
        """The remaining blocks and projections on the boundary features: the cache (key only)."""
        taps = {LITE0_TAPS[s][0] for s in self.cached_strides}
        x, feats = boundary, []
        for index in range(self.low_last_block + 1, len(self.encoder._blocks)):
            x = self.encoder._blocks[index](x)
            if index in taps:
                feats.append(x)
        return [p(f) for p, f in zip(self.project, feats)]

    # -- decoder ------------------------------------------------------------------------------

    def decode(
        self,
        low: list[torch.Tensor],
        cache: list[torch.Tensor] | tuple[torch.Tensor, ...],
        current: bool,
    ) -> torch.Tensor:
        """Low-level features of a frame + high-level features (fresh or cached) -> logits.

        The skip connection of the seed: every cached level is upsampled to the boundary stride
        and concatenated with the frame's own boundary features.
        """
        boundary = self.lateral(low[-1])
        size = boundary.shape[-2:]
        up = [F.interpolate(c, size=size, mode="bilinear", align_corners=False) for c in cache]
        x = self.fuse(torch.cat([boundary, *up], dim=1))
        if current:
            x = self.adapter(x)
        for stage, stride, skip in zip(
            self.up, reversed(self.low_strides[:-1]), reversed(low[:-1])
        ):
            if str(stride) in self.skip_lateral:
                skip = self.skip_lateral[str(stride)](skip)
            x = stage(x, skip)
        return self.classifier(x)

    # -- the two paths ------------------------------------------------------------------------

    def forward_key(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Key frame: the full network. Returns (logits, *cache)."""
        low = self.extract_low(x)
        cache = self.extract_high(low[-1])
        return (self.decode(low, cache, current=False), *cache)

    def forward_current(self, x: torch.Tensor, *cache: torch.Tensor) -> torch.Tensor:
        """Current frame: low-level extractor + decoder reading the key frame's ``cache``.

        Raises:
            VidsegError: ``cache`` does not hold one tensor per ``cfg.cache`` entry.
        """
        if len(cache) != len(self.cfg.cache):
            raise VidsegError(f"expected {len(self.cfg.cache)} cache tensors, got {len(cache)}")
        return self.decode(self.extract_low(x), cache, current=True)

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The key path, so generic ``logits, *_ = model(x)`` callers get a per-frame model."""
        return self.forward_key(x)

    # -- TemporalModel: training and streaming ------------------------------------------------

    def training_loss(
        self, frames: torch.Tensor, labels: torch.Tensor, criterion: SegLoss = CROSS_ENTROPY
    ) -> torch.Tensor:
        """frames (B, T, h, w, 3) uint8, labels (B, T, h, w) int64 -> scalar loss.

        "Cross-entropy" below is ``criterion``: the trainer may swap in boundary label
        relaxation. T = 1: cross-entropy of the key path. T > 1: frame 0 is the key frame and
        frames 1..T-1 are current frames reading its cache; cross-entropy on all T frames plus
        ``L1_WEIGHT`` x the seed's L1 term: the mean |cache of frame 0 - high-level features the
        key path computes for frame t| over current frames and cached levels. Both sides get the
        gradient, pulling the high-level features towards what stays constant over a scene, so
        a stale cache is close to fresh features (seed, chapter 4, Fig. 4.3).
        """
        b, t = frames.shape[:2]
        x = normalize(frames).flatten(0, 1)  # (B*T, 3, h, w)
        low = self.extract_low(x)
        high = self.extract_high(low[-1])  # every frame: frame 0 keys, the rest feed the L1
        if t == 1:
            return criterion(self.decode(low, high, current=False), labels[:, 0])
        low = [f.unflatten(0, (b, t)) for f in low]
        high = [h.unflatten(0, (b, t)) for h in high]
        key_cache = [h[:, 0] for h in high]
        stale = [k[:, None].expand(-1, t - 1, *k.shape[1:]) for k in key_cache]
        key_logits = self.decode([f[:, 0] for f in low], key_cache, current=False)
        current_logits = self.decode(
            [f[:, 1:].flatten(0, 1) for f in low], [s.flatten(0, 1) for s in stale], current=True
        )
        logits = torch.cat([key_logits[:, None], current_logits.unflatten(0, (b, t - 1))], dim=1)
        ce = criterion(logits, labels)
        l1 = torch.stack([(s - h[:, 1:]).abs().mean() for s, h in zip(stale, high)]).mean()
        return ce + L1_WEIGHT * l1

    def stream_logits(
        self,
        frame: torch.Tensor,
        memory: KeyframeMemory | None,
        aux: Mapping[str, torch.Tensor] | None = None,
        key_interval: int | None = None,
    ) -> tuple[torch.Tensor, KeyframeMemory]:
        """One streaming step with a key frame every ``key_interval`` frames (default: the
        model's own; the model has no aux inputs).

        frame: (1, h, w, 3) uint8; memory: None at the start of a stream (that frame is a key
        frame). Returns logits (1, K, h/4, w/4) and the memory for the next frame.
        """
        interval = key_interval or self.key_interval
        seen = memory.frames_seen if memory is not None else 0
        x = normalize(frame)
        if memory is None or seen % interval == 0:
            logits, *cache = self.forward_key(x)
            return logits, KeyframeMemory(seen + 1, tuple(cache))
        return self.forward_current(x, *memory.cache), KeyframeMemory(seen + 1, memory.cache)

    def export_graphs(self) -> dict[str, GraphSpec]:
        """``key``: x -> (logits, *cache); ``current``: (x, *cache) -> logits."""
        cache = self.cfg.cache
        return {
            "key": GraphSpec(self.forward_key, carried_out=cache),
            "current": GraphSpec(self.forward_current, carried_in=cache),
        }

    def schedule(self) -> Schedule:
        """A key frame every ``key_interval`` frames (the engine's ``fixed`` policy)."""
        return Schedule(
            SCHEDULE_POLICY,
            self.key_interval,
            SCHEDULE_THRESHOLD,
            max_interval=max(MAX_KEY_INTERVAL, self.key_interval),
        )


# ---------------------------------------------------------------------------------------------
# builders and variants


def _create_keyframe_lite0(
    name: str,
    cached_strides: tuple[int, ...],
    pretrained: bool = True,
    input_size: tuple[int, int] = (352, 480),
    num_classes: int = 11,
    key_interval: int = KEY_INTERVAL,
) -> KeyframeLite0:
    cfg = ModelCfg(
        name=name,
        family="keyframe",
        input_size=tuple(input_size),  # type: ignore[arg-type]
        num_classes=num_classes,
        cache=tuple(StateCfg(f"k{s}", CACHE_WIDTHS[s], s) for s in cached_strides),
        pretrained="efficientnet-lite0 ImageNet (Apache-2.0 wheel)" if pretrained else "",
    )
    model = KeyframeLite0(cfg, key_interval=key_interval)
    if pretrained:
        load_lite0_imagenet(model.encoder)
    return model


@register_model
def keyframe_lite0_c2(**kwargs: object) -> KeyframeLite0:
    """Two cached levels (1/16: 64 ch, 1/32: 96 ch); current frames run Lite0 to 1/8 only."""
    return _create_keyframe_lite0("keyframe-lite0-c2", (16, 32), **kwargs)  # type: ignore[arg-type]


@register_model
def keyframe_lite0_c1(**kwargs: object) -> KeyframeLite0:
    """One cached level (1/32: 96 ch); current frames run Lite0 to 1/16."""
    return _create_keyframe_lite0("keyframe-lite0-c1", (32,), **kwargs)  # type: ignore[arg-type]
