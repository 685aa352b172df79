"""Atomic PNG-sequence sink for label masks (:class:`MaskSequenceWriter`). Label *videos* are
``VideoWriter(..., lossless=True)`` (``engine.writer``), read back with
:func:`~vidseg.engine.video.read_label_frames`."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from types import TracebackType
from typing import Final

import cv2
import numpy as np

from vidseg.engine.avutil import check_output_parent, error_reason, remove_quietly
from vidseg.engine.errors import VideoIOError

__all__ = ["MASK_NAME", "MaskSequenceWriter", "mask_files"]

logger = logging.getLogger(__name__)
STAGING_NAME: Final = ".vidseg-masks.partial"  # inside an existing DIR while a run writes


MASK_NAME: Final = re.compile(r"\d{6}\.png")
"""The names the writer gives its files (``000000.png``, ...): in an existing folder, the only
files it replaces or deletes."""


def mask_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The files in ``directory`` named as :class:`MaskSequenceWriter` names its masks (the ones
    a run with ``overwrite=True`` replaces), sorted; [] when it is not a folder."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    names = (e.name for e in entries if not e.is_dir(follow_symlinks=False))
    return sorted(Path(directory, name) for name in names if MASK_NAME.fullmatch(name))


class MaskSequenceWriter:
    """Write ``(H, W) uint8`` label masks as ``000000.png, 000001.png, ...`` into ``DIR``.

    Nothing a failed run wrote is ever seen, and nothing but the masks is ever touched:

    * ``DIR`` does not exist: the masks go into ``DIR.partial/`` beside it, renamed to ``DIR``
      when the with-block exits cleanly (the folder appears whole, or not at all).
    * ``DIR`` is a folder (or a link to one): the masks go into ``DIR/.vidseg-masks.partial/``
      and are moved into ``DIR`` one by one when the block exits cleanly. Only files named
      like the masks (``NNNNNN.png``, :func:`mask_files`) are replaced, and with them the ones
      this run did not write (an earlier, longer run's): the folder then holds exactly this
      run's masks beside everything else it held, which stays untouched (other files,
      subfolders). A folder already holding masks is written only with ``overwrite=True``.

    When the block raises, the staging folder is deleted, ``DIR`` is untouched and the
    exception propagates. PNG is lossless, so every label value 0..255 round-trips exactly
    (``cv2.imread(p, cv2.IMREAD_UNCHANGED)``).

    Raises (constructor):
        VideoIOError: the parent directory does not exist, ``DIR`` exists and is not a folder,
            or ``DIR`` holds masks and ``overwrite`` is False.

    Example:
        >>> with MaskSequenceWriter("out/masks") as sink:  # doctest: +SKIP
        ...     sink.write(np.zeros((48, 64), np.uint8))
    """

    def __init__(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.directory: Path = Path(directory)
        self.overwrite: bool = bool(overwrite)
        # normalised (".", "..", "a/.." get a real name), links kept: a link to a folder is
        # written into, not replaced
        self._where = Path(os.path.abspath(directory))
        self._frames_written = 0
        self._open = False
        self._staging: Path | None = None
        self._created = False  # staging beside DIR, renamed onto it (DIR did not exist)
        check_output_parent(self._where)
        self._check_target()

    @property
    def frames_written(self) -> int:
        """Number of masks written so far."""
        return self._frames_written

    def __enter__(self) -> MaskSequenceWriter:
        """Create the staging directory (a stale one left by a killed run is removed first).

        Raises:
            RuntimeError: already open.
            VideoIOError: the staging directory cannot be created.
        """
        if self._open:
            raise RuntimeError("MaskSequenceWriter is already open")
        check_output_parent(self._where)
        self._check_target()
        self._created = not self._where.is_dir()
        self._staging = (
            self._where.with_name(f"{self._where.name}.partial")
            if self._created
            else self._where / STAGING_NAME
        )
        try:
            if self._staging.exists():
                logger.warning("removing stale %s", self._staging)
                shutil.rmtree(self._staging)
            self._staging.mkdir()
        except OSError as error:
            raise VideoIOError(f"cannot create {self._staging}: {error_reason(error)}") from error
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
        if not self._open or self._staging is None:
            raise RuntimeError("MaskSequenceWriter.write() called outside its with-block")
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"mask must be a numpy array, got {type(mask).__name__}")
        if mask.dtype != np.uint8:
            raise TypeError(f"mask must be uint8, got {mask.dtype}")
        if mask.ndim != 2 or mask.size == 0:
            raise ValueError(f"mask must be a non-empty (H, W) array, got shape {mask.shape}")
        file = self._staging / f"{self._frames_written:06d}.png"
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
        """Publish the masks on a clean exit (see the class), delete the staging folder
        otherwise.

        Raises:
            VideoIOError: (clean exit only) ``DIR`` gained masks meanwhile without
                ``overwrite``, or a rename failed; the staging directory is deleted.
        """
        staging, self._staging = self._staging, None
        if not self._open or staging is None:
            return
        self._open = False
        if exc_type is not None:
            shutil.rmtree(staging, ignore_errors=True)
            logger.debug("discarded %s after %s", staging, exc_type.__name__)
            return
        try:
            self._check_target()
            self._publish(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.debug("wrote %d masks to %s", self._frames_written, self.directory)

    def _check_target(self) -> None:
        """Raise VideoIOError when ``DIR`` exists and may not be written."""
        if not os.path.lexists(self._where):
            return
        if not self._where.is_dir():
            raise VideoIOError(
                f"cannot write masks to {self.directory}: exists and is not a directory"
            )
        old = mask_files(self._where)
        if old and not self.overwrite:
            raise VideoIOError(
                f"cannot write masks to {self.directory}: it holds masks ({old[0].name}, ...) "
                "(pass overwrite=True to replace them)"
            )

    def _publish(self, staging: Path) -> None:
        """Rename the staging folder onto ``DIR`` (new), or move its masks into ``DIR`` and
        delete the masks of ``DIR`` this run did not write (existing)."""
        try:
            if self._created:
                os.rename(staging, self._where)  # fails rather than replace what appeared
                return
            written = {f"{i:06d}.png" for i in range(self._frames_written)}
            stale = [p for p in mask_files(self._where) if p.name not in written]
            for name in sorted(written):
                os.replace(staging / name, self._where / name)
            for path in stale:
                path.unlink(missing_ok=True)
        except OSError as error:
            raise VideoIOError(
                f"cannot move masks onto {self.directory}: {error_reason(error)}"
            ) from error
