"""vidseg-train on real CamVid images, a few tiny steps: runs, checkpoints, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vidseg.models import train

ARGS = ["--model", "recurrent-lite0-gru", "--limit", "4", "--batch", "2", "--seq-len", "3",
        "--crop", "64", "96", "--input-size", "64", "96", "--eval-every", "2", "--scratch"]  # fmt: skip


def test_train_checkpoint_and_resume(camvid: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main([*ARGS, "--data", str(camvid), "--out", str(out), "--max-steps", "2"]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["model_name"] == "recurrent-lite0-gru"
    assert ckpt["pretrained"] == ""  # --scratch
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["val_miou"] <= 100 and "val_miou_no_state" in metrics
    assert train.main([*ARGS, "--data", str(camvid), "--out", str(out), "--max-steps", "4",
                       "--resume"]) == 0  # fmt: skip
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["step"] == 4
    assert len(json.loads(resumed["history"])) == 2  # history kept across the resume
    changed = [k for k in ckpt["model"] if not torch.equal(ckpt["model"][k], resumed["model"][k])]
    assert changed, "resumed training did not update the weights"


def test_train_rejects_bad_args(camvid: Path, tmp_path: Path, capsys) -> None:
    import pytest

    with pytest.raises(SystemExit) as exc:
        train.main(["--model", "nope", "--data", str(camvid), "--out", str(tmp_path)])
    assert exc.value.code == 2 and "unknown --model" in capsys.readouterr().err
    assert train.main(["--model", "recurrent-lite0-gru", "--data", str(tmp_path / "none"),
                       "--out", str(tmp_path / "o"), "--max-steps", "1"]) != 0  # fmt: skip
    assert "CamVid split" in capsys.readouterr().err
    assert train.main([*ARGS, "--data", str(camvid), "--out", str(tmp_path / "r"),
                       "--max-steps", "1", "--resume"]) != 0  # fmt: skip
    assert "no checkpoint" in capsys.readouterr().err


def test_models_without_pretrained_weights_train_without_scratch(camvid: Path, tmp_path) -> None:
    """Each registry name trains with plain `vidseg-train --model NAME` (seed-001 UNets have no
    ImageNet weights: their default is from scratch, no --scratch needed)."""
    args = ["--model", "recurrent-unet-vanilla-shallow-crnn", "--limit", "2", "--batch", "1",
            "--seq-len", "2", "--crop", "32", "48", "--input-size", "32", "48",
            "--data", str(camvid), "--out", str(tmp_path / "u"), "--max-steps", "1"]  # fmt: skip
    assert train.main(args) == 0


def test_train_workers_match_each_other_and_resume(camvid: Path, tmp_path: Path,
                                                    monkeypatch) -> None:  # fmt: skip
    """--workers N: batches are seeded per step, so 1 or 2 worker processes train the same
    weights, and a run interrupted after step 2 and resumed ends where an uninterrupted one
    does."""

    def run(out: Path, workers: int, *extra: str) -> int:
        return train.main([*ARGS, "--data", str(camvid), "--out", str(out), "--max-steps", "3",
                           "--workers", str(workers), *extra])  # fmt: skip

    def same_weights(out: Path, reference: dict) -> bool:
        weights = torch.load(out / "last.pt", weights_only=True)["model"]
        return all(torch.equal(weights[k], v) for k, v in reference.items())

    assert run(tmp_path / "w2", 2) == 0
    two = torch.load(tmp_path / "w2" / "last.pt", weights_only=True)
    assert two["step"] == 3 and json.loads(two["train_args"])["workers"] == 2
    assert run(tmp_path / "w1", 1) == 0
    assert same_weights(tmp_path / "w1", two["model"])

    calls = []
    real_loss = train.training_loss

    def interrupt_at_step_3(*args):
        calls.append(1)
        if len(calls) == 3:  # after the step-2 checkpoint
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(train, "training_loss", interrupt_at_step_3)
    assert run(tmp_path / "r", 2) == 130
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["step"] == 2
    monkeypatch.setattr(train, "training_loss", real_loss)
    assert run(tmp_path / "r", 2, "--resume") == 0
    assert same_weights(tmp_path / "r", two["model"])


def test_train_device_and_amp_errors(camvid: Path, tmp_path: Path, capsys) -> None:
    import pytest

    base = [*ARGS, "--data", str(camvid), "--out", str(tmp_path / "o"), "--max-steps", "1"]
    assert train.main([*base, "--amp"]) == 1  # bf16 autocast is CUDA-only
    err = capsys.readouterr().err.strip()
    assert "--amp" in err and "CUDA" in err and "\n" not in err
    assert train.main([*base, "--device", "tpu"]) == 1
    assert "use cpu, cuda, cuda:N or auto" in capsys.readouterr().err
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the no-CUDA error cannot be checked here")
    for device in ("cuda", "cuda:0"):
        assert train.main([*base, "--device", device]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"vidseg-train: error: --device {device}: CUDA is not available")
        assert "\n" not in err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_training_augment_follows_the_input_size() -> None:
    """A model that sees frames shrunk to its input trains on objects shrunk alike."""
    full = train.training_augment(None, (352, 480), source_height=360)
    small = train.training_augment(None, (256, 352), source_height=360)
    assert full.crop == (288, 384) and small.crop == (256, 352)  # input size, capped
    factor = 256 / 360
    assert small.scale_range == (0.8 * factor, 1.25 * factor)
    assert full.scale_range[0] < 0.8 < full.scale_range[1] < 1.25
    assert train.training_augment((64, 96), (256, 352), 360).crop == (64, 96)  # explicit wins
