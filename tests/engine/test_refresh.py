"""A stream's memory switched off, and refreshed where it no longer applies (``engine.refresh``):
each checked label for label against a segmenter reset by hand before the same frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.aux_inputs.dis_flow import DisFlowProvider, warp_mismatch
from vidseg.engine.refresh import DEFAULT_MAX_MISMATCH, Refresh
from vidseg.engine.video import read_frames

# stateful bundles whose memory changes their outputs on the clip (the tiny NetWarp's does not)
STATEFUL = ["tile_bundle", "tiny_bundle", "tiny_keyframe_bundle"]


@pytest.fixture(scope="module")
def clip(sample_clip: Path) -> list[np.ndarray]:
    """40 consecutive frames of the sample clip at 128x96 (small: fast flow, any bundle)."""
    return [f.image for f in read_frames(sample_clip, size=(128, 96), max_frames=40)]


def _labels(segmenter: Segmenter, frames, times=None, resets: set[int] = frozenset()):
    """Each frame's labels, the graph's outputs they came from (the untrained bundles' labels
    are nearly constant; their logits or confidence are not) and whether it was a key frame,
    ``reset()`` before the frames in ``resets``."""
    out = []
    for i, frame in enumerate(frames):
        if i in resets:
            segmenter.reset()
        result = segmenter.step(frame, None if times is None else times[i])
        raw = result.outputs
        evidence = raw.logits if raw.logits is not None else raw.scores
        out.append((result.labels.copy(), raw.labels.copy(), evidence, result.key_frame))
    return out


def _same(a: list, b: list) -> list[int]:
    """The indices of the frames whose labels or outputs differ."""
    return [
        i
        for i, (x, y) in enumerate(zip(a, b))
        if not all(
            (u is None and v is None) or np.array_equal(u, v) for u, v in zip(x, y, strict=True)
        )
    ]


@pytest.mark.parametrize("name", STATEFUL)
def test_no_memory_equals_a_reset_before_every_step(name, request, clip) -> None:
    bundle = request.getfixturevalue(name)
    fresh = _labels(Segmenter(bundle, warmup=False), clip, resets=set(range(len(clip))))
    off = Segmenter(bundle, warmup=False, memory=False)
    assert _same(_labels(off, clip), fresh) == []
    assert off.stats().resets == 0  # the switch is not a stream of resets in the stats
    # the memory changes labels on this clip, else the switch could not show
    carried = _labels(Segmenter(bundle, warmup=False, refresh=Refresh.off()), clip)
    assert len(_same(carried, fresh)) > len(clip) // 2


def test_timestamps_far_apart_or_going_back_refresh_the_memory(tile_bundle, clip) -> None:
    frames = clip[:16]
    times = [i / 30 for i in range(16)]
    times[6:] = [t + 2.0 for t in times[6:]]  # two seconds missing before frame 6
    times[11:] = [t - 1.0 for t in times[11:]]  # frame 11 goes back in time
    by_time = Refresh(max_gap_s=0.5, max_mismatch=None)
    seg = Segmenter(tile_bundle, warmup=False, refresh=by_time)
    got = _labels(seg, frames, times)
    off = Refresh.off()
    want = _labels(Segmenter(tile_bundle, warmup=False, refresh=off), frames, resets={6, 11})
    assert _same(got, want) == [] and seg.refreshes == 2
    carried = _labels(Segmenter(tile_bundle, warmup=False, refresh=off), frames, times)
    assert _same(carried, want)  # without the refresh the stale memory shows
    # a gap of 0.4 s is within the limit, and frames without timestamps never refresh by time
    times = [i * 0.4 for i in range(16)]
    seg = Segmenter(tile_bundle, warmup=False, refresh=by_time)
    assert _same(_labels(seg, frames, times), carried) == [] and seg.refreshes == 0
    seg = Segmenter(tile_bundle, warmup=False, refresh=by_time)
    assert _same(_labels(seg, frames), carried) == [] and seg.refreshes == 0


def test_a_recurrent_bundle_refreshes_by_time(tiny_bundle, clip) -> None:
    times = [0.0, 0.04, 0.08, 3.0, 3.04]
    seg = Segmenter(tiny_bundle, warmup=False, refresh=Refresh(max_gap_s=1.0))
    off = Segmenter(tiny_bundle, warmup=False, refresh=Refresh.off())
    assert _same(_labels(seg, clip[:5], times), _labels(off, clip[:5], resets={3})) == []
    assert seg.refreshes == 1


def test_a_per_frame_bundle_has_nothing_to_refresh(tiny_perframe_bundle, clip) -> None:
    seg = Segmenter(tiny_perframe_bundle, warmup=False)
    _labels(seg, clip[:4], [0.0, 5.0, 1.0, 9.0])
    assert seg.refresh == Refresh.off() and seg.refreshes == 0 and seg.stats().resets == 0


def _cut(clip: list[np.ndarray]) -> list[np.ndarray]:
    """Eight clip frames, then a cut to eight frames of another scene (the clip upside down)."""
    return clip[:8] + [np.ascontiguousarray(f[::-1]) for f in clip[20:28]]


def test_a_frame_its_past_does_not_explain_refreshes_the_memory(tile_bundle, clip) -> None:
    bundle = tile_bundle
    frames = _cut(clip)
    by_content = Refresh(max_gap_s=None)
    seg = Segmenter(bundle, warmup=False, refresh=by_content)
    got = _labels(seg, frames)
    off = Refresh.off()
    want = _labels(Segmenter(bundle, warmup=False, refresh=off), frames, resets={8})
    assert _same(got, want) == [] and seg.refreshes == 1  # the cut, and no frame in order
    assert seg.stats().resets == 1
    assert _same(_labels(Segmenter(bundle, warmup=False, refresh=off), frames), want)


def test_without_a_witness_of_the_content_a_cut_is_not_seen(tiny_bundle, clip) -> None:
    """A bundle with no provider that measures the mismatch (a recurrent bundle) is judged by
    time alone: a cut without a time gap is carried through."""
    frames = _cut(clip)
    seg = Segmenter(tiny_bundle, warmup=False, refresh=Refresh(max_gap_s=None))
    off = Segmenter(tiny_bundle, warmup=False, refresh=Refresh.off())
    assert _same(_labels(seg, frames), _labels(off, frames)) == [] and seg.refreshes == 0


def test_warp_mismatch_is_what_the_flow_fails_to_explain(clip) -> None:
    current = cv2.cvtColor(clip[10], cv2.COLOR_RGB2GRAY)
    previous = np.roll(current, (3, -5), axis=(0, 1))  # current(x, y) = previous(x - 5, y + 3)
    flow = np.zeros((*current.shape, 2), np.float32)
    moved = np.dstack([np.full(current.shape, -5, np.float32), np.full(current.shape, 3.0)])
    assert warp_mismatch(previous, current, moved.astype(np.float32)) < 0.02  # borders aside
    assert warp_mismatch(previous, current, flow) > 0.2
    # a flow on a grid twice as fine: its displacements are halved to the frames' cells
    fine = cv2.resize(moved, (2 * current.shape[1], 2 * current.shape[0])) * 2
    assert warp_mismatch(previous, current, fine.astype(np.float32)) < 0.02
    assert warp_mismatch(current, current, flow) == 0.0


def test_the_flow_provider_reports_the_mismatch_of_each_frame(clip) -> None:
    provider = DisFlowProvider((2, 96, 128))
    provider(clip[0])
    assert provider.mismatch is None  # a first frame has no past
    seen = []
    for frame in clip[1:12]:
        provider(frame)
        seen.append(provider.mismatch)
    assert max(seen) < DEFAULT_MAX_MISMATCH  # the clip in order
    provider(np.ascontiguousarray(clip[12][::-1]))
    assert provider.mismatch > 0.3  # a cut
    provider.reset()
    provider(clip[0])
    assert provider.mismatch is None  # nor a frame after a reset


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_thresholds_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="max_gap_s"):
        Refresh(max_gap_s=bad)
    with pytest.raises(ValueError, match="max_mismatch"):
        Refresh(max_mismatch=bad)


def test_vidseg_run_no_memory_writes_the_labels_of_a_reset_every_frame(
    tiny_bundle, sample_clip, tmp_path
) -> None:
    from vidseg.engine import cli

    masks = tmp_path / "masks"
    args = [str(sample_clip), "--model", str(tiny_bundle), "--max-frames", "8", "-q"]
    assert cli.main([*args, "--mask-out", str(masks), "--no-memory"]) == 0
    got = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(masks.glob("*.png"))]
    frames = [f.image for f in read_frames(sample_clip, max_frames=8)]
    fresh = [r[0] for r in _labels(Segmenter(tiny_bundle), frames, resets=set(range(8)))]
    assert len(got) == 8 and all(np.array_equal(a, b) for a, b in zip(got, fresh))
    assert cli.main([*args, "--mask-out", str(tmp_path / "carried")]) == 0
    carried = [
        cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        for p in sorted((tmp_path / "carried").glob("*.png"))
    ]
    assert sum(not np.array_equal(a, b) for a, b in zip(carried, fresh)) >= 4


@pytest.mark.parametrize("memory", [True, False])
def test_each_stream_of_a_batch_refreshes_as_its_own_segmenter(tile_bundle, clip, memory) -> None:
    """Two streams batched: one in order with a two-second gap in its timestamps, one with a
    cut and no timestamps; each row's outputs equal a Segmenter's given the same frames."""
    from vidseg.engine.multistream import MultiStreamSegmenter

    streams = [clip[:16], _cut(clip)]
    times = [[i / 30 + (2.0 if i >= 6 else 0.0) for i in range(16)], [None] * 16]
    batch = MultiStreamSegmenter(tile_bundle, streams=2, warmup=False, memory=memory)
    rows: list[list] = [[], []]
    for k in range(16):
        results = batch.step([s[k] for s in streams], [t[k] for t in times])
        for row, result in zip(rows, results):
            raw = result.outputs
            row.append((result.labels.copy(), raw.labels.copy(), raw.logits, result.key_frame))
    for i in range(2):
        alone = Segmenter(tile_bundle, warmup=False, memory=memory)
        assert _far(rows[i], _labels(alone, streams[i], times[i])) == [], i
    assert batch.refreshes == ([1, 1] if memory else [0, 0])
    off = Segmenter(tile_bundle, warmup=False, refresh=Refresh.off())
    assert _far(rows[1], _labels(off, streams[1]))  # the refresh shows in the batch too


def _far(a: list, b: list) -> list[int]:
    """The frames whose outputs differ by more than a batched run's rounding (a batch of two
    rows is not bit-exact with a batch of one): labels agreeing on < 99.9 % of the cells,
    logits off by > 1e-4, or another key frame."""
    return [
        i
        for i, (x, y) in enumerate(zip(a, b))
        if (x[1] == y[1]).mean() < 0.999 or not np.allclose(x[2], y[2], atol=1e-4) or x[3] != y[3]
    ]


def test_vidseg_run_refreshes_across_the_gaps_its_stride_makes(
    tiny_bundle, sample_clip, tmp_path
) -> None:
    """The sample is 25 fps: every 25th frame is a second after the one before, so each is run
    as a stream's first (the labels of --no-memory); every 2nd frame carries the memory."""
    from vidseg.engine import cli

    def masks(name: str, *flags: str) -> list[np.ndarray]:
        out = tmp_path / name
        args = [str(sample_clip), "--model", str(tiny_bundle), "--mask-out", str(out), "-q"]
        assert cli.main([*args, *flags]) == 0
        return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(out.glob("*.png"))]

    far = masks("far", "--vid-stride", "25")
    far_fresh = masks("far0", "--vid-stride", "25", "--no-memory")
    assert len(far) == 4 and all(np.array_equal(a, b) for a, b in zip(far, far_fresh))
    near = masks("near", "--vid-stride", "2", "--max-frames", "16")
    near_fresh = masks("near0", "--vid-stride", "2", "--max-frames", "16", "--no-memory")
    assert len(near) == 8 and sum(not np.array_equal(a, b) for a, b in zip(near, near_fresh)) >= 4
