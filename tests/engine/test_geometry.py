"""engine/geometry.py without a model: placements, the model input, labels back on the frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vidseg.engine.geometry import (
    PAD_VALUE,
    UNSEEN,
    Rect,
    canvas_box,
    place,
    to_frame,
    to_input,
)
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.upsample import GraphOutputs, upsample


def test_placements_keep_the_aspect() -> None:
    # a 16:9 1920x1080 frame on a 256x352 input
    lb = place((1080, 1920), (256, 352), "letterbox")
    assert lb.src == Rect(0, 0, 1920, 1080)
    assert lb.dst == Rect(0, 29, 352, 198) and lb.padding == (29, 29, 0, 0)
    crop = place((1080, 1920), (256, 352), "crop")
    assert crop.dst == Rect(0, 0, 352, 256)
    assert crop.src == Rect(217, 0, 1485, 1080)  # 1080 * 352/256 = 1485 wide, centred
    stretch = place((1080, 1920), (256, 352), "stretch")
    assert stretch.src == Rect(0, 0, 1920, 1080) and stretch.dst == Rect(0, 0, 352, 256)
    # a tall frame: padding left and right
    assert place((400, 100), (64, 96), "letterbox").dst == Rect(40, 0, 16, 64)
    with pytest.raises(ValueError, match="resize mode"):
        place((10, 10), (4, 4), "fit")


def test_letterbox_input_pixels() -> None:
    """Content scaled by one factor, centred, grey bars: a frame of vertical stripes keeps its
    stripe positions, and the bars are PAD_VALUE."""
    frame = np.zeros((64, 192, 3), np.uint8)
    frame[:, 96:] = 200  # right half bright
    p = place(frame.shape[:2], (64, 96), "letterbox")
    assert p.dst == Rect(0, 16, 96, 32)
    x = to_input(frame, p)
    assert x.shape == (64, 96, 3) and x.flags["C_CONTIGUOUS"]
    assert (x[:16] == PAD_VALUE).all() and (x[48:] == PAD_VALUE).all()
    assert (x[16:48, :47] == 0).all() and (x[16:48, 49:] == 200).all()


def test_crop_input_pixels() -> None:
    frame = np.zeros((64, 192, 3), np.uint8)
    frame[:, :48] = 50  # cut off by the crop
    frame[:, 48:144] = np.arange(96, dtype=np.uint8)[None, :, None]  # the seen middle
    p = place(frame.shape[:2], (64, 96), "crop")
    assert p.src == Rect(48, 0, 96, 64)
    np.testing.assert_array_equal(to_input(frame, p), frame[:, 48:144])


def test_letterbox_labels_map_back_exactly() -> None:
    """Graph outputs whose padding rows carry a class of their own: none of it reaches the
    frame, and the content's pattern lands where the frame's content is."""
    p = place((64, 192), (64, 96), "letterbox")  # content rows 16..48 of the input
    labels = np.full((16, 24), 9, np.uint8)  # class 9 = padding
    labels[4:12] = 1  # the content rows (input rows 16..48 at stride 4)
    labels[4:12, 12:] = 2  # right half of the content
    out = GraphOutputs(labels)
    got, scores = to_frame(out, p, 64, 192)
    assert scores is None and got.shape == (64, 192)
    assert 9 not in got
    assert (got[:, :96] == 1).all() and (got[:, 96:] == 2).all()
    assert canvas_box(p, 64, 192) == (0, -32, 192, 128)
    # another target scale (--out-size): the same mapping
    half, _ = to_frame(out, p, 32, 96)
    assert (half[:, :48] == 1).all() and (half[:, 48:] == 2).all()


def test_letterbox_logits_are_crisp_and_clean() -> None:
    """With logits the labels are the arg-max of bilinear logits over the canvas; a padding
    class confined to the padding cells never bleeds in beyond its bilinear reach."""
    p = place((96, 64), (64, 96), "letterbox")  # tall frame: bars left and right
    assert p.dst == Rect(26, 0, 43, 64)
    logits = np.zeros((3, 16, 24), np.float32)
    logits[0] = 1.0  # class 0 in the content
    logits[2, :, :6] = logits[2, :, 18:] = 5.0  # class 2 fills the outer padding cells
    labels = logits.argmax(0).astype(np.uint8)
    scores = np.full((16, 24), 200, np.uint8)
    got, conf = to_frame(GraphOutputs(labels, scores, logits), p, 96, 64)
    assert got.shape == conf.shape == (96, 64)
    assert (got[:, 8:-8] == 0).all()  # away from the bars' bilinear reach: the content class
    assert (conf == 200).all()


def test_crop_labels_pasted_with_unseen_edges() -> None:
    p = place((64, 192), (64, 96), "crop")  # sees columns 48..144
    labels = np.ones((16, 24), np.uint8)
    got, conf = to_frame(GraphOutputs(labels, np.full((16, 24), 250, np.uint8)), p, 64, 192)
    assert (got[:, 48:144] == 1).all()
    assert (got[:, :48] == UNSEEN).all() and (got[:, 144:] == UNSEEN).all()
    assert (conf[:, 48:144] == 250).all() and (conf[:, :48] == 0).all()


def test_stretch_is_plain_upsampling() -> None:
    p = place((50, 70), (64, 96), "stretch")
    labels = np.arange(16 * 24, dtype=np.uint8).reshape(16, 24) % 7
    got, _ = to_frame(GraphOutputs(labels), p, 50, 70)
    np.testing.assert_array_equal(got, upsample(GraphOutputs(labels), 50, 70)[0])
    assert got.shape == (50, 70) and len(np.unique(got)) == 7


# --------------------------------------------------------------------------- through the engine


def smooth_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A frame with structure at several scales (random low-res colours, scaled up)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def test_letterboxed_labels_equal_the_content_region_by_hand(tiny_bundle) -> None:
    """A 192x64 frame letterboxed onto the 96x64 input: the labels are the model's labels for the
    hand-made padded input, upsampled over the whole padded canvas at frame scale (x2) and cut to
    the content rows; the pipeline's path (prepare, step, at_size) gives the same."""
    frame = smooth_frame(64, 192)
    seg = Segmenter(tiny_bundle, resize="letterbox")
    got = seg.step(frame)
    assert got.labels.shape == (64, 192)

    x = np.full((64, 96, 3), PAD_VALUE, np.uint8)
    x[16:48] = cv2.resize(frame, (96, 32), interpolation=cv2.INTER_LINEAR)
    plain = Segmenter(tiny_bundle).step(x)  # already the input size: no resize
    canvas, canvas_scores = upsample(plain.outputs, 128, 192)
    np.testing.assert_array_equal(got.labels, canvas[32:96])
    if canvas_scores is not None:
        np.testing.assert_array_equal(got.scores, canvas_scores[32:96])
    assert len(np.unique(canvas[32:96])) > 1  # the check means something

    seg.reset()
    prepared = seg.prepare(frame)
    assert prepared.placement is not None and prepared.placement.dst == Rect(0, 16, 96, 32)
    via_pipeline = seg.step(prepared).at_size(64, 192)
    np.testing.assert_array_equal(via_pipeline.labels, got.labels)

    # the padded canvas squeezed onto the frame (padding not cut) would be wrong
    squeezed, _ = upsample(plain.outputs, 64, 192)
    assert not np.array_equal(squeezed, got.labels)


def test_crop_mode_leaves_unseen_edges(tiny_bundle) -> None:
    frame = smooth_frame(64, 192, seed=1)
    result = Segmenter(tiny_bundle, resize="crop").step(frame)
    assert (result.labels[:, :48] == UNSEEN).all() and (result.labels[:, 144:] == UNSEEN).all()
    plain = Segmenter(tiny_bundle).step(np.ascontiguousarray(frame[:, 48:144]))
    np.testing.assert_array_equal(result.labels[:, 48:144], plain.labels)


def test_unknown_resize_mode(tiny_bundle) -> None:
    with pytest.raises(ValueError, match="resize"):
        Segmenter(tiny_bundle, resize="fit")
