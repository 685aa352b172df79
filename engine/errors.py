"""Typed errors shared by every vidseg module.

This module imports nothing heavy so that ``vidseg.export`` and ``vidseg.models`` can raise the
same errors as the engine. The command-line entry points map each class to a one-line message
and an exit code (see ``EXIT_CODES``); library code never prints.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class VidsegError(Exception):
    """Base class of every error vidseg raises on purpose."""


class BundleError(VidsegError):
    """A model bundle is missing, unreadable, or its manifest violates the schema."""


class StateSpecError(BundleError):
    """A bundle's state/cache tensors disagree with its graph or with each other."""


class BackendError(VidsegError):
    """An inference backend is unavailable or failed to run a graph."""


class VideoIOError(VidsegError):
    """A video source or sink could not be opened, decoded or encoded."""


class TruncatedVideoError(VideoIOError):
    """The source ended early or stopped decoding; frames before the fault were delivered."""

    def __init__(self, message: str, frames_decoded: int) -> None:
        super().__init__(message)
        self.frames_decoded = frames_decoded


class SourceLostError(TruncatedVideoError):
    """A live or network source stopped delivering: nothing arrived within the timeout, or the
    connection dropped mid-stream (and every reconnect allowed failed). Frames before the loss
    were delivered. Told apart from a truncated file by its exit code."""


class ParityError(VidsegError):
    """An exported graph does not reproduce the torch model within tolerance."""


# Exit codes used by the CLIs: 1 generic, 2 usage (argparse), 130 interrupted (SIGINT convention).
EXIT_CODES: dict[type[VidsegError], int] = {
    BundleError: 3,
    StateSpecError: 3,
    BackendError: 4,
    VideoIOError: 5,
    TruncatedVideoError: 6,
    ParityError: 7,
    SourceLostError: 8,
}


def exit_code_for(error: BaseException) -> int:
    """Return the CLI exit code for ``error`` (most specific class wins, 1 when unknown)."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


class FrameError(VidsegError, ValueError):
    """A frame handed to the engine is not (H, W, 3) uint8 RGB."""


EXIT_CODES[FrameError] = 1


class UsageError(VidsegError, ValueError):
    """A request that cannot be served as given: an output path of the wrong kind, an option the
    bundle cannot serve, an existing output without ``overwrite``. Reported like a command
    line's usage error (exit 2)."""


EXIT_CODES[UsageError] = 2


def run_for_cli(
    prog: str, fn: Callable[[], T], *, debug: bool, interrupted: str = "interrupted"
) -> tuple[int, T | None]:
    """For console entry points only: run ``fn`` and turn a ``VidsegError`` into one line on
    stderr (``PROG: error: ...``) and its exit code, Ctrl-C into ``PROG: <interrupted>`` and 130.

    Returns ``(0, result)`` on success, ``(code, None)`` otherwise. ``debug`` re-raises instead,
    so the traceback shows.
    """
    try:
        return 0, fn()
    except VidsegError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exit_code_for(exc), None
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130, None
    except OSError as exc:  # a path the user gave cannot be read or written
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1, None


def unwritable(path: str | os.PathLike[str]) -> str | None:
    """Why a file cannot be written at ``path`` (checked before a long run), or None. ``-``
    (standard output), a FIFO or a device (``engine.outfile``) can always be written."""
    from vidseg.engine.outfile import final_path, writes_through  # imports this module

    if writes_through(path):
        return None
    target = final_path(path).absolute()  # a symlink's file is replaced beside itself
    if target.is_dir():
        return f"{path} is a directory"
    if not target.parent.is_dir():
        return f"directory does not exist: {target.parent}"
    if not os.access(target.parent, os.W_OK):
        return f"directory is not writable: {target.parent}"
    return None


def missing_extra(prog: str, extra: str, exc: ImportError) -> int:
    """For the console entry points of commands that need an optional extra (torch, onnx): one
    line on stderr naming the extra to install, and exit code 1.

    Raises:
        ImportError: ``exc`` itself when no third-party module is missing (a bug, not an
            install: the traceback should show).
    """
    missing = (exc.name or "").split(".")[0]
    if not missing or missing == "vidseg":
        raise exc
    print(
        f"{prog}: error: needs {missing}, which the runtime install leaves out: "
        f"pip install 'vidseg[{extra}]'",
        file=sys.stderr,
    )
    return 1
