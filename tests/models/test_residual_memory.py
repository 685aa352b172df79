"""recurrent-lite0-res: a per-frame twin plus zero-initialised memory cells. It starts as the
twin it loads (``--init-from``), its memory carries through the exported graphs, and
``--freeze-stride`` freezes the pretrained encoder's early layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidseg.engine import Segmenter
from vidseg.engine.errors import VidsegError
from vidseg.engine.video import read_frames
from vidseg.export.parity import check_parity
from vidseg.models import train
from vidseg.models.layers import MemoryAdd
from vidseg.models.registry import create_model

SIZE = (64, 96)
TINY = [
    "--limit",
    "4",
    "--batch",
    "2",
    "--seq-len",
    "3",
    "--crop",
    "64",
    "96",
    "--input-size",
    "64",
    "96",
    "--eval-every",
    "2",
    "--scratch",
]


def _twin_checkpoint(tiny_model_factory, path: Path) -> torch.nn.Module:
    twin = tiny_model_factory("perframe-lite0")
    torch.save({"model": twin.state_dict()}, path)
    return twin


def test_starts_as_its_twin_then_carries_memory(tiny_model_factory, tmp_path: Path) -> None:
    twin = _twin_checkpoint(tiny_model_factory, tmp_path / "twin.pt")
    model = create_model("recurrent-lite0-res", pretrained=False, input_size=SIZE).eval()
    copied, fresh = train.init_from(model, tmp_path / "twin.pt")
    assert (
        copied == len(twin.state_dict()) and fresh and all(k.startswith("memory.") for k in fresh)
    )
    torch.manual_seed(1)
    clip = torch.randn(1, 6, 3, *SIZE)
    with torch.no_grad():
        want = twin(clip)[0]
        got, *state = model(clip)
        torch.testing.assert_close(got, want, atol=0, rtol=0)  # zero memory: exactly the twin
        assert all(s.abs().sum() > 0 for s in state)  # the state still runs
        for cell in model.memory:
            cell.out.weight.normal_(0, 0.1)
        clip_logits, *clip_state = model(clip)
        assert (clip_logits[:, 1:] - want[:, 1:]).abs().max() > 1e-3  # the memory now counts
        carried: list[torch.Tensor] = []
        for t in range(clip.shape[1]):  # inference, one frame at a time, equals the clip forward
            logits, *carried = model(clip[:, t], *carried)
            torch.testing.assert_close(logits, clip_logits[:, t], atol=1e-5, rtol=1e-4)
    for a, b in zip(carried, clip_state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_exported_memory_matches_torch_over_a_stream(
    tiny_model_factory, sample_clip: Path, tmp_path: Path
) -> None:
    from tests.conftest import export_tiny_bundle  # noqa: PLC0415

    model = tiny_model_factory("recurrent-lite0-res")
    assert all(cell.out.weight.any() for cell in model.memory)  # conftest woke the memory up
    bundle = export_tiny_bundle(tmp_path / "res.vidseg", "recurrent-lite0-res", split=True)
    frames = [f.image for f in read_frames(sample_clip, max_frames=24, size=SIZE[::-1])]
    report = check_parity(
        model, bundle / "step.onnx", frames, resets=(12,), encode_path=bundle / "encode.onnx"
    )
    assert report.label_agreement >= 0.999 and report.max_state_diff < 1e-4, report.summary()
    seg = Segmenter(bundle)  # the engine runs it as a recurrent bundle
    assert seg.model.manifest.family == "recurrent" and len(seg.state.tensors) == 3


def test_init_from_errors(tiny_model_factory, tmp_path: Path) -> None:
    model = create_model("recurrent-lite0-res", pretrained=False, input_size=SIZE)
    with pytest.raises(VidsegError, match="--init-from: checkpoint not found"):
        train.init_from(model, tmp_path / "none.pt")
    torch.save({"model": {"classifier.weight": torch.zeros(3, 32, 1, 1)}}, tmp_path / "bad.pt")
    with pytest.raises(VidsegError, match=r"differ in shape, first classifier.weight \(3, 32"):
        train.init_from(model, tmp_path / "bad.pt")
    torch.save({"model": {"other.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(VidsegError, match="no weight names in common"):
        train.init_from(model, tmp_path / "other.pt")


def test_freeze_stride_keeps_early_weights_and_statistics() -> None:
    model = create_model("recurrent-lite0-res", pretrained=False, input_size=SIZE)
    assert train.freeze_encoder(model, 4) > 0
    model.train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    stats = {n: b.clone() for n, b in model.named_buffers() if n.startswith("encoder._blocks.0.")}
    assert frozen and all(
        n.startswith(
            (
                "encoder._conv_stem",
                "encoder._bn0",
                "encoder._blocks.0.",
                "encoder._blocks.1.",
                "encoder._blocks.2.",
            )
        )
        for n in frozen
    )
    assert not model.encoder._bn0.training and model.encoder._blocks[3].training
    learner = model.encoder._blocks[3]._project_conv.weight
    before = learner.detach().clone()
    optimizer = torch.optim.AdamW(train._param_groups(model, 1e-2))
    model(torch.randn(2, 3, *SIZE))[0].square().mean().backward()
    optimizer.step()
    assert not torch.equal(learner, before)  # the rest of the encoder learns
    for name, value in frozen.items():
        torch.testing.assert_close(dict(model.named_parameters())[name], value, atol=0, rtol=0)
    for name, value in stats.items():
        torch.testing.assert_close(dict(model.named_buffers())[name], value, atol=0, rtol=0)
    with pytest.raises(VidsegError, match="freeze stride 2: use 0"):
        model.encoder.freeze(2)
    plain = create_model("recurrent-unet-vanilla-shallow-cgru", pretrained=False)
    with pytest.raises(VidsegError, match="no pretrained Lite0 encoder"):
        train.freeze_encoder(plain, 4)


def test_train_cli_from_a_twin(camvid: Path, tmp_path: Path, capsys) -> None:
    twin_run, res_run = tmp_path / "twin", tmp_path / "res"
    assert (
        train.main(
            [
                "--model",
                "perframe-lite0",
                *TINY,
                "--data",
                str(camvid),
                "--out",
                str(twin_run),
                "--max-steps",
                "2",
            ]
        )
        == 0
    )
    assert (
        train.main(
            [
                "--model",
                "recurrent-lite0-res",
                *TINY,
                "--data",
                str(camvid),
                "--out",
                str(res_run),
                "--max-steps",
                "2",
                "--freeze-stride",
                "4",
                "--init-from",
                str(twin_run / "last.pt"),
            ]
        )
        == 0
    )
    twin = torch.load(twin_run / "last.pt", weights_only=True)["model"]
    res = torch.load(res_run / "last.pt", weights_only=True)
    assert "--init-from" not in res["train_args"] and str(twin_run / "last.pt") in res["train_args"]
    stem = "encoder._conv_stem.weight"
    torch.testing.assert_close(res["model"][stem], twin[stem], atol=0, rtol=0)  # frozen, loaded
    assert (
        train.main(
            [
                "--model",
                "recurrent-lite0-res",
                *TINY,
                "--data",
                str(camvid),
                "--out",
                str(tmp_path / "x"),
                "--max-steps",
                "1",
                "--init-from",
                str(tmp_path / "none.pt"),
            ]
        )
        == 3
    )
    assert "--init-from: checkpoint not found" in capsys.readouterr().err
    assert isinstance(create_model("recurrent-lite0-res", pretrained=False).memory[0], MemoryAdd)
