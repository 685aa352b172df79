"""benchmarks/research/staleness.py: the composed clips and the count, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import staleness


def _drive(n: int = 12) -> list[np.ndarray]:
    """Frames of 8x12 whose every pixel holds the frame's index."""
    return [np.full((8, 12, 3), i, np.uint8) for i in range(n)]


def test_boxes_sit_in_their_quadrants() -> None:
    shape = (8, 12)
    boxes = [staleness.box(shape, q) for q in range(4)]
    assert boxes[0] == (slice(1, 3), slice(2, 5)) and boxes[3] == (slice(5, 7), slice(8, 11))
    for q, (ys, xs) in enumerate(boxes):
        assert (ys.start >= 4) == (q >= 2) and (xs.start >= 6) == (q % 2 == 1)


@pytest.mark.parametrize("case", staleness.CASES)
def test_the_new_content_comes_from_b_from_frame_before_on(case: str) -> None:
    clip = staleness.compose(_drive(), case, a=1, b=7, before=2, after=3)
    assert len(clip.frames) == 5
    assert [int(f[0, 0, 0]) for f in clip.frames[:2]] == [1, 2]
    inside = [int(f[..., 0][clip.region][0]) for f in clip.frames]
    assert inside == [1, 2, 7, 8, 9]
    if case == "cut":
        assert clip.region.all()
    else:  # outside the box the drive goes on from a
        assert clip.region.sum() == 2 * 3
        assert [int(f[..., 0][~clip.region][0]) for f in clip.frames] == [1, 2, 3, 4, 5]


def test_frames_to_agree_counts_from_the_change() -> None:
    region = np.zeros((2, 5), bool)
    region[:, :] = True
    want = [np.zeros((2, 5), np.uint8)] * 6
    got = [np.zeros((2, 5), np.uint8) for _ in range(6)]
    got[2][:, :2] = 1  # 60 % agree
    got[3][:, :1] = 1  # 80 %
    assert staleness.frames_to_agree(got, want, region, 2, 90.0) == 3  # frame 4 agrees
    assert staleness.frames_to_agree(got, want, region, 2, 80.0) == 2
    assert staleness.frames_to_agree(got, want, region, 4, 90.0) == 1
    got[4][:] = got[5][:] = 1
    assert staleness.frames_to_agree(got, want, region, 4, 90.0) is None
    assert "| cut | 1, never | 3.50 | 6 |" in staleness.table("x", {"cut": [1, None]}, after=5)


@pytest.mark.parametrize("case", staleness.CASES)
def test_the_warm_clip_shows_the_new_content_from_the_start(case: str) -> None:
    clip = staleness.compose(_drive(), case, a=1, b=7, before=2, after=3)
    warm = staleness.compose(_drive(), case, a=1, b=7, before=2, after=3, warm=True)
    assert np.array_equal(warm.region, clip.region) and len(warm.frames) == 5
    assert [int(f[..., 0][warm.region][0]) for f in warm.frames] == [5, 6, 7, 8, 9]
    for ours, theirs in zip(warm.frames[2:], clip.frames[2:]):
        assert np.array_equal(ours, theirs)  # the same frames from the change on
