"""The ``--help`` layout every vidseg command shares, and what docs/cli.md is generated from;
usage errors in one line (``CliParser``).

Defaults are shown where they say something (not for unset options, switches, or help that
names its own default), and descriptions taken from docstrings lose their reST markup.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


def shown_default(action: argparse.Action) -> str | None:
    """The default ``action`` has as a user would type it, or None where there is none worth
    showing: unset (None), a switch, suppressed, or a help text that states its own default."""
    default = action.default
    if default is None or default is argparse.SUPPRESS or isinstance(default, bool):
        return None
    if action.nargs == 0 or "default" in (action.help or ""):
        return None
    if isinstance(default, (list, tuple)) and action.nargs not in (None, "?"):
        return " ".join(_typed(v) for v in default) if default else None
    return _typed(default)


def _typed(value: object) -> str:
    """One value as typed on the command line: a (width, height) pair as WxH."""
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


def plain(text: str) -> str:
    """``text`` without reST literal markup (double backquotes)."""
    return text.replace("``", "")


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` with each option's meaningful default appended as "(default: X)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = shown_default(action)
        if default is None or help_text is argparse.SUPPRESS:
            return help_text
        return f"{help_text} (default: {default.replace('%', '%%')})"

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))


class CliParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line on stderr,
    ``PROG: error: MESSAGE``, exit 2 (not after the usage block: ``--help`` shows that)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")
