"""A folder of images as a video source (CamVid-style frame folders): ``vidseg-run FRAMES_DIR``.

The images are the frames in file-name order (``0001TP_006690.png`` before ``0001TP_006720.png``),
at ``FOLDER_FPS``: frame ``i`` has pts ``i`` in a time base of ``1 / FOLDER_FPS``. Files whose
suffix is not an image's are ignored. An image that cannot be decoded (corrupt, empty, not an
image under an image's name) is skipped with one warning naming it, and the run goes on: one bad
frame of thousands should not lose the rest. The pts of the frames after it keep their place, so
the gap shows in the output's timing. A folder without a single readable image is a
``VideoIOError``.

Example:
    >>> info, frames = open_image_folder("camvid/val")  # doctest: +SKIP
    >>> next(frames).image.shape  # doctest: +SKIP
    (720, 960, 3)
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from vidseg.engine.errors import VideoIOError
from vidseg.engine.frame import Frame
from vidseg.engine.video import VideoInfo

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FOLDER_FPS = Fraction(30)  # CamVid's capture rate; frame folders declare none


def image_paths(folder: str | os.PathLike[str]) -> list[Path]:
    """The images of ``folder`` in file-name order (not recursive)."""
    return sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def _read(path: Path) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB, or None when the file does not decode as an image."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        logger.warning("skipped %s: cannot read it (%s)", path, error.strerror or error)
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        logger.warning("skipped %s: not a decodable image", path)
        return None
    return np.ascontiguousarray(image[:, :, ::-1])


def open_image_folder(
    folder: str | os.PathLike[str], *, max_frames: int | None = None
) -> tuple[VideoInfo, Iterator[Frame]]:
    """The folder's ``VideoInfo`` (the first readable image's size, ``FOLDER_FPS``) and its
    frames, bad images skipped with a warning.

    Raises:
        VideoIOError: the folder holds no image, or none that decodes.
    """
    paths = image_paths(folder)
    if not paths:
        raise VideoIOError(
            f"cannot read {folder}: no images in the folder ({', '.join(IMAGE_SUFFIXES)})"
        )
    time_base = 1 / FOLDER_FPS
    start, first = 0, None
    while first is None and start < len(paths):
        first = _read(paths[start])
        start += first is None
    if first is None:
        raise VideoIOError(f"cannot read {folder}: none of its {len(paths)} images decodes")
    height, width = first.shape[:2]
    info = VideoInfo(
        width=width,
        height=height,
        fps=FOLDER_FPS,
        time_base=time_base,
        frame_count=len(paths) - start,
        codec="image",
        duration_s=None,
    )

    def frames() -> Iterator[Frame]:
        index = 0
        for pts, path in enumerate(paths[start:], start):
            if max_frames is not None and index >= max_frames:
                return
            image = first if pts == start else _read(path)
            if image is None:
                continue
            yield Frame(image, index, pts, time_base)
            index += 1

    return info, frames()
