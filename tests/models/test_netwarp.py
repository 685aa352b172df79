"""NetWarp (seed 004): shapes, the w1 = 1 / w2 = 0 start, the first frame, the warp's flow
convention against engine.aux_inputs.dis_flow, clip = frame by frame, gradients into FlowCNN
and w1/w2."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vidseg.engine.aux_inputs.dis_flow import dis_flow, grey
from vidseg.models.layers import normalize
from vidseg.models.netwarp import FLOWCNN_WIDTHS, NetWarpLite0, gather_warp, warp
from vidseg.models.registry import create_model, list_models

SIZE = (64, 96)
FLOW = (16, 24)  # 1/4 of SIZE


def _model(seed: int = 0, w2: bool = False, name: str = "netwarp-lite0") -> NetWarpLite0:
    """The tiny untrained model (random BN statistics, see conftest), in eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, pretrained=False, input_size=SIZE)
    _randomise_bn(model)
    if w2:  # trained-like combination weights, so the warped term matters (late one too)
        with torch.no_grad():
            for nw in [*model.netwarps, *filter(None, [model.late_warp])]:
                nw.w1.uniform_(0.5, 1.0)
                nw.w2.uniform_(0.3, 0.7)
    return model.eval()


def _randomise_bn(model: torch.nn.Module) -> None:
    """As conftest's tiny models: an untrained net with unit BN statistics is near-constant."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (H, W, 3) uint8 that DIS can track."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 1.5)


def test_registered_with_cfg_and_shapes() -> None:
    assert "netwarp-lite0" in list_models()
    model = _model()
    cfg = model.cfg
    assert cfg.family == "netwarp" and model.flow_size == FLOW
    assert [(s.name, s.channels, s.stride) for s in cfg.state] == [
        ("image4", 3, 4),
        ("z8", 32, 8),
        ("z16", 64, 16),
    ]
    convs = [m for m in model.flow_cnn.body if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].in_channels == 11  # flow, previous, current, difference
    assert tuple(c.out_channels for c in convs) == FLOWCNN_WIDTHS
    assert model.flow_cnn.out.in_channels == 2 + 2  # the skip concatenates the raw flow
    with torch.no_grad():
        logits, *state = model(torch.randn(2, 3, *SIZE), torch.zeros(2, 2, *FLOW))
        assert logits.shape == (2, 11, 16, 24)
        assert [tuple(s.shape) for s in state] == [(2, 3, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6)]
        clip_logits, *clip_state = model(torch.randn(2, 3, 3, *SIZE), torch.zeros(2, 3, 2, *FLOW))
    assert clip_logits.shape == (2, 3, 11, 16, 24)
    assert [tuple(s.shape) for s in clip_state] == [tuple(s.shape) for s in state]


def test_init_is_the_perframe_net_and_first_frame_is_perframe_whatever_the_weights() -> None:
    """w1 = 1, w2 = 0 (seed's init): every frame equals perframe-lite0 with the same weights.
    Trained w1/w2: a stream's first frame (zero state, zero flow) still does."""
    torch.manual_seed(0)
    perframe = create_model("perframe-lite0", pretrained=False, input_size=SIZE).eval()
    _randomise_bn(perframe)
    model = _model(seed=1)
    missing, unexpected = model.load_state_dict(perframe.state_dict(), strict=False)
    assert not unexpected
    assert all(k.startswith(("flow_cnn.", "netwarps.")) for k in missing)
    frames = torch.randn(2, 1, 3, *SIZE)
    flow = torch.randn(1, 2, *FLOW)
    with torch.no_grad():
        expected = [perframe(frames[i])[0] for i in range(2)]
        logits, *state = model(frames[0], torch.zeros(1, 2, *FLOW))
        torch.testing.assert_close(logits, expected[0], atol=1e-5, rtol=1e-4)
        logits, *_ = model(frames[1], flow, *state)  # warped term present, weighted by w2 = 0
        torch.testing.assert_close(logits, expected[1], atol=1e-5, rtol=1e-4)
        for nw in model.netwarps:
            nw.w1.uniform_(0.5, 1.0)
            nw.w2.uniform_(0.3, 0.7)
        first, *_ = model(frames[0], torch.zeros(1, 2, *FLOW))
        torch.testing.assert_close(first, expected[0], atol=1e-5, rtol=1e-4)
        second, *_ = model(frames[1], flow, *state)
    assert (second - expected[1]).abs().max() > 1e-3  # and later frames do use the past


def test_warp_zero_flow_is_identity_and_integer_shift_moves_by_it() -> None:
    z = torch.randn(2, 5, 8, 12)
    torch.testing.assert_close(warp(z, torch.zeros(2, 2, 8, 12)), z, atol=1e-5, rtol=0)
    for dx, dy in [(3, 0), (0, 2), (-2, 1)]:
        flow = torch.zeros(2, 2, 8, 12)
        flow[:, 0], flow[:, 1] = dx, dy
        out = warp(z, flow)  # out(x, y) = z(x + dx, y + dy) inside
        ys, xs = slice(max(0, -dy), 8 - max(0, dy)), slice(max(0, -dx), 12 - max(0, dx))
        src = z[..., max(0, dy) : 8 + min(0, dy), max(0, dx) : 12 + min(0, dx)]
        torch.testing.assert_close(out[..., ys, xs], src, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "shape", [(2, 5, 8, 12), (3, 4, 2, 7), (1, 3, 1, 1), (2, 6, 1, 5), (1, 2, 6, 1)]
)
def test_gather_warp_samples_as_grid_sample(shape: tuple[int, ...]) -> None:
    """The exported form (row gathers) equals training's grid_sample warp: fractional flow,
    flow far past every border, degenerate one-pixel axes, several samples in the batch."""
    gen = torch.Generator().manual_seed(sum(shape))
    z = torch.randn(*shape, generator=gen)
    flow = torch.randn(shape[0], 2, *shape[2:], generator=gen) * 0.75 * max(shape[2:])
    flow[0, :, 0, 0] = torch.tensor([1e3, -1e3])  # far outside: clamps to the border
    expected = warp(z, flow)
    torch.testing.assert_close(gather_warp(z, flow), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(gather_warp(z.half(), flow).float(), expected, atol=2e-2, rtol=0)
    assert gather_warp(z, flow).shape == z.shape


@pytest.mark.parametrize("shift", [(3, 0), (0, 2), (-2, 1)])
def test_warp_follows_engine_flow_convention(shift: tuple[int, int]) -> None:
    """A frame pair shifted by k pixels, its DIS flow (engine.aux_inputs.dis_flow.dis_flow), the
    previous frame warped with it: the current frame in the interior; the opposite sign would not
    be."""
    kx, ky = shift
    h, w, margin = 64, 96, 16
    base = _textured(h + 2 * margin, w + 2 * margin)
    previous = base[margin : margin + h, margin : margin + w]
    current = base[margin + ky : margin + ky + h, margin + kx : margin + kx + w]
    flow = torch.from_numpy(dis_flow(previous, current, (h, w)))[None]
    prev_grey = torch.from_numpy(grey(previous, (h, w))).float()[None, None]
    target = grey(current, (h, w)).astype(np.float32)
    inner = (slice(8, -8), slice(8, -8))
    err = np.abs(warp(prev_grey, flow)[0, 0].numpy() - target)[inner].mean()
    wrong = np.abs(warp(prev_grey, -flow)[0, 0].numpy() - target)[inner].mean()
    unwarped = np.abs(prev_grey[0, 0].numpy() - target)[inner].mean()
    assert err < 3.0 and err < 0.2 * unwarped and wrong > 5 * err, (err, wrong, unwarped)


@pytest.mark.parametrize(
    "name",
    [
        "netwarp-lite0",
        "netwarp-lite0-deep",
        "netwarp-lite0-late",
        "netwarp-lite0-recursive",
        "netwarp-lite0-sep-late",
    ],
)
def test_clip_forward_equals_frame_by_frame(name: str) -> None:
    """Training (a clip in one pass) and inference (one frame, state carried) agree."""
    model = _model(w2=True, name=name)
    clip, flow = torch.randn(1, 4, 3, *SIZE), torch.randn(1, 4, 2, *FLOW)
    flow[:, 0] = 0
    with torch.no_grad():
        clip_logits, *clip_state = model(clip, flow)
        state: list[torch.Tensor] = []
        for t in range(4):
            logits, *state = model(clip[:, t], flow[:, t], *state)
            torch.testing.assert_close(logits, clip_logits[:, t], atol=1e-5, rtol=1e-4)
    for a, b in zip(state, clip_state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "extra_state", "new_weights"),
    [
        ("netwarp-lite0-deep", ("z32", 96, 32), "netwarps.2"),  # the 1/32 features too
        ("netwarp-lite0-late", ("d4", 32, 4), "late_warp"),
    ],  # the classifier's input too
)
def test_variant_warps_one_more_level_and_starts_as_netwarp_lite0(
    name: str, extra_state: tuple[str, int, int], new_weights: str
) -> None:
    """Each variant adds one NetWarp (and its state). Loaded from a trained netwarp-lite0 (as
    ``--init-from`` does), only that module is new and, at w2 = 0, the two agree over a clip;
    once its w2 opens, that level's past changes every frame but the first."""
    variant = _model(seed=1, name=name)
    assert [(s.name, s.channels, s.stride) for s in variant.cfg.state] == [
        ("image4", 3, 4),
        ("z8", 32, 8),
        ("z16", 64, 16),
        extra_state,
    ]
    base = _model(w2=True)
    missing, unexpected = variant.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == [f"{new_weights}.w1", f"{new_weights}.w2"]
    clip, flow = torch.randn(1, 3, 3, *SIZE), torch.randn(1, 3, 2, *FLOW)
    with torch.no_grad():
        torch.testing.assert_close(variant(clip, flow)[0], base(clip, flow)[0])
        variant.get_submodule(new_weights).w2.fill_(0.5)
        diff = (variant(clip, flow)[0] - base(clip, flow)[0]).abs().flatten(2).amax(2)
    assert (diff[:, 0] == 0).all() and (diff[:, 1:] > 1e-5).all()


def test_recursive_state_accumulates_the_past() -> None:
    """netwarp-lite0-recursive has netwarp-lite0-late's weights and state. With the same
    weights the two agree on a clip's first two frames (frame 0's combined features are its own);
    from the third on they differ. A change to frame 0 reaches frame 3 through the recursive
    state, never through the one-frame look-back."""
    late = _model(w2=True, name="netwarp-lite0-late")
    recursive = _model(name="netwarp-lite0-recursive")
    assert recursive.cfg.state == late.cfg.state
    recursive.load_state_dict(late.state_dict())  # strict: the same modules
    clip, flow = torch.randn(1, 4, 3, *SIZE), torch.randn(1, 4, 2, *FLOW)
    flow[:, 0] = 0
    changed = clip.clone()
    changed[:, 0] = torch.randn(3, *SIZE)
    with torch.no_grad():
        a, b = late(clip, flow)[0], recursive(clip, flow)[0]
        torch.testing.assert_close(a[:, :2], b[:, :2], atol=1e-5, rtol=1e-4)
        assert (a[:, 2:] - b[:, 2:]).abs().flatten(2).amax(2).min() > 1e-4
        reach_late = (late(changed, flow)[0][:, 3] - a[:, 3]).abs().max()
        reach_recursive = (recursive(changed, flow)[0][:, 3] - b[:, 3]).abs().max()
    assert reach_late == 0 and reach_recursive > 1e-4, (reach_late, reach_recursive)


def test_bad_warp_strides_are_refused() -> None:
    with pytest.raises(ValueError, match="not among"):
        NetWarpLite0(_model().cfg, (32, 64, 96), warp_strides=(4, 8))


def test_training_loss_reaches_flowcnn_and_combination_weights() -> None:
    """Over a 3-frame clip (DIS flow from the uint8 frames) every parameter gets gradient; at the
    seed's init (w2 = 0) the warped term still trains w2, which then opens the FlowCNN path."""
    base = _textured(SIZE[0] + 16, SIZE[1] + 16)
    frames = np.stack([base[2 * t : 2 * t + SIZE[0], 3 * t : 3 * t + SIZE[1]] for t in range(3)])
    frames_t = torch.from_numpy(frames)[None]
    labels = torch.randint(0, 11, (1, 3, *SIZE))
    flow = _model().clip_flow(frames[None])
    assert flow.shape == (1, 3, 2, *FLOW) and flow[:, 0].abs().max() == 0
    assert flow[:, 1:].abs().mean() > 0.3  # the camera moved

    model = _model(w2=True).train()
    model.training_loss(frames_t, labels).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, dead

    fresh = _model().train()
    fresh.training_loss(frames_t, labels).backward()
    assert all(nw.w2.grad.abs().sum() > 0 for nw in fresh.netwarps)


def test_single_frame_batches_and_streaming() -> None:
    """T = 1 training batches run the per-frame path; stream_logits carries flow and state."""
    model = _model(w2=True)
    frames = np.stack([_textured(*SIZE, seed=s) for s in range(3)])
    loss = model.training_loss(torch.from_numpy(frames[:2, None]), torch.zeros(2, 1, *SIZE).long())
    assert torch.isfinite(loss)
    with torch.no_grad():
        first, memory = model.stream_logits(torch.from_numpy(frames[:1]), None)
        torch.testing.assert_close(
            first, model(normalize(torch.from_numpy(frames[:1])), torch.zeros(1, 2, *FLOW))[0]
        )
        second, memory = model.stream_logits(torch.from_numpy(frames[1:2]), memory)
        alone, _ = model.stream_logits(torch.from_numpy(frames[1:2]), None)
    assert second.shape == (1, 11, 16, 24) and len(memory[1]) == 3
    assert (second - alone).abs().max() > 1e-4  # the previous frame mattered


def test_separable_variant_starts_as_its_perframe_twin() -> None:
    """netwarp-lite0-sep-late loaded from perframe-lite0-sep (``--init-from``): only the flow
    and NetWarp modules are new, and at their init (w2 = 0) it is that twin on every frame."""
    torch.manual_seed(0)
    twin = create_model("perframe-lite0-sep", pretrained=False, input_size=SIZE).eval()
    _randomise_bn(twin)
    model = _model(seed=1, name="netwarp-lite0-sep-late")
    missing, unexpected = model.load_state_dict(twin.state_dict(), strict=False)
    assert not unexpected
    assert all(k.startswith(("flow_cnn.", "netwarps.", "late_warp.")) for k in missing)
    clip, flow = torch.randn(1, 3, 3, *SIZE), torch.randn(1, 3, 2, *FLOW)
    with torch.no_grad():
        torch.testing.assert_close(model(clip, flow)[0], twin(clip)[0], atol=1e-5, rtol=1e-4)
