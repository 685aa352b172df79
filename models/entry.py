"""Console entry points of the commands that need PyTorch (``vidseg-train``, ``vidseg-models``),
importable without it: on a runtime install they say in one line which extra to install
instead of a traceback."""

from __future__ import annotations

from vidseg.engine.errors import missing_extra


def train(argv: list[str] | None = None) -> int:
    """``vidseg-train``: :func:`vidseg.models.train.main`; needs ``vidseg[train]``."""
    try:
        from vidseg.models.train import main
    except ImportError as exc:
        return missing_extra("vidseg-train", "train", exc)
    return main(argv)


def models(argv: list[str] | None = None) -> int:
    """``vidseg-models``: :func:`vidseg.models.cli.main`; needs ``vidseg[train]``."""
    try:
        from vidseg.models.cli import main
    except ImportError as exc:
        return missing_extra("vidseg-models", "train", exc)
    return main(argv)
