"""``Result``: a step returns the graph's outputs and the geometry to map them back; labels and
confidence are taken to a size once, where they are used (the first read, or ``at_size``)."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.engine import FrameTimings, Result, Segmenter
from vidseg.engine import result as result_module
from vidseg.engine.geometry import to_frame
from vidseg.engine.multistream import MultiStreamSegmenter
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.engine.video import read_frames

SIZE = (150, 270)  # (H, W) of the test frames: not the default model's input size


@pytest.fixture(scope="module")
def frames(sample_clip: Path) -> list[np.ndarray]:
    return [f.image for f in read_frames(sample_clip, size=SIZE[::-1], max_frames=3)]


@pytest.fixture(scope="module")
def default() -> Segmenter:
    """The shipped bundle: labels, scores and logits at stride 4."""
    return Segmenter(warmup=False)


@pytest.fixture
def fits(monkeypatch) -> list[tuple[int, int]]:
    """The (H, W) of every time a result takes the graph's outputs to a size."""
    calls: list[tuple[int, int]] = []

    def counted(outputs, placement, height, width):
        calls.append((height, width))
        return to_frame(outputs, placement, height, width)

    monkeypatch.setattr(result_module, "to_frame", counted)
    return calls


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop"])
def test_a_step_leaves_the_upsampling_to_the_first_read(
    frames: list[np.ndarray], fits: list, resize: str
) -> None:
    result = Segmenter(resize=resize, warmup=False).step(frames[0])
    assert fits == [] and result.timings.post_ms == 0
    assert result.timings.total_ms == result.timings.pre_ms + result.timings.infer_ms
    assert result.outputs is not None and result.outputs.logits is not None
    assert (result.placement is None) == (resize == "stretch")
    labels, scores = result.labels, result.scores
    assert fits == [SIZE] and result.labels is labels and result.scores is scores  # once
    # what the step did before it left the upsampling to the read, bit for bit
    if result.placement is None:
        want = upsample(result.outputs, *SIZE)
    else:
        want = to_frame(result.outputs, result.placement, *SIZE)
    np.testing.assert_array_equal(labels, want[0])
    np.testing.assert_array_equal(scores, want[1])
    post = result.timings.post_ms
    assert post > 0 and result.timings.total_ms == pytest.approx(
        result.timings.pre_ms + result.timings.infer_ms + post
    )


def test_at_size_never_pays_for_the_steps_own_size(
    default: Segmenter, frames: list[np.ndarray], fits: list
) -> None:
    """The pipeline's path: a prepared frame's result (at the model input) taken to the frame's
    size, then to the output size: one upsampling, at the size that is used."""
    result = default.step(default.prepare(frames[1]))
    assert result.size == default.input_size and result.canvas
    framed = result.at_size(*SIZE)
    assert framed.at_size(*SIZE) is framed and result.at_size(*result.size) is result
    out = framed.at_size(75, 135)
    assert fits == []
    assert out.labels.shape == out.scores.shape == (75, 135)
    assert fits == [(75, 135)]
    assert (out.index, out.timestamp, out.key_frame) == (result.index, None, result.key_frame)
    assert out.timings.infer_ms == result.timings.infer_ms and out.timings.post_ms > 0
    assert result.timings.post_ms == framed.timings.post_ms == 0  # never read
    np.testing.assert_array_equal(out.labels, upsample(result.outputs, 75, 135)[0])
    # the canvas itself, read: the whole model input
    assert result.labels.shape == default.input_size and fits[-1] == default.input_size


def test_threads_reading_one_result_take_it_to_its_size_once(
    default: Segmenter, frames: list[np.ndarray], fits: list
) -> None:
    result = default.step(frames[2])
    start, got = threading.Barrier(6), []

    def read() -> None:
        start.wait()
        got.append(result.labels)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fits == [SIZE] and len(got) == 6 and all(labels is got[0] for labels in got)


def test_a_result_made_from_labels_keeps_them() -> None:
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    scores = np.full((3, 4), 200, np.uint8)
    result = Result(labels, 4, 0.16, FrameTimings(1.0, 2.0, 3.0), key_frame=False, scores=scores)
    assert result.labels is labels and result.scores is scores and result.size == (3, 4)
    assert result.timings == FrameTimings(1.0, 2.0, 3.0) and result.at_size(3, 4) is result
    bigger = result.at_size(6, 8)  # nearest neighbour from the labels
    want = cv2.resize(labels, (8, 6), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(bigger.labels, want)
    assert bigger.scores.shape == (6, 8) and (bigger.index, bigger.key_frame) == (4, False)
    with pytest.raises(AttributeError, match="read-only"):
        result.labels = labels  # type: ignore[misc]
    with pytest.raises(AttributeError, match="read-only"):
        result.index = 5  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(bigger))
    np.testing.assert_array_equal(copy.labels, bigger.labels)


def test_a_result_needs_labels_or_outputs_and_a_size() -> None:
    timings = FrameTimings(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="labels or the graph's outputs"):
        Result(None, 0, None, timings)
    outputs = GraphOutputs(np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="needs its size"):
        Result(None, 0, None, timings, outputs=outputs)
    lazy = Result(None, 0, None, timings, outputs=outputs, size=(4, 6))
    assert lazy.labels.shape == (4, 6) and lazy.scores is None


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_multistream_results_are_a_segmenters(
    tiny_bundle: Path, frames: list[np.ndarray], fits: list, resize: str
) -> None:
    """The same lazy result, the same resize modes: each stream's labels equal a Segmenter's
    on that stream alone."""
    multi = MultiStreamSegmenter(tiny_bundle, streams=2, resize=resize, warmup=False)
    singles = [Segmenter(tiny_bundle, resize=resize, warmup=False) for _ in range(2)]
    small = [cv2.resize(f, (96, 48)) for f in frames]
    for a, b in zip(frames, small):
        results = multi.step([a, b])
        assert fits == []
        for result, single, frame in zip(results, singles, (a, b)):
            assert result is not None and result.labels.shape == frame.shape[:2]
            np.testing.assert_array_equal(result.labels, single.step(frame).labels)
        fits.clear()
    with pytest.raises(ValueError, match="resize must be one of"):
        MultiStreamSegmenter(tiny_bundle, streams=1, resize="squash", warmup=False)
