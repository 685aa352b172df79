"""Quantization-aware fine-tuning (vidseg-train --qat): the fake-quantized model computes what
the int8 export's graph computes, keeps the float model's state dict and frozen batch norms,
trains and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from vidseg.engine.errors import VidsegError
from vidseg.engine.video import read_frames
from vidseg.models import train
from vidseg.models.layers import normalize
from vidseg.models.qat import WEIGHT_QMAX, fake_quant_weight, prepare_qat

PERFRAME = "perframe-lite0-sep"


def test_weights_round_to_the_7_bit_grid_per_channel() -> None:
    weight = torch.randn(5, 3, 3, 3) * torch.tensor([0.01, 0.1, 1.0, 10.0, 0.0]).reshape(
        -1, 1, 1, 1
    )
    rounded = fake_quant_weight(weight)
    absmax = weight.abs().flatten(1).amax(1).clamp(min=1e-12).reshape(-1, 1, 1, 1)
    steps = rounded / (absmax / WEIGHT_QMAX)
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    assert steps.abs().max() <= WEIGHT_QMAX
    assert (rounded - weight).abs().le(absmax / WEIGHT_QMAX / 2 + 1e-6).all()
    assert not torch.equal(rounded, weight)


def test_prepare_keeps_the_state_dict_and_freezes_batch_norms(tiny_model_factory) -> None:
    model = tiny_model_factory(PERFRAME)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    done = prepare_qat(model, float_convs=3)
    assert done.float_convs == 3 and done.quantized == len(convs) - 3
    assert done.folded == done.quantized - 1  # all but the classifier have a batch norm behind
    assert model.state_dict().keys() == before.keys()
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    # the first convolutions in call order (the stem, block 0) stay float
    quantized = [hasattr(m, "qat_input") for m in convs]
    assert quantized[:3] == [False] * 3 and all(quantized[3:])
    x = torch.randn(2, 3, 64, 96)
    model(x)[0].sum().backward()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # training mode moved no statistic


def test_qat_refuses_stateful_models_and_bad_counts(tiny_model_factory) -> None:
    with pytest.raises(VidsegError, match="per-frame"):
        prepare_qat(tiny_model_factory("recurrent-lite0-gru"))
    with pytest.raises(VidsegError, match="nothing to quantize"):
        prepare_qat(tiny_model_factory(PERFRAME), float_convs=1000)


def test_fake_quantized_model_computes_what_the_int8_graph_does(
    tiny_model_factory, sample_clip: Path, tmp_path: Path
) -> None:
    """Exported and quantized by the int8 export (calibrated on one frame), the graph's logits
    are those of the fake-quantized model whose ranges saw that frame, about twice as close as
    the float model's (a ReLU's output quantized before it, as the quantizer does not, doubles
    the error): the fine-tune trains what will run."""
    from vidseg.export.int8 import quantize_graph
    from vidseg.export.onnx import OPSET

    onnxruntime = pytest.importorskip("onnxruntime")
    model = tiny_model_factory(PERFRAME)
    frame = next(iter(read_frames(sample_clip, max_frames=1))).image
    frame = cv2.resize(frame, (96, 64), interpolation=cv2.INTER_AREA)
    x = normalize(torch.from_numpy(frame)[None])
    src, dst = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    with torch.no_grad():
        float_logits = model(x)[0].numpy()
        torch.onnx.export(
            model, (x,), str(src), input_names=["x"], opset_version=OPSET, dynamo=False
        )
    quantize_graph(src, dst, [{"x": x.numpy()}], state=[], float_convs=0)
    session = onnxruntime.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    int8_logits = session.run(None, {"x": x.numpy()})[0]

    prepare_qat(model)
    model.train()
    with torch.no_grad():
        model(x)  # the ranges: this frame's, as the graph's calibration
        model.eval()
        qat_logits = model(x)[0].numpy()
    scale = float_logits.std()
    float_error = np.abs(float_logits - int8_logits).mean() / scale
    qat_error = np.abs(qat_logits - int8_logits).mean() / scale
    assert float_error > 1e-3  # int8 rounding shows
    assert qat_error < 0.55 * float_error, (qat_error, float_error)


def _train(camvid: Path, out: Path, *extra: str, model: str = PERFRAME) -> int:
    tiny = "--limit 4 --batch 1 --crop 64 96 --input-size 64 96 --scratch".split()
    return train.main(["--model", model, "--data", str(camvid), "--out", str(out), *tiny, *extra])


def test_train_qat_fine_tunes_resumes_and_exports_as_float(camvid: Path, tmp_path: Path, capsys):
    """--qat from a float checkpoint: the weights move, the batch norms' statistics do not, the
    checkpoint loads into the plain model, a stopped run resumes."""
    assert _train(camvid, tmp_path / "float", "--max-steps", "1") == 0
    start = torch.load(tmp_path / "float" / "last.pt", weights_only=True)["model"]
    qat = ["--init-from", str(tmp_path / "float" / "last.pt"), "--qat", "--max-steps", "2"]
    assert _train(camvid, tmp_path / "qat", *qat, "--stop-after-minutes", "1e-9") == 0
    assert "continue with the same command and --resume" in capsys.readouterr().out
    assert _train(camvid, tmp_path / "qat", *qat, "--stop-after-minutes", "1e-9", "--resume") == 0
    ckpt = torch.load(tmp_path / "qat" / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["model"].keys() == start.keys()
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(ckpt["model"][k], start[k]) for k in stats)
    assert any(not torch.equal(ckpt["model"][k], start[k]) for k in start if k not in stats)
    assert "--qat" in ckpt["provenance"][-1]["command"]
    rebuilt, _ = train.model_from_checkpoint(tmp_path / "qat" / "last.pt")
    assert not hasattr(next(m for m in rebuilt.modules() if isinstance(m, nn.Conv2d)), "qat_input")
    assert 0 <= json.loads(ckpt["metrics"])["miou"] <= 100  # the last step evaluates


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--qat"], "--qat fine-tunes a trained float model: give its checkpoint with --init-from"),
        (["--qat-float-convs", "2"], "--qat-float-convs goes with --qat"),
        (["--qat", "--init-from", "x.pt", "--qat-float-convs", "-1"], "must be >= 0"),
    ],
)
def test_qat_usage_errors(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        _train(tmp_path, tmp_path / "o", *extra)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_qat_of_a_stateful_model_is_one_line(camvid: Path, tmp_path: Path, capsys) -> None:
    assert _train(camvid, tmp_path / "gru", "--max-steps", "1", model="recurrent-lite0-gru") == 0
    argv = ["--init-from", str(tmp_path / "gru" / "last.pt"), "--qat", "--max-steps", "1"]
    assert _train(camvid, tmp_path / "q", *argv, model="recurrent-lite0-gru") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vidseg-train: error: --qat fine-tunes per-frame networks"), err
