"""vidseg.engine: the torch-free runtime (bundles, backends, state, video I/O, CLI)."""

from vidseg.engine.bundle import Bundle, Manifest, default_bundle_path, load_bundle
from vidseg.engine.errors import (
    BackendError,
    BundleError,
    FrameError,
    StateSpecError,
    TruncatedVideoError,
    VideoIOError,
    VidsegError,
)
from vidseg.engine.segmenter import PreparedFrame, Result, Segmenter
from vidseg.engine.timing import FrameTimings

__all__ = [
    "BackendError",
    "Bundle",
    "BundleError",
    "FrameError",
    "FrameTimings",
    "Manifest",
    "PreparedFrame",
    "Result",
    "Segmenter",
    "StateSpecError",
    "TruncatedVideoError",
    "VideoIOError",
    "VidsegError",
    "default_bundle_path",
    "load_bundle",
]
