"""The commands that need PyTorch say which extra to install, in one line, where it is missing:
a runtime install (``pip install vidseg``) has no torch. Simulated here by a ``sitecustomize``
that blocks the import (``sys.modules[name] = None``) before the console script starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run_without(module: str, command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    }
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )


@pytest.mark.parametrize(
    ("prog", "args", "blocked", "extra"),
    [
        (
            "vidseg-train",
            ["--model", "perframe-lite0", "--data", "D", "--out", "O"],
            "torch",
            "train",
        ),
        ("vidseg-models", [], "torch", "train"),
        ("vidseg-export", ["last.pt", "--out", "b.vidseg"], "torch", "export"),
        ("vidseg-export", ["--wrap", "m.onnx", "--out", "b.vidseg"], "onnx", "export"),
    ],
)
def test_a_missing_extra_is_one_line(prog, args, blocked, extra, tmp_path: Path) -> None:
    script = BIN / prog
    if not script.is_file():
        pytest.skip(f"{prog} is not installed as a console script in {BIN}")
    proc = run_without(blocked, [str(script), *args], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"{prog}: error: needs {blocked}, which the runtime install leaves out: "
        f"pip install 'vidseg[{extra}]'"
    ]


def test_the_runtime_commands_need_no_torch(tmp_path: Path, sample_clip: Path) -> None:
    """vidseg-run, -eval, -bench and -batch start without torch (their --help), and vidseg-run
    segments frames."""
    for prog in ("vidseg-eval", "vidseg-bench", "vidseg-batch"):
        proc = run_without("torch", [str(BIN / prog), "--help"], tmp_path)
        assert proc.returncode == 0 and proc.stdout.startswith("usage:"), (prog, proc.stderr)
    out = tmp_path / "s.jsonl"
    proc = run_without(
        "torch",
        [str(BIN / "vidseg-run"), str(sample_clip), "--jsonl", str(out), "--max-frames", "2", "-q"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 2


def test_a_broken_vidseg_import_is_not_blamed_on_an_extra() -> None:
    """An import error inside vidseg itself is a bug: it is raised, not turned into advice."""
    from vidseg.engine.errors import missing_extra

    with pytest.raises(ImportError):
        missing_extra("vidseg-train", "train", ModuleNotFoundError("x", name="vidseg.models.x"))
