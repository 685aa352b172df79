"""Where an output's bytes go: one rule for every file the engine and its CLIs write
(``vidseg-run --out/--mask-out/--jsonl/--json``, the ``--json`` of ``vidseg-eval``,
``vidseg-bench`` and ``vidseg-batch``; ``VideoWriter``, ``FrameLog``, ``write_text``).

* ``-`` is standard output.
* **Written through** (in place: never renamed over, never deleted, no ``--overwrite`` needed):
  ``-``, a descriptor path (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``,
  ``/proc/self/fd/N``, or a symlink leading to one), and a path that exists and is neither a
  regular file nor a folder: a FIFO, a character or block device (``/dev/null``), a socket.
* **Replaced atomically** (everything else: a regular file, or nothing yet): written to a hidden
  temporary file beside it and renamed onto it when complete, so a failed run leaves the old
  file, or nothing. A symlink to a regular file (or a dangling one) keeps the link: the file it
  points to is the one written and replaced.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Iterator

from vidseg.engine.errors import VideoIOError

__all__ = [
    "STDOUT",
    "TextOutput",
    "final_path",
    "is_stdout",
    "lines_to_stderr",
    "replaces_a_file",
    "write_text",
    "writes_through",
]

logger = logging.getLogger(__name__)

STDOUT: Final = "-"
_DESCRIPTOR = re.compile(
    r"/dev/(stdout|stderr|fd/\d+)|/proc/(self|thread-self|\d+)(/task/\d+)?/fd/\d+"
)
_MAX_LINKS: Final = 40  # as the kernel's ELOOP limit


def is_stdout(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``-``: standard output."""
    return os.fspath(path) == STDOUT


def _is_descriptor_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``, or a symlink on its way, names an open descriptor (``/dev/stdout``,
    ``/proc/self/fd/1``): what it points at is whatever the descriptor is, a terminal, a pipe or
    a file the shell opened, and is never replaced."""
    current = os.path.abspath(path)
    for _ in range(_MAX_LINKS):
        if _DESCRIPTOR.fullmatch(current):
            return True
        if not os.path.islink(current):
            return False
        try:
            target = os.readlink(current)
        except OSError:
            return False
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
    return False


def writes_through(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is written in place, with no temporary file and no rename (see module):
    ``-``, a descriptor path, or an existing FIFO, device or socket."""
    if is_stdout(path) or _is_descriptor_path(path):
        return True
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a link to /dev/null is /dev/null
    except OSError:  # nothing there yet (or a dangling link): a new regular file
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def final_path(path: str | os.PathLike[str]) -> Path:
    """The file an atomic write lands on, absolute: for a symlink, the file it points to
    (resolved, so the link itself stays); otherwise ``path`` (``.`` and ``..`` collapsed)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else Path(os.path.abspath(path))


def replaces_a_file(path: str | os.PathLike[str]) -> bool:
    """Whether writing ``path`` would replace an existing regular file (what ``--overwrite``
    guards); written-through paths never do."""
    return not writes_through(path) and os.path.isfile(path)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


class TextOutput:
    """A text output under the module's rule; a context manager yielding the open text file.

    ``-`` yields ``stdout`` (default ``sys.stdout``; flushed, never closed); a written-through
    path is opened for appending (a FIFO, a device, or the file behind ``/dev/stdout`` keeps what
    it had); anything else is written to ``.NAME.partial`` beside :func:`final_path` and renamed
    onto it when the block exits cleanly or by ``KeyboardInterrupt`` (the lines written so far are
    kept), deleted when it raises anything else.

    Raises:
        VideoIOError: the file cannot be opened, written or renamed (``cannot write PATH: why``).
    """

    def __init__(self, path: str | os.PathLike[str], *, stdout: IO[str] | None = None) -> None:
        self.path: Path = Path(path)
        self._stdout = stdout  # what "-" writes to (None: sys.stdout when entered)
        self._through = writes_through(path)
        target = final_path(path)
        self._temp: Path | None = (
            None if self._through else target.with_name(f".{target.name}.partial")
        )
        self._target = target
        self._file: IO[str] | None = None

    @property
    def through(self) -> bool:
        """Whether the output is written in place (see :func:`writes_through`)."""
        return self._through

    def _error(self, error: OSError) -> VideoIOError:
        return VideoIOError(f"cannot write {self.path}: {_reason(error)}")

    def __enter__(self) -> IO[str]:
        if self._file is not None:
            raise RuntimeError("TextOutput is already open")
        if is_stdout(self.path):
            self._file = self._stdout or sys.stdout
            return self._file
        try:
            if self._temp is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            else:
                self._file = open(self._temp, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as error:
            raise self._error(error) from error
        return self._file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        keep = exc_type is None or issubclass(exc_type, KeyboardInterrupt)
        try:
            if is_stdout(self.path):
                file.flush()
                return
            file.close()
            if self._temp is not None:
                if keep:
                    os.replace(self._temp, self._target)
                else:
                    self._temp.unlink(missing_ok=True)
        except OSError as error:
            if self._temp is not None:
                self._temp.unlink(missing_ok=True)
            if exc_type is None:
                raise self._error(error) from error
            logger.debug("closing %s after %s failed: %s", self.path, exc_type.__name__, error)


def write_text(path: str | os.PathLike[str], text: str, *, stdout: IO[str] | None = None) -> None:
    """Write ``text`` to ``path`` under the module's rule (``-``: ``stdout``, default
    ``sys.stdout``).

    Raises:
        VideoIOError: it cannot be written.
    """
    with TextOutput(path, stdout=stdout) as file:
        try:
            file.write(text)
        except OSError as error:
            raise VideoIOError(f"cannot write {path}: {_reason(error)}") from error


@contextmanager
def lines_to_stderr(report: str | os.PathLike[str] | None) -> Iterator[IO[str]]:
    """For a CLI whose ``--json`` may be ``-``: yields the standard output to write the report
    to; while inside, when ``report`` is ``-``, ``print`` goes to standard error, so standard
    output carries the report alone."""
    stdout = sys.stdout
    if report is not None and is_stdout(report):
        with redirect_stdout(sys.stderr):
            yield stdout
    else:
        yield stdout
