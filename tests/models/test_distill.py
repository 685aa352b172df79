"""Distillation: the teacher file, its probabilities moving with the training crops, the loss
term, and vidseg-train --teacher end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg.engine.errors import VidsegError
from vidseg.models import teacher as teacher_cli
from vidseg.models import train
from vidseg.models.data import CAMVID_IGNORE, ClipAugment, load_split, make_clip
from vidseg.models.losses import SegLoss
from vidseg.models.teacher import load_teacher

K = 11


def one_hot(ids: np.ndarray) -> np.ndarray:
    """(..., K) uint8: 255 on the id's class, all 0 on void."""
    out = np.zeros((*ids.shape, K), np.uint8)
    valid = ids < K
    out[valid, ids[valid]] = 255
    return out


def test_teacher_probabilities_move_with_the_frame(camvid: Path) -> None:
    data = load_split(camvid, "train", limit=1)
    image, ids = data.images[0], data.labels[0]
    packed = np.concatenate([ids[..., None], one_hot(ids)], -1)
    aug = ClipAugment(crop=(96, 128), scale_range=(1.2, 1.4))
    plain_frames, plain_ids = make_clip(image, ids, 3, np.random.default_rng(5), aug)
    frames, labels = make_clip(image, packed, 3, np.random.default_rng(5), aug)
    assert labels.shape == (3, 96, 128, 1 + K)
    assert np.array_equal(frames, plain_frames)  # no extra randomness drawn
    assert np.array_equal(labels[..., 0], plain_ids)
    soft = labels[..., 1:]
    inside = soft.max(-1) == 255  # away from class edges the bilinear warp keeps the one-hot
    assert inside.mean() > 0.5
    assert np.array_equal(soft.argmax(-1)[inside], labels[..., 0][inside])
    valid = labels[..., 0] != CAMVID_IGNORE
    assert np.abs(soft[valid].sum(-1).astype(int) - 255).max() <= K


def test_distill_term_adds_the_teacher_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, K, 8, 12)
    ids = torch.randint(0, K, (2, 16, 24))
    ids[0, :4] = CAMVID_IGNORE
    plain = SegLoss()(logits, ids)
    same = torch.from_numpy(np.concatenate([ids.numpy()[..., None], one_hot(ids.numpy())], -1))
    loss = SegLoss(distill_weight=0.5)
    # a teacher that agrees with the labels: its term is the cross-entropy again
    assert torch.allclose(loss(logits, same), 1.5 * plain, rtol=1e-5)
    assert loss.count(same) == SegLoss().count(ids)
    uniform = same.clone()
    uniform[..., 1:] = 255 // K
    assert not torch.allclose(loss(logits, uniform), 1.5 * plain, rtol=1e-3)


def test_teacher_file(tiny_perframe_checkpoint: Path, tiny_checkpoint: Path, camvid: Path,
                      tmp_path: Path, capsys) -> None:  # fmt: skip
    out = tmp_path / "t.npz"
    assert teacher_cli.main(["--checkpoint", str(tiny_perframe_checkpoint), "--data", str(camvid),
                             "--out", str(out), "--limit", "3", "--scales", "1", "1.5",
                             "--flip"]) == 0  # fmt: skip
    data = load_split(camvid, "train", limit=3)
    probs = load_teacher(out, data.names[1:], data.labels.shape[1:], K)  # any subset, in order
    assert probs.shape == (2, *data.labels.shape[1:], K)
    assert np.abs(probs.sum(-1).astype(int) - 255).max() <= K
    assert np.array_equal(probs, load_teacher(out, data.names, data.labels.shape[1:], K)[1:])
    more = load_split(camvid, "train", limit=4).names
    with pytest.raises(VidsegError, match="no probabilities for 1 of the 4"):
        load_teacher(out, more, data.labels.shape[1:], K)
    with pytest.raises(VidsegError, match="these frames need uint8"):
        load_teacher(out, data.names, (32, 32), K)
    with pytest.raises(VidsegError, match="not a teacher file"):
        (tmp_path / "junk.npz").write_bytes(b"junk")
        load_teacher(tmp_path / "junk.npz", data.names, data.labels.shape[1:], K)
    capsys.readouterr()
    assert teacher_cli.main(["--checkpoint", str(tiny_checkpoint), "--data", str(camvid),
                             "--out", str(tmp_path / "r.npz"), "--limit", "1"]) == 1  # fmt: skip
    assert "carries state" in capsys.readouterr().err


def test_train_with_a_teacher(tiny_perframe_checkpoint: Path, camvid: Path,
                              tmp_path: Path) -> None:  # fmt: skip
    file = tmp_path / "t.npz"
    assert teacher_cli.main(["--checkpoint", str(tiny_perframe_checkpoint), "--data", str(camvid),
                             "--out", str(file), "--limit", "4", "--scales", "1"]) == 0  # fmt: skip
    out = tmp_path / "run"
    args = ["--model", "recurrent-lite0-gru", "--limit", "4", "--batch", "2", "--seq-len", "3",
            "--crop", "64", "96", "--input-size", "64", "96", "--eval-every", "2", "--scratch",
            "--data", str(camvid), "--out", str(out), "--teacher", str(file),
            "--distill-weight", "0.5", "--max-steps", "2"]  # fmt: skip
    assert train.main(args) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    recorded = json.loads(ckpt["train_args"])
    assert recorded["teacher"] == str(file) and recorded["distill_weight"] == 0.5
    assert all(math.isfinite(h["loss"]) for h in json.loads(ckpt["history"]))
    assert train.main([*args[:-1], "3", "--teacher", str(tmp_path / "none.npz")]) == 1
