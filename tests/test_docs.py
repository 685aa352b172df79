"""The docs say what the code does: every command line in README.md and docs/ uses flags its
CLI has, and what they say about the shipped default's input size and label stride is what its
manifest declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_readme import CLIS, REPO, option_strings
from vidseg.engine.bundle import default_bundle_path, load_bundle

DOCS = sorted([REPO / "README.md", REPO / "benchmarks" / "README.md", REPO / "samples" / "README.md",
               *(REPO / "docs").glob("*.md")])  # fmt: skip
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
        line for doc in DOCS for line in doc.read_text().splitlines()
        if re.search(r"default's|shipped default|default bundle", line)
    ]  # fmt: skip
    sizes = [
        s for line in lines for s in re.findall(r"(\d+×\d+) (?:input|split)|input (\d+×\d+)", line)
    ]
    said = [int(s) for line in lines for s in re.findall(r"labels at stride (\d+)", line)]
    assert sizes and all(size in pair for pair in sizes), sizes
    assert said and set(said) == strides, said


README_DEFAULT_SECTION = re.compile(r"^## The default model\n.*?(?=^## )", re.S | re.M)
