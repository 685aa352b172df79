"""Console entry point of ``vidseg-export``, importable without PyTorch and onnx: on a runtime
install it says in one line which extra to install instead of a traceback."""

from __future__ import annotations

from vidseg.engine.errors import missing_extra


def main(argv: list[str] | None = None) -> int:
    """``vidseg-export``: :func:`vidseg.export.cli.main`; needs ``vidseg[export]``."""
    try:
        from vidseg.export.cli import main as export_main
    except ImportError as exc:
        return missing_extra("vidseg-export", "export", exc)
    return export_main(argv)
