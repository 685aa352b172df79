"""Synthetic clips: shapes, labels move with the image, corruption leaves labels alone."""

from __future__ import annotations

import numpy as np

from vidseg.models.data import CAMVID_IGNORE, ClipAugment, LabelledFrames, clip_batch, make_clip


def _checker(h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """An image whose colour encodes its label: class = 4 * block row + block col."""
    yy, xx = np.mgrid[0:h, 0:w]
    label = ((yy // 40) * 4 + (xx // 40)).astype(np.uint8)
    image = np.stack([label * 20, 255 - label * 20, np.full_like(label, 128)], -1).astype(np.uint8)
    return image, label


def test_clip_shapes_and_label_follows_image() -> None:
    image, label = _checker()
    aug = ClipAugment(crop=(64, 96), corrupt_prob=0.0, blur_prob=0.0, photometric=False)
    frames, labels = make_clip(image, label, 6, np.random.default_rng(1), aug)
    assert frames.shape == (6, 64, 96, 3) and labels.shape == (6, 64, 96)
    assert frames.dtype == labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(12)) | {CAMVID_IGNORE}
    # away from block edges the label read back from the colour equals the warped label
    decoded = np.clip(np.round(frames[..., 0].astype(float) / 20), 0, 11)
    valid = labels != CAMVID_IGNORE
    agree = (decoded[valid] == labels[valid]).mean()
    assert agree > 0.8, agree
    # the camera moves: consecutive frames differ
    assert not np.array_equal(labels[0], labels[-1])


def test_corruption_changes_pixels_not_labels() -> None:
    image, label = _checker()
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    clean = make_clip(image, label, 4, rng_a, ClipAugment(crop=(64, 96), corrupt_prob=0.0))
    dirty = make_clip(image, label, 4, rng_b, ClipAugment(crop=(64, 96), corrupt_prob=1.0))
    np.testing.assert_array_equal(clean[1], dirty[1])  # labels identical
    np.testing.assert_array_equal(clean[0][0], dirty[0][0])  # first frame never corrupted


def test_clip_batch() -> None:
    image, label = _checker()
    data = LabelledFrames(np.stack([image] * 3), np.stack([label] * 3), ("a", "b", "c"))
    frames, labels = clip_batch(data, 2, 3, np.random.default_rng(0), ClipAugment(crop=(32, 64)))
    assert frames.shape == (2, 3, 32, 64, 3) and labels.shape == (2, 3, 32, 64)


def test_scale_is_relative_to_source_pixels() -> None:
    """At scale 1 a 40-pixel block stays 40 pixels wide (objects keep their inference size)."""
    image, label = _checker(h=360, w=480)
    aug = ClipAugment(crop=(288, 384), scale_range=(1.0, 1.0), rot_step_deg=0.0,
                      zoom_step=0.0, corrupt_prob=0.0, blur_prob=0.0, photometric=False)
    _, labels = make_clip(image, label, 1, np.random.default_rng(0), aug)
    row = labels[0, 144]
    edges = np.flatnonzero(np.diff(row.astype(int)) != 0)
    widths = np.diff(edges)
    assert np.all(np.abs(widths[(widths > 5)] - 40) <= 2), widths
