"""Unlabelled video clips for the consistency loss: decoding, flow check, sampling, and the
consistency term on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg.engine.errors import VidsegError
from vidseg.models.train import ClipTraining, consistency_losses, train_step
from vidseg.models.videos import VideoClips, consistent_pixels

VIDEOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "videos"
TINY_SIZE = (64, 96)  # conftest's tiny models


@pytest.fixture(scope="module")
def videos() -> VideoClips:
    if not VIDEOS.is_dir():
        pytest.skip(f"no unlabelled videos at {VIDEOS}")
    return VideoClips.load(VIDEOS, TINY_SIZE)


def test_load_decodes_every_video_with_its_flow(videos: VideoClips) -> None:
    assert videos.names == ("solidWhiteRight.mp4", "test_video.mp4")
    assert [len(f) for f in videos.frames] == [221, 38]
    for frames, flows, valid in zip(videos.frames, videos.flows, videos.valid):
        assert frames.shape[1:] == (*TINY_SIZE, 3) and frames.dtype == np.uint8
        assert flows.shape == (len(frames) - 1, 2, TINY_SIZE[0] // 4, TINY_SIZE[1] // 4)
        assert valid.shape == (len(frames) - 1, *flows.shape[-2:]) and valid.dtype == bool
        assert 0.5 < valid.mean() < 1  # smooth dashcam motion: most pixels pass the check


def test_sample_shapes_and_crop(videos: VideoClips) -> None:
    frames, flows, valid = videos.sample(3, 4, (32, 64), np.random.default_rng(0))
    assert frames.shape == (3, 4, 32, 64, 3)
    assert flows.shape == (3, 3, 2, 8, 16) and valid.shape == (3, 3, 8, 16)
    again = videos.sample(3, 4, (32, 64), np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip((frames, flows, valid), again))
    with pytest.raises(VidsegError, match="has 300 frames"):
        videos.sample(1, 300, (32, 64), np.random.default_rng(0))
    with pytest.raises(VidsegError, match="must fit"):
        videos.sample(1, 2, (128, 64), np.random.default_rng(0))


def test_forward_backward_check() -> None:
    """A uniform shift passes inside the frame and fails where it leaves it; a flow the
    forward flow does not undo fails."""
    backward = np.zeros((2, 6, 8), np.float32)
    backward[0] = 2.0  # t at x shows t - 1 at x + 2
    forward = -backward
    ok = consistent_pixels(backward, forward)
    assert ok[:, :6].all() and not ok[:, 6:].any()
    assert not consistent_pixels(backward, np.zeros_like(forward))[:, :6].any()


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(VidsegError, match="no folder"):
        VideoClips.load(tmp_path / "missing", TINY_SIZE)
    with pytest.raises(VidsegError, match="no video"):
        VideoClips.load(tmp_path, TINY_SIZE)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(VidsegError, match="cannot decode"):
        VideoClips.load(tmp_path, TINY_SIZE)


def _sum(terms) -> torch.Tensor:
    return sum((t.detach() for t in terms), torch.zeros(()))


def test_consistency_is_zero_for_a_consistent_prediction(tiny_model_factory) -> None:
    """A per-frame model on identical frames with zero flow predicts exactly the same thing
    at the same place: the term is 0, with or without warm-up and chunks."""
    model = tiny_model_factory("perframe-lite0")
    frame = torch.randint(0, 256, (2, 1, *TINY_SIZE, 3), dtype=torch.uint8)
    frames = frame.expand(-1, 4, -1, -1, -1).contiguous()
    grid = (TINY_SIZE[0] // 4, TINY_SIZE[1] // 4)
    flows, valid = torch.zeros(2, 3, 2, *grid), torch.ones(2, 3, *grid, dtype=torch.bool)
    for opts in (
        ClipTraining(consistency_weight=1.0),
        ClipTraining(consistency_weight=1.0, warmup_frames=1, tbptt=2),
    ):
        assert _sum(consistency_losses(model, frames, flows, valid, opts)).item() < 1e-5


def test_consistency_trains_a_recurrent_model(tiny_model_factory, videos: VideoClips) -> None:
    """On real clips the term is finite and non-zero for a recurrent model, and three
    consistency-only steps change it."""
    torch.manual_seed(0)
    model = tiny_model_factory("recurrent-lite0-gru").train()
    opts = ClipTraining(consistency_weight=1.0, warmup_frames=1, tbptt=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    frames = torch.zeros(2, 1, *TINY_SIZE, 3, dtype=torch.uint8)
    labels = torch.full((2, 1, *TINY_SIZE), 11)  # all void: the supervised term is 0
    losses = []
    for step in range(3):
        video = tuple(
            map(torch.from_numpy, videos.sample(2, 5, TINY_SIZE, np.random.default_rng(step)))
        )
        losses.append(train_step(model, optimizer, frames, labels, opts, video).item())
    assert all(np.isfinite(losses)) and all(0 < v <= 2 for v in losses), losses
    assert len(set(losses)) == 3


def test_consistency_clips_leave_batch_norm_statistics_alone(
    tiny_model_factory, videos: VideoClips
) -> None:
    """The unlabelled clips (other cameras) train through the gradients only: after a
    consistency pass in training mode every running mean/variance is unchanged and every
    momentum restored, while a labelled forward still updates them."""
    model = tiny_model_factory("recurrent-lite0-gru").train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in norms]
    video = tuple(map(torch.from_numpy, videos.sample(2, 3, TINY_SIZE, np.random.default_rng(0))))
    terms = list(consistency_losses(model, *video, ClipTraining(consistency_weight=1.0)))
    assert terms and all(t.requires_grad for t in terms)
    for m, (mean, var, momentum) in zip(norms, before):
        torch.testing.assert_close(m.running_mean, mean, rtol=0, atol=0)
        torch.testing.assert_close(m.running_var, var, rtol=0, atol=0)
        assert m.momentum == momentum
    model(torch.rand(2, 3, *TINY_SIZE))
    assert any(not torch.equal(m.running_mean, mean) for m, (mean, _, _) in zip(norms, before))
