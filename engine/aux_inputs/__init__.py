"""Engine-computed inputs (a manifest's ``aux_inputs``): the one registry of their providers.

A bundle's graph may read, besides the frame, inputs the engine computes from the frames itself
(optical flow, which tile view runs next, the view). The manifest names each by its *kind*; the
engine makes one provider of that kind per stream. The built-in kinds live in their own modules
here:

* ``dis_flow`` (:mod:`.dis_flow`): DIS optical flow of each frame to the previous one;
* ``tile_cycle`` (:mod:`.tile_cycle`): which view of the frame a tile-memory graph runs next;
* ``tile_view`` (:mod:`.tile_view`): that view, cut from the frame (it replaces the frame input).

This module imports no provider code (and no OpenCV): ``KINDS`` maps each kind to its provider
class or to ``"module:Class"``, imported the first time a provider of that kind is made. So
checking a manifest's kinds costs nothing, and a bundle without aux inputs never loads a
provider.

A provider class takes ``(shape, **args)`` (the manifest's ``shape``, batch axis excluded, and
``args``), raising ``TypeError``/``ValueError`` for ones it cannot take, and has:

* ``replaces_frame``: True when a graph that reads this input needs no frame input (it reads
  what the provider cut from the frame instead);
* ``reset()``: the stream restarted (a new stream, a cut, a reconnect);
* ``__call__(frame)``: the input for one frame ((H, W, 3) uint8 RGB at the model input size),
  a numpy array with the leading batch axis of 1;
* optionally ``mismatch``: after each call, the share of the frame its past fails to explain
  (``engine.refresh`` judges a stale memory by it), or None.

A new kind needs no edit here: ``register_aux_input(kind, ProviderClass)`` from its own module,
or, for an installed package, an entry point in the ``vidseg.aux_inputs`` group (name: the
kind, value: ``"module:Class"``), read the first time a manifest names a kind not registered.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    import numpy as np

    from vidseg.engine.bundle import AuxSpec

__all__ = [
    "DIS_FLOW",
    "ENTRY_POINTS",
    "KINDS",
    "TILE_CYCLE",
    "TILE_VIEW",
    "AuxProvider",
    "is_kind",
    "make_provider",
    "provider_class",
    "register_aux_input",
    "replaces_frame",
]

DIS_FLOW = "dis_flow"  # the built-in kinds
TILE_CYCLE = "tile_cycle"
TILE_VIEW = "tile_view"
ENTRY_POINTS = "vidseg.aux_inputs"  # the entry-point group of kinds from installed packages


class AuxProvider(Protocol):
    """One stream's provider of one aux input (the module docstring says what each part means)."""

    replaces_frame: ClassVar[bool]

    def reset(self) -> None: ...

    def __call__(self, frame: np.ndarray) -> np.ndarray: ...


_REGISTRY: dict[str, str | type[AuxProvider]] = {
    DIS_FLOW: "vidseg.engine.aux_inputs.dis_flow:DisFlowProvider",
    TILE_CYCLE: "vidseg.engine.aux_inputs.tile_cycle:TileCycleProvider",
    TILE_VIEW: "vidseg.engine.aux_inputs.tile_view:TileViewProvider",
}
KINDS: Mapping[str, str | type[AuxProvider]] = MappingProxyType(_REGISTRY)
"""Every registered kind -> its provider class, or ``"module:Class"`` not yet imported."""


def register_aux_input(kind: str, provider: str | type[AuxProvider]) -> None:
    """Make ``kind`` a kind a manifest's ``aux_inputs`` may name, made by ``provider``: a
    provider class (see the module docstring) or ``"module:Class"``, imported on first use.
    Registering a kind again with the same provider does nothing.

    Raises:
        ValueError: ``kind`` is empty, or already registered with another provider.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"an aux-input kind is a non-empty string, got {kind!r}")
    if _REGISTRY.get(kind, provider) != provider:
        raise ValueError(f"aux-input kind {kind!r} is already registered ({_REGISTRY[kind]})")
    _REGISTRY[kind] = provider


def is_kind(kind: str) -> bool:
    """Whether a provider of ``kind`` can be made: registered, or named by an entry point of an
    installed package (registered then, its module not imported)."""
    if kind not in _REGISTRY:
        for point in entry_points(group=ENTRY_POINTS):
            if point.name not in _REGISTRY:
                _REGISTRY[point.name] = point.value
    return kind in _REGISTRY


def provider_class(kind: str) -> type[AuxProvider]:
    """The provider class of ``kind`` (its module imported on first use).

    Raises:
        KeyError: ``kind`` is not registered.
    """
    if not is_kind(kind):
        raise KeyError(kind)
    provider = _REGISTRY[kind]
    if isinstance(provider, str):
        module, name = provider.split(":")
        return getattr(importlib.import_module(module), name)
    return provider


def replaces_frame(kind: str) -> bool:
    """Whether a graph reading an input of ``kind`` reads it instead of the frame."""
    return bool(provider_class(kind).replaces_frame)


def make_provider(spec: AuxSpec) -> AuxProvider:
    """A new provider of one stream for the aux input ``spec`` (its kind, shape and args).

    Raises:
        KeyError: an unknown kind.
        TypeError, ValueError: the provider does not take that shape or those args.
    """
    return provider_class(spec.provider)(spec.shape, **spec.args)
