"""CamVid loading and synthetic temporal clips made from single labelled frames.

CamVid (../shared/data/camvid, CC BY-NC 4.0) labels one frame in thirty, so training clips are
synthesised: each clip follows one labelled image under a smooth random camera motion (pan, zoom,
small rotation, applied to image and label alike), with photometric jitter, sensor noise, blur
and transient corruptions (glare/occluding patches whose label stays the scene's) on some frames
after the first, so that a model with memory can do better than one without.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidseg.engine.errors import VidsegError

logger = logging.getLogger(__name__)

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree",
    "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
CAMVID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
CAMVID_IGNORE = 11  # "void"


@dataclass(frozen=True)
class LabelledFrames:
    """Images (N, H, W, 3) uint8 RGB and labels (N, H, W) uint8, in file-name order."""

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]


def load_split(root: str | Path, split: str, limit: int | None = None) -> LabelledFrames:
    """Read ``root/split`` and ``root/{split}annot`` (PNG pairs with matching names).

    Raises:
        VidsegError: the folders are missing, empty, or an image has no label.
    """
    root = Path(root)
    image_dir, label_dir = root / split, root / f"{split}annot"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise VidsegError(f"CamVid split {split!r} not found: need {image_dir} and {label_dir}")
    names = sorted(p.name for p in image_dir.glob("*.png"))[:limit]
    if not names:
        raise VidsegError(f"no PNG images in {image_dir}")
    images, labels = [], []
    for name in names:
        bgr = cv2.imread(str(image_dir / name), cv2.IMREAD_COLOR)
        label = cv2.imread(str(label_dir / name), cv2.IMREAD_UNCHANGED)
        if bgr is None or label is None:
            raise VidsegError(f"unreadable image or label: {name} in {root}")
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        labels.append(label)
    return LabelledFrames(np.stack(images), np.stack(labels), tuple(names))


@dataclass(frozen=True)
class ClipAugment:
    """Parameters of the synthetic camera motion and corruptions (per clip unless noted)."""

    crop: tuple[int, int] = (288, 384)  # (height, width) of training frames
    scale_range: tuple[float, float] = (0.8, 1.25)  # first frame's scale vs the source pixels
    zoom_step: float = 0.015  # max relative zoom change per frame
    pan_step: float = 0.02  # max pan per frame, fraction of crop width
    rot_step_deg: float = 1.0  # max rotation change per frame
    corrupt_prob: float = 0.3  # chance that a frame after the first gets a corruption
    blur_prob: float = 0.2  # chance of a Gaussian blur per frame
    photometric: bool = True  # per-clip gain/bias jitter and per-frame sensor noise


def _affine(center: np.ndarray, scale: float, angle_deg: float, crop: tuple[int, int]) -> np.ndarray:
    """2x3 matrix mapping source pixels to a crop centred on ``center`` at ``scale``."""
    h, w = crop
    m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), angle_deg, scale)
    m[0, 2] += w / 2 - center[0]
    m[1, 2] += h / 2 - center[1]
    return m


def make_clip(
    image: np.ndarray,
    label: np.ndarray,
    length: int,
    rng: np.random.Generator,
    aug: ClipAugment = ClipAugment(),
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic clip from one labelled frame.

    Args:
        image: (H, W, 3) uint8 RGB. label: (H, W) uint8 class ids, ``CAMVID_IGNORE`` = void.
        length: number of frames T (1 gives a plain augmented frame).
    Returns:
        frames (T, h, w, 3) uint8 and labels (T, h, w) uint8 with (h, w) = ``aug.crop``;
        pixels that leave the source image are void.
    """
    src_h, src_w = label.shape
    h, w = aug.crop
    # relative to the source resolution (objects keep about the size they have at inference,
    # where frames are only resized to the model input), not to "crop fills the frame"
    scale = rng.uniform(*aug.scale_range)
    # centre range keeping the crop inside the source (its middle when the crop is larger)
    half = np.array([w, h]) / 2 / scale
    lo, hi = np.minimum(half, [src_w / 2, src_h / 2]), np.maximum([src_w, src_h] - half,
                                                                [src_w / 2, src_h / 2])
    center = rng.uniform(lo, hi)
    angle = rng.uniform(-3, 3)
    velocity = rng.uniform(-1, 1, 4) * [aug.pan_step * w, aug.pan_step * h * 0.5,
                                        aug.zoom_step, aug.rot_step_deg]  # fmt: skip
    flip = rng.random() < 0.5
    gain, bias = (rng.uniform(0.75, 1.25), rng.uniform(-20, 20)) if aug.photometric else (1, 0)
    frames = np.empty((length, h, w, 3), np.uint8)
    labels = np.empty((length, h, w), np.uint8)
    for t in range(length):
        c = center + velocity[:2] * t / scale
        m = _affine(c, scale * (1 + velocity[2]) ** t, angle + velocity[3] * t, aug.crop)
        img = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT101)  # fmt: skip
        lab = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=CAMVID_IGNORE)  # fmt: skip
        img = img.astype(np.float32)
        if aug.photometric:
            img = img * (gain * rng.uniform(0.95, 1.05)) + bias
            img += rng.normal(0, rng.uniform(0, 6), img.shape).astype(np.float32)
        if rng.random() < aug.blur_prob:
            k = int(rng.choice([3, 5, 7]))
            img = cv2.GaussianBlur(img, (k, k), 0)
        if t > 0 and rng.random() < aug.corrupt_prob:
            _corrupt(img, rng)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
        labels[t] = lab
    if flip:
        frames, labels = frames[:, :, ::-1], labels[:, :, ::-1]
    return np.ascontiguousarray(frames), np.ascontiguousarray(labels)


def _corrupt(img: np.ndarray, rng: np.random.Generator) -> None:
    """In place: a glare, a flat occluding patch or heavy noise over a random box."""
    h, w = img.shape[:2]
    bh, bw = int(h * rng.uniform(0.15, 0.5)), int(w * rng.uniform(0.15, 0.5))
    y, x = rng.integers(0, h - bh), rng.integers(0, w - bw)
    patch = img[y : y + bh, x : x + bw]
    kind = rng.integers(3)
    if kind == 0:
        patch[:] = patch * 0.3 + 255 * 0.7
    elif kind == 1:
        patch[:] = rng.uniform(0, 255, 3)
    else:
        patch += rng.normal(0, 60, patch.shape)


def clip_batch(
    data: LabelledFrames, batch: int, length: int, rng: np.random.Generator, aug: ClipAugment
) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` random clips: frames (B, T, h, w, 3) uint8 and labels (B, T, h, w) uint8."""
    picks = rng.integers(0, len(data.images), batch)
    pairs = [make_clip(data.images[i], data.labels[i], length, rng, aug) for i in picks]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
