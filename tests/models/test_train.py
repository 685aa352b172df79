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
