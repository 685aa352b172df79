"""Inference backends behind one interface (see ``base.Backend``)."""

from vidseg.engine.backends import ort as _ort  # noqa: F401  registers "ort", "ort-trt"
from vidseg.engine.backends import tensorrt as _trt  # noqa: F401  registers "tensorrt"
from vidseg.engine.backends.base import (
    Backend,
    BackendOptions,
    TensorInfo,
    Transfers,
    backend_names,
    create_backend,
)

__all__ = [
    "Backend",
    "BackendOptions",
    "TensorInfo",
    "Transfers",
    "backend_names",
    "create_backend",
]
