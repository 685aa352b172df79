"""How a checkpoint and a bundle were built: the command lines and the source commits.

``vidseg-train`` stores a ``{"command", "commit"}`` record per training run in its checkpoint
(``provenance``: the runs before it, through ``--init-from``, first); ``vidseg-export`` copies
that chain into the manifest's ``train.provenance`` beside a record of its own (docs/bundle.md),
so a shipped bundle says which commands at which commits rebuild it. Torch-free.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any, Sequence

UNKNOWN = "unknown"
DIRTY = "-dirty"  # appended to the commit when tracked .py files differ from it
GIT_TIMEOUT_S = 10


def command_line(prog: str, argv: Sequence[str]) -> str:
    """The command as a user types it: ``prog`` and ``argv`` (without the program), quoted
    for a POSIX shell, so the record can be pasted back."""
    return shlex.join([prog, *argv])


def source_commit(module: str | Path = __file__) -> str:
    """The git commit of the source tree ``module`` (a file of vidseg) runs from, with
    ``-dirty`` appended when tracked Python files differ from it; ``"unknown"`` when the file
    is not tracked by a git repository (an installed wheel) or git is missing."""
    folder = Path(module).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                ["git", "-C", str(folder), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
            )
        except (OSError, subprocess.SubprocessError):
            return None

    # tracked, not merely inside some repository (a virtualenv kept in a clone is not)
    tracked = git("ls-files", "--error-unmatch", Path(module).name)
    head = git("rev-parse", "HEAD")
    if tracked is None or tracked.returncode or head is None or head.returncode:
        return UNKNOWN
    status = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)*.py")
    dirty = status is not None and bool(status.stdout.strip())
    return head.stdout.strip() + (DIRTY if dirty else "")


def checked_chain(raw: Any) -> list[dict[str, str]]:
    """``raw`` (a checkpoint's ``provenance``) as a list of records; ``[]`` when absent
    (checkpoints written before vidseg-train recorded it).

    Raises:
        ValueError: ``raw`` is not a list of ``{"command": str, "commit": str}``.
    """
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(
        isinstance(r, dict)
        and set(r) == {"command", "commit"}
        and all(isinstance(v, str) for v in r.values())
        for r in raw
    ):
        raise ValueError("provenance must be a list of {command, commit} records")
    return [dict(r) for r in raw]
