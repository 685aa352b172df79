"""The README's code blocks work as written and stay in step with CI and the CLI."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from vidseg.engine import default_bundle_path
from vidseg.engine.cli import build_parser
from vidseg.engine.errors import (
    BackendError,
    BundleError,
    ParityError,
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
    loop, whole = code_blocks("python")
    # from an unrelated directory: the example must find the bundled model by itself
    proc = subprocess.run(
        [sys.executable, "-c", loop], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("(540, 960) ") and line.endswith(" ms") for line in lines), lines
    # the whole-video call, where the README's commands run: beside samples/
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "dashcam.mp4").symlink_to(REPO / "samples" / "dashcam.mp4")
    proc = subprocess.run(
        [sys.executable, "-c", whole], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("30 ") and proc.stdout.strip().endswith("fps end to end")
    assert len((tmp_path / "frames.jsonl").read_text().splitlines()) == 30
    assert (tmp_path / "seg.mp4").stat().st_size > 0


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


def _clidoc():
    """tools/clidoc.py (not packaged: a dev tool of the checkout), imported by path."""
    spec = importlib.util.spec_from_file_location("clidoc", REPO / "tools" / "clidoc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLIDOC = _clidoc()
CLIS = CLIDOC.COMMANDS  # console script -> the module whose build_parser() and main() it runs


def option_strings(prog: str) -> set[str]:
    parser = importlib.import_module(CLIS[prog]).build_parser()
    return {o for a in parser._actions for o in a.option_strings} - {"-h", "--help"}


def test_every_cli_is_in_the_table() -> None:
    """Every console script is in CLIS, and each runs the main() of the module whose parser
    CLIS names (directly, or through a torch-free entry point that imports it)."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(CLIS)
    for prog, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
        source = Path(importlib.import_module(module).__file__).read_text()
        assert module == CLIS[prog] or f"from {CLIS[prog]} import main" in source, target


def test_cli_reference_is_up_to_date() -> None:
    """docs/cli.md is what tools/clidoc.py prints from the parsers today."""
    want = CLIDOC.render()
    assert (REPO / "docs" / "cli.md").read_text() == want, (
        "docs/cli.md is out of date: python tools/clidoc.py > docs/cli.md"
    )


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_cli_reference_lists_every_flag(prog: str) -> None:
    """docs/cli.md has a row for each option of each parser, under that command's heading."""
    text = (REPO / "docs" / "cli.md").read_text()
    section = text.split(f"\n## {prog}\n")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    listed = {
        o for row in rows for o in re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*", row.split("|")[1])
    }
    assert option_strings(prog) <= listed, sorted(option_strings(prog) - listed)


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_help_reads_on_its_own(prog: str) -> None:
    """--help shows a default only where there is one (no "(default: None)" or "False"), a
    (width, height) default as WxH, and no reST markup from the docstring it comes from."""
    text = " ".join(CLIDOC.parser_of(prog).format_help().split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "``" not in text and "(default: (" not in text
    assert text.startswith(f"usage: {prog} ")


def test_documented_exit_codes() -> None:
    """docs/cli.md's exit codes are the ones the typed errors map to."""
    text = " ".join((REPO / "docs" / "cli.md").read_text().split())
    documented = {
        "| 3 | bad bundle |": BundleError("x"),
        "| 4 | backend |": BackendError("x"),
        "| 5 | video I/O |": VideoIOError("x"),
        "| 6 | truncated input": TruncatedVideoError("x", 0),
        "| 7 | export parity |": ParityError("x"),
        "| 8 | live source lost": SourceLostError("x", 0),
    }
    for phrase, error in documented.items():
        assert phrase in text, phrase
        assert exit_code_for(error) == int(phrase.split()[1]), phrase
    assert "| 130 | Ctrl-C |" in text and "| 143 | SIGTERM" in text
