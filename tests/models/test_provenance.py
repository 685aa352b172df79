"""models.provenance: the command and commit records vidseg-train and vidseg-export keep."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from vidseg.models import provenance
from vidseg.models.provenance import UNKNOWN, checked_chain, command_line, source_commit


def test_command_line_pastes_back() -> None:
    argv = ["--data", "my data/camvid", "--input-size", "320", "448"]
    line = command_line("vidseg-train", argv)
    assert line == "vidseg-train --data 'my data/camvid' --input-size 320 448"
    assert shlex.split(line) == ["vidseg-train", *argv]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_source_commit_of_a_tracked_tree(tmp_path: Path) -> None:
    """The HEAD commit of the file's repository; -dirty once a tracked .py file changes (not
    for other files); unknown for a file the repository does not track."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q")
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    module.write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("a\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    assert source_commit(module) == head and len(head) == 40
    (tmp_path / "notes.md").write_text("b\n")  # not source
    (tmp_path / "new.py").write_text("")  # untracked
    assert source_commit(module) == head
    module.write_text("x = 2\n")
    assert source_commit(module) == head + "-dirty"
    (tmp_path / "pkg" / "loose.py").write_text("")
    assert source_commit(tmp_path / "pkg" / "loose.py") == UNKNOWN


def test_source_commit_outside_git(tmp_path: Path) -> None:
    copy = tmp_path / "provenance.py"
    shutil.copy(provenance.__file__, copy)
    assert source_commit(copy) == UNKNOWN


def test_checked_chain() -> None:
    record = {"command": "vidseg-train --model m", "commit": "abc"}
    assert checked_chain(None) == []
    assert checked_chain([record]) == [record]
    for bad in ("x", [{"command": "c"}], [{"command": 1, "commit": "a"}], [record, 3]):
        with pytest.raises(ValueError, match="provenance"):
            checked_chain(bad)
