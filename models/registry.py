"""One registry of model variants: ``create_model("<family>-<variant>")`` is the only way in.

Families register their variants explicitly through :func:`register_model` when their module is
imported; :func:`_load_families` imports this package's family modules on first use, so
importing ``vidseg.models`` has no side effects and an unknown name gets a clear error with
suggestions. A family is its own files: a module of variants decorated with ``register_model``
(and, for the engine, graphs whose roles the bundle schema knows); nothing here lists families.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from torch import nn

from vidseg.engine.errors import VidsegError

if TYPE_CHECKING:
    from vidseg.models.protocol import TemporalModule

_FAMILY_MODULES = (
    "vidseg.models.segnet",
    "vidseg.models.unet001",
    "vidseg.models.keyframe",
    "vidseg.models.netwarp",
)


@dataclass(frozen=True)
class StateCfg:
    """One recurrent state tensor: shape (N, channels, H / stride, W / stride), zeros at start."""

    name: str  # graph input is f"{name}_in", output f"{name}_out"
    channels: int
    stride: int


@dataclass(frozen=True)
class ModelCfg:
    """Everything export needs to write a bundle manifest without looking inside the model."""

    name: str  # registry name, e.g. "recurrent-lite0-gru"
    family: str  # a descriptive label, the name's first part (e.g. "recurrent")
    input_size: tuple[int, int] = (352, 480)  # (height, width), multiples of `stride`
    stride: int = 32  # total downsampling of the encoder
    num_classes: int = 11
    state: tuple[StateCfg, ...] = field(default_factory=tuple)
    cache: tuple[StateCfg, ...] = field(default_factory=tuple)  # keyframe: key -> current
    pretrained: str = ""  # description of the initial weights, "" when from scratch

    @property
    def temporal(self) -> bool:
        """Whether anything is carried from frame to frame (state or a key-frame cache)."""
        return bool(self.state or self.cache)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its name with ``_`` turned into ``-``.

    Raises:
        VidsegError: the name is not ``<family>-<variant>``.
    """
    name = fn.__name__.replace("_", "-")
    family, _, variant = name.partition("-")
    if not family or not variant:
        raise VidsegError(f"model name {name!r} must be <family>-<variant>, e.g. recurrent-lite0")
    _REGISTRY[name] = fn
    return fn


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """All registered names, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: object) -> TemporalModule:
    """Build the variant ``name`` (every family implements ``protocol.TemporalModel``).

    ``None``-valued kwargs are dropped so CLI defaults never override the variant's own defaults.

    Raises:
        VidsegError: ``name`` is not registered (the message lists the closest names).
    """
    _load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.4)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise VidsegError(f"unknown model {name!r}{hint}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**{k: v for k, v in kwargs.items() if v is not None})
