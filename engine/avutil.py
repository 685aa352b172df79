"""Checks and error text shared by the PyAV reader (``video``) and writers (``writer``, ``masks``,
``audio``): argument validation, the output directory check, one-line FFmpeg/OS error reasons."""

from __future__ import annotations

import logging
import numbers
import operator
import os
from fractions import Fraction
from pathlib import Path
from typing import Final

import av.error

from vidseg.engine.errors import VideoIOError

logger = logging.getLogger(__name__)

AV_ERRORS: Final = (av.error.FFmpegError, OSError)
"""What PyAV raises for I/O, demux, decode and encode failures (FFmpegError subclasses
ValueError/OSError in av 18)."""


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Return ``(width, height)`` as ints; raise ValueError unless both are positive integers."""
    try:
        width, height = (operator.index(value) for value in size)
    except (TypeError, ValueError) as error:
        raise ValueError(f"size must be (width, height) integers, got {size!r}") from error
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {width}x{height}")
    return width, height


def check_rational(name: str, value: Fraction | int) -> Fraction:
    """Return ``value`` as a positive Fraction; floats are refused (29.97 is not 30000/1001)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Rational):
        raise ValueError(
            f"{name} must be a Fraction or int (e.g. Fraction(30000, 1001)), got {value!r}"
        )
    result = Fraction(value)
    if result <= 0:
        raise ValueError(f"{name} must be positive, got {result}")
    return result


def check_output_parent(path: Path) -> None:
    """Raise VideoIOError unless ``path``'s parent directory exists and is writable."""
    parent = path.parent
    if not parent.is_dir():
        raise VideoIOError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VideoIOError(f"output directory is not writable: {parent}")


def error_reason(error: BaseException) -> str:
    """One-line reason of an FFmpeg/OS error, without PyAV's errno and function-name noise."""
    return " ".join(str(getattr(error, "strerror", None) or error).split())


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; log (do not raise) when that fails."""
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        logger.warning("cannot remove temporary file %s: %s", path, error)
