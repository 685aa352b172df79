"""Print docs/cli.md, the reference of every vidseg command, from the commands' own parsers:

    python tools/clidoc.py > docs/cli.md

Every command, every flag, its default and its help, in the order ``--help`` gives them, then
the exit codes. ``tests/test_readme.py`` fails when docs/cli.md differs from what this prints.
Needs the dev install (``vidseg-train`` and ``vidseg-export`` build their parsers with torch).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vidseg.engine.clihelp import HelpFormatter, plain, shown_default
from vidseg.engine.errors import (
    BackendError,
    BundleError,
    ParityError,
    SourceLostError,
    TruncatedVideoError,
    VideoIOError,
    exit_code_for,
)

COMMANDS = {  # console script -> the module whose build_parser() builds its parser
    "vidseg-run": "vidseg.engine.cli",
    "vidseg-eval": "vidseg.benchmarks.evaluate",
    "vidseg-bench": "vidseg.benchmarks.bench",
    "vidseg-batch": "vidseg.engine.batchcli",
    "vidseg-export": "vidseg.export.cli",
    "vidseg-train": "vidseg.models.train",
    "vidseg-models": "vidseg.models.cli",
}

USAGE_WIDTH = 80
EXIT_INTRO = (
    "The same for every command. Errors are one line on stderr; `--debug` shows tracebacks."
)
EXIT_CODES = [  # (code, meaning); the typed errors' codes are checked against engine.errors
    (0, "success"),
    (1, "any other error (a bad frame or label folder for `vidseg-eval`, a missing extra)"),
    (
        2,
        "usage: a bad or conflicting flag, a flag the bundle cannot serve (`--key-interval` on "
        "a non-keyframe bundle, `--scores` on one without confidence), an existing output "
        "without `--overwrite`, `--show` without a GUI",
    ),
    (exit_code_for(BundleError("")), "bad bundle"),
    (exit_code_for(BackendError("")), "backend"),
    (exit_code_for(VideoIOError("")), "video I/O"),
    (
        exit_code_for(TruncatedVideoError("", 0)),
        "truncated input: the decoded frames are still written",
    ),
    (exit_code_for(ParityError("")), "export parity"),
    (
        exit_code_for(SourceLostError("", 0)),
        "live source lost: nothing within `--timeout`, or "
        "dropped with no reconnect left; the frames received are written",
    ),
    (130, "Ctrl-C"),
    (143, "SIGTERM: the frames done are written to a valid, shorter file, as for Ctrl-C"),
]


def parser_of(prog: str) -> argparse.ArgumentParser:
    """The parser ``prog`` runs, built by its module's ``build_parser()`` (no side effects)."""
    module = importlib.import_module(COMMANDS[prog])
    return module.build_parser()


def cell(text: str) -> str:
    """``text`` as one Markdown table cell: one line, pipes escaped."""
    return " ".join(plain(text).split()).replace("|", "\\|")


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage lines of ``--help``, wrapped at 80 columns whatever the terminal."""
    formatter = HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = HelpFormatter(parser.prog)
    return formatter._format_action_invocation(action)  # "-q, --quiet", "--out OUT", "INPUT"


def command_section(prog: str) -> list[str]:
    parser = parser_of(prog)
    lines = [f"## {prog}", "", cell(parser.description or ""), "", "```text"]
    lines += [usage(parser), "```"]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        actions = [a for a in actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = {"positional arguments": "arguments", "options": "flags"}.get(
            group.title, group.title
        )
        lines += ["", f"**{title}**", "", "| flag | default | what it does |", "|---|---|---|"]
        for action in actions:
            default = shown_default(action)
            lines.append(
                f"| `{cell(invocation(parser, action))}` | "
                f"{f'`{cell(default)}`' if default else ''} | {cell(action.help or '')} |"
            )
    return [*lines, ""]


def render() -> str:
    lines = [
        "# Command reference",
        "",
        "Every vidseg command with every flag, its default and what it does: the text each",
        "command's `--help` prints. Generated from the parsers by `python tools/clidoc.py >",
        "docs/cli.md` (a test fails when this page is out of date); do not edit by hand.",
        "",
        " · ".join(f"[{prog}](#{prog})" for prog in COMMANDS),
        "",
    ]
    for prog in COMMANDS:
        lines += command_section(prog)
    lines += [
        "## Exit codes",
        "",
        "The same for every command. Errors are one line on stderr; `--debug` shows tracebacks.",
        "",
        "| code | meaning |",
        "|---|---|",
    ]
    lines += [f"| {code} | {cell(meaning)} |" for code, meaning in EXIT_CODES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
