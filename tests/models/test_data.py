"""Synthetic clips: shapes, labels move with the image, corruption leaves labels alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vidseg.models import data as data_module
from vidseg.models.data import (
    CAMVID_IGNORE,
    ClipAugment,
    LabelledFrames,
    clip_batch,
    compact_copy,
    load_split,
    make_clip,
)


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
    aug = ClipAugment(
        crop=(288, 384),
        scale_range=(1.0, 1.0),
        rot_step_deg=0.0,
        zoom_step=0.0,
        corrupt_prob=0.0,
        blur_prob=0.0,
        photometric=False,
    )
    _, labels = make_clip(image, label, 1, np.random.default_rng(0), aug)
    row = labels[0, 144]
    edges = np.flatnonzero(np.diff(row.astype(int)) != 0)
    widths = np.diff(edges)
    assert np.all(np.abs(widths[(widths > 5)] - 40) <= 2), widths


def _png_root(root: Path, stems: tuple[str, ...] = ("f01", "f02", "f03")) -> Path:
    """A tiny CamVid-layout root: train/ and val/ PNG images with PNG labels."""
    image, label = _checker(h=36, w=48)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i, stem in enumerate(stems):
            cv2.imwrite(str(root / split / f"{stem}.png"), np.roll(image, i, axis=1)[..., ::-1])
            cv2.imwrite(str(root / f"{split}annot" / f"{stem}.png"), np.roll(label, i, axis=1))
    return root


def test_compact_copy_jpeg_loads_like_png(tmp_path: Path, capsys) -> None:
    """The compact copy (JPEG images, PNG labels) loads with the same names order, identical
    labels and images within JPEG error; the CLI reports its size."""
    src = _png_root(tmp_path / "png")
    assert data_module.main(["compact", str(src), str(tmp_path / "jpg"), "--quality", "95"]) == 0
    assert "MB" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "jpg" / "train").iterdir()) == [
        "f01.jpg",
        "f02.jpg",
        "f03.jpg",
    ]
    for split in ("train", "val"):
        png, jpg = load_split(src, split), load_split(tmp_path / "jpg", split, limit=2)
        assert jpg.names == ("f01.jpg", "f02.jpg")
        np.testing.assert_array_equal(jpg.labels, png.labels[:2])
        assert np.abs(jpg.images.astype(int) - png.images[:2]).mean() < 4


def test_load_split_prefers_png_and_needs_labels(tmp_path: Path) -> None:
    import pytest

    from vidseg.engine.errors import VidsegError

    root = _png_root(tmp_path / "r")
    compact_copy(root, root)  # .jpg beside each .png: one image per stem, the PNG
    assert load_split(root, "train").names == ("f01.png", "f02.png", "f03.png")
    (root / "val" / "f04.jpg").write_bytes((root / "val" / "f01.jpg").read_bytes())
    with pytest.raises(VidsegError, match="f04.jpg"):  # no valannot/f04.png
        load_split(root, "val")
    with pytest.raises(VidsegError, match="quality"):
        compact_copy(root, tmp_path / "q", quality=0)
