"""The docs say what the code does: every command line in README.md and docs/ uses flags its
CLI has, the commands of their shell blocks run as written, no doc names a path outside the
repository, and what they say about the shipped default's input size and label stride is what
its manifest declares."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_readme import CLIS, REPO, option_strings
from vidseg.engine.bundle import default_bundle_path, load_bundle

DOCS = sorted(
    [
        REPO / "README.md",
        REPO / "benchmarks" / "README.md",
        REPO / "samples" / "README.md",
        *(REPO / "docs").glob("*.md"),
    ]
)
COMMAND = re.compile(r"(?<![\w./-])(" + "|".join(map(re.escape, CLIS)) + r")(?![\w-])")


def code_spans(text: str) -> list[str]:
    """The lines of fenced blocks, and every inline code span, of a Markdown text."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    outside = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return [line for block in fenced for line in block.splitlines()] + re.findall(
        r"`([^`\n]+)`", outside
    )


def commands(text: str) -> list[tuple[str, str]]:
    """(program, its arguments) of every vidseg command written in code in ``text``; a span
    holding several commands is cut at each program name."""
    found = []
    for span in code_spans(text):
        hits = list(COMMAND.finditer(span))
        for hit, after in zip(hits, [*hits[1:], None]):
            found.append((hit.group(1), span[hit.end() : after.start() if after else None]))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_documented_commands_use_real_flags(doc: Path) -> None:
    wrong = []
    for prog, args in commands(doc.read_text()):
        args = args.split(" -- ")[0]  # what follows `--` belongs to the inner command
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", args))
        wrong += [f"{prog} {f}" for f in sorted(flags - option_strings(prog))]
    assert not wrong, f"{doc.name}: flags the CLIs lack: {wrong}"


def test_the_check_sees_commands() -> None:
    """The scanner finds commands in blocks and spans, and would catch a made-up flag."""
    text = "run `vidseg-run a.mp4 --out b.mp4` then\n```\nvidseg-eval --frames F --bogus\n```\n"
    found = commands(text)
    assert ("vidseg-run", " a.mp4 --out b.mp4") in found and len(found) == 2
    assert "--bogus" not in option_strings("vidseg-eval")


def test_default_input_size_and_stride_as_documented() -> None:
    """Lines about the shipped default (its section of the README, or a line naming "the
    default's", "shipped default" or "default bundle") state its manifest's size and stride."""
    manifest = load_bundle(default_bundle_path()).manifest
    size = f"{manifest.input.height}×{manifest.input.width}"
    strides = {o.stride for o in manifest.outputs if o.role == "labels"}
    readme = README_DEFAULT_SECTION.search((REPO / "README.md").read_text()).group(0)
    lines = readme.splitlines() + [
        line
        for doc in DOCS
        for line in doc.read_text().splitlines()
        if re.search(r"default's|shipped default|default bundle", line)
    ]
    sizes = [
        s for line in lines for s in re.findall(r"(\d+×\d+) (?:input|split)|input (\d+×\d+)", line)
    ]
    said = [int(s) for line in lines for s in re.findall(r"labels at stride (\d+)", line)]
    assert sizes and all(size in pair for pair in sizes), sizes
    assert said and set(said) == strides, said


README_DEFAULT_SECTION = re.compile(r"^## The default model\n.*?(?=^## )", re.S | re.M)


USER_DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
SHELL_TAGS = ("bash", "sh", "shell", "console")  # the blocks a reader (and readme-check) runs
FENCED = re.compile(r"^```([^\n]*)\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)
OUTSIDE = re.compile(r"\.\./shared|/work/|(?<![\w.])\.\./(?!\w+\.md)")


def shell_commands(text: str) -> list[str]:
    """The vidseg commands of a Markdown text's shell blocks, in order: each line (a leading
    ``$ `` dropped) cut at ``&&``, the parts that start with a vidseg program (an install or
    ``python -m pytest`` beside them is not run here)."""
    found = []
    for tag, body in FENCED.findall(text):
        if tag.strip() not in SHELL_TAGS:
            continue
        for line in body.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("#"):
                continue
            found += [p.strip() for p in line.split("&&") if COMMAND.match(p.strip())]
    return found


def test_the_runner_sees_shell_commands() -> None:
    text = (
        "```bash\npip install . && vidseg-run a.mp4 --out b.mp4\n# vidseg-run skipped\n```\n"
        "```text\nvidseg-eval --frames F --labels L\n```\n```sh\n$ vidseg-bench --frames 2\n```\n"
    )
    assert shell_commands(text) == ["vidseg-run a.mp4 --out b.mp4", "vidseg-bench --frames 2"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_doc_names_a_path_outside_the_repo(doc: Path) -> None:
    """A reader has the repository, not the machines it was developed on."""
    bad = [line for line in doc.read_text().splitlines() if OUTSIDE.search(line)]
    assert not bad, f"{doc.name}: {bad[:3]}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_block_says_whether_it_runs(doc: Path) -> None:
    """A fenced block holding a vidseg command is a shell block (run as written, below) or a
    ``text`` block (it needs outside data, a camera, a server or a GPU): never untagged."""
    untagged = [
        body.splitlines()[0]
        for tag, body in FENCED.findall(doc.read_text())
        if COMMAND.search(body) and tag.strip() not in (*SHELL_TAGS, "text")
    ]
    assert not untagged, f"{doc.name}: untagged blocks with commands: {untagged}"


@pytest.mark.parametrize(
    "doc",
    [d for d in USER_DOCS if shell_commands(d.read_text())],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_shell_block_commands_run_as_written(doc: Path, tmp_path: Path) -> None:
    """Every vidseg command of the doc's shell blocks runs as written, in order, from a folder
    that has the repository's samples/ (as a clone has), and exits 0."""
    (tmp_path / "samples").symlink_to(REPO / "samples")
    bin_dir = Path(sys.executable).parent
    for command in shell_commands(doc.read_text()):
        argv = shlex.split(command)
        argv[0] = str(bin_dir / argv[0])
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{command}: exit {proc.returncode}: {proc.stderr[-2000:]}"
