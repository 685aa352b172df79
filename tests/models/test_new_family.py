"""A new family is one file: a dummy fifth family, defined and registered in this module,
trains a step, exports through the generic path (parity checked) and streams in the engine.

It needs nothing outside its file: the bundle schema knows graph roles, not families, and the
model registry takes any ``<family>-<variant>`` name (``tests/engine/test_new_family.py`` adds
a family with its own engine-computed input the same way).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vidseg.models import registry
from vidseg.models.protocol import TemporalModel, TemporalModule
from vidseg.models.registry import ModelCfg, StateCfg

SIZE = (64, 96)
STRIDE = 4


class EmaNet(TemporalModule):
    """Per-frame logits at 1/4 blended with the last frame's: ``h' = (h + logits) / 2``.

    ``forward(x, h) -> (h', h')`` on frames (N, 3, H, W) or clips (N, T, 3, H, W); every
    ``TemporalModel`` method comes from ``TemporalModule``.
    """

    def __init__(self, cfg: ModelCfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv = nn.Conv2d(3, cfg.num_classes, 3, stride=STRIDE, padding=1)

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.ndim == 5:  # a clip: the state carried frame to frame
            outs, carried = [], state
            for t in range(x.shape[1]):
                logits, *carried = self(x[:, t], *carried)
                outs.append(logits)
            return (torch.stack(outs, 1), *carried)
        (h,) = state or self.initial_state(x.shape[0], *x.shape[-2:], device=x.device)
        h = 0.5 * (h + self.conv(x))
        return h, h


def ema_tiny(
    pretrained: bool = False, input_size: tuple[int, int] = SIZE, num_classes: int = 11
) -> EmaNet:
    cfg = ModelCfg(
        name="ema-tiny",
        family="ema",
        input_size=tuple(input_size),  # type: ignore[arg-type]
        num_classes=num_classes,
        state=(StateCfg("ema", num_classes, STRIDE),),
    )
    return EmaNet(cfg)


@pytest.fixture
def fifth_family(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the ``ema`` family's variant for one test (in a copy of the model registry)."""
    registry.list_models()  # the four families register into the real registry first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_model(ema_tiny)


def test_a_fifth_family_trains_exports_and_streams(
    fifth_family, sample_clip: Path, tmp_path: Path
) -> None:
    from vidseg.engine import Segmenter
    from vidseg.export.cli import CAMVID, parity_frames
    from vidseg.export.onnx import model_manifest, to_labels
    from vidseg.export.parity import export_bundle
    from vidseg.models.train import ClipTraining, train_step

    torch.manual_seed(0)
    model = registry.create_model("ema-tiny", pretrained=False, input_size=SIZE)
    assert isinstance(model, TemporalModel)

    # one training step on clips, through the trainer's step
    frames = parity_frames(sample_clip, SIZE, 6)
    clips = torch.from_numpy(np.stack(frames[:4]).reshape(2, 2, *SIZE, 3))
    labels = torch.randint(0, 11, (2, 2, SIZE[0] // STRIDE, SIZE[1] // STRIDE))
    before = model.conv.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = train_step(model.train(), optimizer, clips, labels, ClipTraining())
    assert torch.isfinite(loss) and not torch.equal(before, model.conv.weight)

    # export through the generic path, parity checked (state reset half way)
    out = tmp_path / "ema.vidseg"
    manifest = model_manifest(model.eval(), CAMVID, {"dataset": "none"})
    summary = export_bundle(model, out, manifest, frames)
    assert summary.startswith("parity over 6 frames")
    assert (out / "step.onnx").is_file()

    # the engine streams it: labels equal the model's own stream_logits
    seg = Segmenter(out)
    manifest = seg.model.manifest
    assert manifest.family == "ema" and [s.input for s in manifest.state] == ["ema_in"]
    memory = None
    for frame in frames:
        result = seg.step(frame)
        with torch.no_grad():
            logits, memory = model.stream_logits(torch.from_numpy(frame[None]), memory)
        want = to_labels(logits, model.cfg)[0][0].numpy()
        assert result.labels.shape == frame.shape[:2]
        assert (result.labels == want).mean() >= 0.999
