"""``Show``'s window: an OpenCV highgui window of the overlay, and why one cannot open here."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np


def gui_problem() -> str | None:
    """Why a preview window cannot open here (None when it can): OpenCV built without a GUI
    (``opencv-python-headless``, the default install) or no display."""
    gui = next(
        (
            line.split(":", 1)[1].strip()
            for line in cv2.getBuildInformation().splitlines()
            if line.strip().startswith("GUI:")
        ),
        "NONE",
    )
    if gui.upper() == "NONE":
        return (
            "--show needs OpenCV with GUI support: pip uninstall opencv-python-headless && "
            "pip install opencv-python"
        )
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "--show needs a display (DISPLAY or WAYLAND_DISPLAY is not set)"
    return None


class Preview:
    """An OpenCV highgui window showing each rendered (H, W, 3) RGB image; closing it (q, Esc)
    stops the preview, not the run."""

    def __init__(self, title: str = "vidseg") -> None:
        self.title = title
        self.open = True

    def __enter__(self) -> "Preview":
        return self

    def show(self, image: np.ndarray) -> None:
        if not self.open:
            return
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.open = False
            cv2.destroyWindow(self.title)

    def __exit__(self, *exc: object) -> None:
        if self.open:
            cv2.destroyAllWindows()
