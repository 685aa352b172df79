"""The README's code blocks work as written and stay in step with CI and the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vidseg.engine import default_bundle_path
from vidseg.engine.cli import build_parser
from vidseg.engine.errors import (
    BackendError,
    BundleError,
    SourceLostError,
    TruncatedVideoError,
    VideoIOError,
    exit_code_for,
)

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI = REPO / ".ci" / "run"


def code_blocks(language: str) -> list[str]:
    """Bodies of the README's fenced blocks tagged ``language``, in order."""
    text = README.read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def only_line(block: str) -> str:
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 1, block
    return lines[0]


def test_python_example_runs(tmp_path: Path) -> None:
    if not (default_bundle_path() / "manifest.json").is_file():
        pytest.skip(f"the default bundle {default_bundle_path()} does not exist yet")
    (block,) = code_blocks("python")
    # from an unrelated directory: the example must find the bundled model by itself
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("(540, 960) ") and line.endswith(" ms") for line in lines), lines


def test_quick_start_command() -> None:
    install_and_run = only_line(code_blocks("bash")[0])
    assert install_and_run.startswith("pip install . ")
    run = install_and_run.split("&&")[1].split()
    assert run[:2] == ["vidseg-run", "samples/dashcam.mp4"]
    assert (REPO / run[1]).is_file()
    build_parser().parse_args(run[1:])  # the flags it uses exist


def test_test_command_is_what_ci_runs() -> None:
    test_command = only_line(code_blocks("bash")[1])
    assert "python -m pytest" in test_command
    assert test_command in CI.read_text().splitlines()


def test_documented_flags_exist() -> None:
    text = README.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `vidseg-run INPUT"))
    flags = set(re.findall(r"--[a-z][a-z-]*", row))
    assert {"--out", "--model", "--mask", "--max-frames", "--alpha", "--json"} <= flags
    assert {"--timeout", "--reconnect", "--live", "--rtsp-transport", "--overwrite"} <= flags
    usage = set(re.findall(r"--[a-z][a-z-]*", build_parser().format_help()))
    assert flags <= usage, flags - usage


def test_documented_exit_codes() -> None:
    text = " ".join(README.read_text().split())
    documented = {"3 bad bundle": BundleError("x"), "4 backend": BackendError("x"),
                  "5 video I/O": VideoIOError("x"),
                  "6 truncated input": TruncatedVideoError("x", 0),
                  "8 live source lost": SourceLostError("x", 0)}  # fmt: skip
    for phrase, error in documented.items():
        assert phrase in text, phrase
        assert exit_code_for(error) == int(phrase.split()[0]), phrase
    assert "130 Ctrl-C" in text and "143 SIGTERM" in text
