"""CamVid loading and synthetic temporal clips made from single labelled frames.

CamVid (CC BY-NC 4.0) labels one frame in thirty, so training clips are
synthesised: each clip follows one labelled image under a smooth random camera motion (pan, zoom,
small rotation, applied to image and label alike), with photometric jitter, sensor noise, blur
and transient corruptions (glare/occluding patches whose label stays the scene's) on some frames
after the first, so that a model with memory can do better than one without.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidseg.engine.errors import VidsegError, run_for_cli
from vidseg.engine.folder import IMAGE_SUFFIXES  # labels are always PNG (lossless class ids)

logger = logging.getLogger(__name__)

CAMVID_CLASSES: tuple[str, ...] = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
CAMVID_IGNORE = 11  # "void"


@dataclass(frozen=True)
class LabelledFrames:
    """Images (N, H, W, 3) uint8 RGB and labels (N, H, W) uint8, in file-name order."""

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]


def _image_files(image_dir: Path) -> list[Path]:
    """The images of a split folder in file-name order, one per stem (PNG preferred)."""
    by_stem: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        kept = by_stem.get(path.stem)
        if kept is None or (path.suffix.lower() == ".png" and kept.suffix.lower() != ".png"):
            by_stem[path.stem] = path
    return sorted(by_stem.values(), key=lambda p: p.name)


@dataclass(frozen=True)
class LabelledFrame:
    """One labelled frame of a folder: ``image`` (H, W, 3) uint8 RGB, ``label`` (H, W) class ids
    (uint8, or uint16 from a 16-bit PNG) at the image's size, ``name`` the image's file name."""

    name: str
    image: np.ndarray
    label: np.ndarray


def labelled_frame_paths(
    image_dir: str | Path, label_dir: str | Path, limit: int | None = None
) -> list[tuple[Path, Path]]:
    """(image, label) paths of a labelled frame folder, in image file-name order: every
    image of ``image_dir`` (``IMAGE_SUFFIXES``, as ``vidseg-run`` reads an image folder: ``.png``,
    ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``, ``.webp``; one per stem, PNG preferred; the
    first ``limit`` only, if given), each with the PNG of the same stem in ``label_dir``. Nothing is
    read yet (:func:`read_labelled_frame` does).

    Raises:
        VidsegError: a folder is missing, ``image_dir`` holds no image, or an image has no
            label (the message names the first such image).
    """
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    for kind, folder in (("frame", image_dir), ("label", label_dir)):
        if not folder.is_dir():
            raise VidsegError(f"{kind} folder not found: {folder}")
    images = _image_files(image_dir)[:limit]
    if not images:
        raise VidsegError(f"no PNG or JPEG images in {image_dir}")
    pairs = [(path, label_dir / f"{path.stem}.png") for path in images]
    missing = [image for image, label in pairs if not label.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise VidsegError(
            f"no label for frame {missing[0].name}: expected "
            f"{label_dir / (missing[0].stem + '.png')}{more}"
        )
    return pairs


def read_labelled_frame(image_path: Path, label_path: Path) -> LabelledFrame:
    """Read one frame (any PNG/JPEG, converted to RGB) and its label (a single-channel PNG of
    class ids, read as stored: 8 or 16 bit).

    Raises:
        VidsegError: either file is unreadable, the label has several channels (a colour or
            palette PNG), or its size differs from the frame's.
    """
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VidsegError(f"unreadable image {image_path}")
    label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise VidsegError(f"unreadable label {label_path}")
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[:, :, 0]
    if label.ndim != 2:
        raise VidsegError(
            f"label {label_path} has {label.shape[2]} channels: labels are "
            "single-channel PNGs of class ids (not colour or palette images)"
        )
    if label.shape != bgr.shape[:2]:
        raise VidsegError(
            f"label {label_path} is {label.shape[1]}x{label.shape[0]} but its frame "
            f"{image_path.name} is {bgr.shape[1]}x{bgr.shape[0]}"
        )
    return LabelledFrame(image_path.name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), label)


def load_split(root: str | Path, split: str, limit: int | None = None) -> LabelledFrames:
    """Read ``root/split`` and ``root/{split}annot``: images as PNG, JPEG or BMP
    (``IMAGE_SUFFIXES``; e.g. the compact copy :func:`compact_copy` writes JPEG), each with the
    PNG label of the same stem (:func:`labelled_frame_paths`, :func:`read_labelled_frame`).
    ``names`` are the image file names.

    Raises:
        VidsegError: the folders are missing, empty, an image has no label, or a file is
            unreadable or malformed.
    """
    root = Path(root)
    image_dir, label_dir = root / split, root / f"{split}annot"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise VidsegError(f"CamVid split {split!r} not found: need {image_dir} and {label_dir}")
    frames = [
        read_labelled_frame(image, label)
        for image, label in labelled_frame_paths(image_dir, label_dir, limit)
    ]
    return LabelledFrames(
        np.stack([f.image for f in frames]),
        np.stack([f.label for f in frames]),
        tuple(f.name for f in frames),
    )


CAMVID_SPLITS = ("train", "val", "test")


def compact_copy(src: str | Path, dst: str | Path, quality: int = 90) -> int:
    """Copy a CamVid root with its images re-encoded as JPEG (labels copied as they are).

    Every split of ``CAMVID_SPLITS`` present in ``src`` (``split/`` and ``splitannot/``) is
    copied to the same layout under ``dst``: ``split/STEM.jpg`` at JPEG ``quality`` and
    ``splitannot/STEM.png`` byte for byte. :func:`load_split` reads either form. Returns the
    total size in bytes of the files written.

    Raises:
        VidsegError: ``src`` holds no split, ``quality`` is outside 1..100, an image is
            unreadable or has no label.
    """
    src, dst = Path(src), Path(dst)
    if not 1 <= quality <= 100:
        raise VidsegError(f"JPEG quality must be in 1..100, got {quality}")
    splits = [s for s in CAMVID_SPLITS if (src / s).is_dir() and (src / f"{s}annot").is_dir()]
    if not splits:
        raise VidsegError(f"no CamVid split ({', '.join(CAMVID_SPLITS)} with *annot) in {src}")
    total = 0
    for split in splits:
        (dst / split).mkdir(parents=True, exist_ok=True)
        (dst / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for path in _image_files(src / split):
            label = src / f"{split}annot" / f"{path.stem}.png"
            if not label.is_file():
                raise VidsegError(f"no label {label} for {path}")
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise VidsegError(f"unreadable image {path}")
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise VidsegError(f"JPEG encoding failed for {path}")
            (dst / split / f"{path.stem}.jpg").write_bytes(jpeg.tobytes())
            label_bytes = label.read_bytes()
            (dst / f"{split}annot" / label.name).write_bytes(label_bytes)
            total += len(jpeg) + len(label_bytes)
    return total


@dataclass(frozen=True)
class ClipAugment:
    """Parameters of the synthetic camera motion and corruptions (per clip unless noted)."""

    crop: tuple[int, int] = (288, 384)  # (height, width) of training frames
    scale_range: tuple[float, float] = (0.8, 1.25)  # first frame's scale vs the source pixels
    zoom_step: float = 0.015  # max relative zoom change per frame
    pan_step: float = 0.02  # max pan per frame, fraction of crop width
    rot_step_deg: float = 1.0  # max rotation change per frame
    corrupt_prob: float = 0.3  # chance that a frame other than the labelled one is corrupted
    blur_prob: float = 0.2  # chance of a Gaussian blur per frame
    photometric: bool = True  # per-clip gain/bias jitter and per-frame sensor noise
    # index of the labelled frame in the clip: the frame at the drawn pose, never corrupted,
    # the motion running away from it both ways; negative counts from the end (-1: last)
    anchor: int = 0


def _affine(
    center: np.ndarray, scale: float, angle_deg: float, crop: tuple[int, int]
) -> np.ndarray:
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
        aug: motion and corruptions; ``aug.anchor`` places the labelled frame (modulo T).
    Returns:
        frames (T, h, w, 3) uint8 and labels (T, h, w) uint8 with (h, w) =
        ``aug.crop``; pixels that leave the source image are void.
    """
    src_h, src_w = label.shape
    h, w = aug.crop
    # relative to the source resolution (objects keep about the size they have at inference,
    # where frames are only resized to the model input), not to "crop fills the frame"
    scale = rng.uniform(*aug.scale_range)
    # centre range keeping the crop inside the source (its middle when the crop is larger)
    half = np.array([w, h]) / 2 / scale
    lo, hi = (
        np.minimum(half, [src_w / 2, src_h / 2]),
        np.maximum([src_w, src_h] - half, [src_w / 2, src_h / 2]),
    )
    center = rng.uniform(lo, hi)
    angle = rng.uniform(-3, 3)
    velocity = rng.uniform(-1, 1, 4) * [
        aug.pan_step * w,
        aug.pan_step * h * 0.5,
        aug.zoom_step,
        aug.rot_step_deg,
    ]
    flip = rng.random() < 0.5
    gain, bias = (rng.uniform(0.75, 1.25), rng.uniform(-20, 20)) if aug.photometric else (1, 0)
    frames = np.empty((length, h, w, 3), np.uint8)
    labels = np.empty((length, h, w), np.uint8)
    anchor = aug.anchor % length
    for t in range(length):
        d = t - anchor  # frames from the labelled one
        c = center + velocity[:2] * d / scale
        m = _affine(c, scale * (1 + velocity[2]) ** d, angle + velocity[3] * d, aug.crop)
        img = cv2.warpAffine(
            image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
        )
        lab = cv2.warpAffine(
            label,
            m,
            (w, h),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=CAMVID_IGNORE,
        )
        img = img.astype(np.float32)
        if aug.photometric:
            img = img * (gain * rng.uniform(0.95, 1.05)) + bias
            img += rng.normal(0, rng.uniform(0, 6), img.shape).astype(np.float32)
        if rng.random() < aug.blur_prob:
            k = int(rng.choice([3, 5, 7]))
            img = cv2.GaussianBlur(img, (k, k), 0)
        if d != 0 and rng.random() < aug.corrupt_prob:
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


def main(argv: list[str] | None = None) -> int:
    """``python -m vidseg.models.data compact SRC DST [--quality Q]``."""
    parser = argparse.ArgumentParser(
        prog="python -m vidseg.models.data", description="CamVid data utilities"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    compact = sub.add_parser("compact", help="copy a CamVid root with JPEG images (labels as PNG)")
    compact.add_argument("src", help="CamVid root with train/, trainannot/, val/, valannot/")
    compact.add_argument("dst", help="output root (same layout, images as .jpg)")
    compact.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100")
    compact.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    code, total = run_for_cli(
        parser.prog, lambda: compact_copy(args.src, args.dst, args.quality), debug=args.debug
    )
    if total is None:
        return code
    print(f"wrote {args.dst}: {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
