"""Atomic PNG-sequence sink for label masks (:class:`MaskSequenceWriter`). Label *videos* are
``VideoWriter(..., lossless=True)`` (``engine.writer``), read back with
:func:`~vidseg.engine.video.read_label_frames`."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from vidseg.engine.avutil import check_output_parent, error_reason, remove_quietly
from vidseg.engine.errors import VideoIOError

__all__ = ["MaskSequenceWriter"]

logger = logging.getLogger(__name__)


class MaskSequenceWriter:
    """Write ``(H, W) uint8`` label masks as ``000000.png, 000001.png, ...``; atomic directory.

    Files go into ``DIR.partial/`` beside ``DIR``; a clean exit of the with-block renames it to
    ``DIR``. An existing ``DIR`` that is empty is replaced; a non-empty one is replaced only with
    ``overwrite=True`` (it is moved aside first, then deleted after the rename). When the block
    raises, ``DIR.partial/`` is deleted, ``DIR`` is untouched and the exception propagates.
    PNG is lossless, so every label value 0..255 round-trips exactly (``cv2.imread(p,
    cv2.IMREAD_UNCHANGED)``).

    Raises (constructor):
        VideoIOError: the parent directory does not exist, ``DIR`` is a file, or ``DIR`` is a
            non-empty directory and ``overwrite`` is False.

    Example:
        >>> with MaskSequenceWriter("out/masks") as sink:  # doctest: +SKIP
        ...     sink.write(np.zeros((48, 64), np.uint8))
    """

    def __init__(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.directory: Path = Path(directory)
        self.overwrite: bool = bool(overwrite)
        self._partial = self.directory.with_name(self.directory.name + ".partial")
        self._frames_written = 0
        self._open = False
        check_output_parent(self.directory)
        self._check_target()

    @property
    def frames_written(self) -> int:
        """Number of masks written so far."""
        return self._frames_written

    def __enter__(self) -> MaskSequenceWriter:
        """Create the ``DIR.partial`` staging directory (a stale one is removed first).

        Raises:
            RuntimeError: already open.
            VideoIOError: the staging directory cannot be created.
        """
        if self._open:
            raise RuntimeError("MaskSequenceWriter is already open")
        check_output_parent(self.directory)
        try:
            if self._partial.exists():
                logger.warning("removing stale %s", self._partial)
                shutil.rmtree(self._partial)
            self._partial.mkdir()
        except OSError as error:
            raise VideoIOError(f"cannot create {self._partial}: {error_reason(error)}") from error
        self._open = True
        return self

    def write(self, mask: np.ndarray, pts: int | None = None) -> None:
        """Write the next mask as ``{index:06d}.png``.

        Args:
            mask: ``(H, W) uint8`` labels.
            pts: accepted for interface parity with
                :class:`~vidseg.engine.writer.VideoWriter`; PNG files carry no timestamps, so it
                is not stored.

        Raises:
            RuntimeError: called outside the with-block.
            TypeError / ValueError: not a 2-D uint8 array.
            VideoIOError: the PNG could not be written (e.g. disk full, file size limit).
        """
        if not self._open:
            raise RuntimeError("MaskSequenceWriter.write() called outside its with-block")
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"mask must be a numpy array, got {type(mask).__name__}")
        if mask.dtype != np.uint8:
            raise TypeError(f"mask must be uint8, got {mask.dtype}")
        if mask.ndim != 2 or mask.size == 0:
            raise ValueError(f"mask must be a non-empty (H, W) array, got shape {mask.shape}")
        file = self._partial / f"{self._frames_written:06d}.png"
        # encoded in memory and written by Python, whose write/close raise on a full disk:
        # cv2.imwrite can report success for a PNG the file system cut short
        try:
            ok, png = cv2.imencode(".png", np.ascontiguousarray(mask))
        except cv2.error as error:
            raise VideoIOError(f"cannot write mask {file}: {error_reason(error)}") from error
        if not ok:
            raise VideoIOError(f"cannot write mask {file}: PNG encoding failed")
        try:
            with open(file, "wb") as handle:
                handle.write(png.tobytes())
        except OSError as error:
            remove_quietly(file)
            raise VideoIOError(f"cannot write mask {file}: {error_reason(error)}") from error
        self._frames_written += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Publish ``DIR.partial`` as ``DIR`` on a clean exit, delete it otherwise.

        Raises:
            VideoIOError: (clean exit only) ``DIR`` became non-empty meanwhile without
                ``overwrite``, or a rename failed; the staging directory is deleted.
        """
        if not self._open:
            return
        self._open = False
        if exc_type is not None:
            shutil.rmtree(self._partial, ignore_errors=True)
            logger.debug("discarded %s after %s", self._partial, exc_type.__name__)
            return
        try:
            self._check_target()
            self._publish()
        except BaseException:
            shutil.rmtree(self._partial, ignore_errors=True)
            raise
        logger.debug("wrote %d masks to %s", self._frames_written, self.directory)

    def _check_target(self) -> None:
        """Raise VideoIOError when ``DIR`` exists and may not be replaced."""
        if not self.directory.exists():
            return
        if not self.directory.is_dir():
            raise VideoIOError(
                f"cannot write masks to {self.directory}: exists and is not a directory"
            )
        if not self.overwrite and any(self.directory.iterdir()):
            raise VideoIOError(
                f"cannot write masks to {self.directory}: directory is not empty "
                "(pass overwrite=True to replace it)"
            )

    def _publish(self) -> None:
        """Rename the staging directory onto ``DIR``, moving a non-empty old ``DIR`` aside."""
        old = self.directory.with_name(f".{self.directory.name}.old")
        try:
            if self.directory.exists() and any(self.directory.iterdir()):
                if old.exists():
                    shutil.rmtree(old)
                os.replace(self.directory, old)
            os.replace(self._partial, self.directory)  # replaces an empty DIR atomically
        except OSError as error:
            raise VideoIOError(
                f"cannot move masks onto {self.directory}: {error_reason(error)}"
            ) from error
        shutil.rmtree(old, ignore_errors=True)
