"""Engine-computed inputs (a manifest's ``aux_inputs``): the one registry of their providers.

A bundle's graph may read, besides the frame, inputs the engine computes from the frames itself
(optical flow, which tile view runs next, the view). The manifest names each by its *kind*; the
engine makes one provider of that kind per stream. Each kind lives in its own module here:

* ``dis_flow`` (:mod:`.dis_flow`): DIS optical flow of each frame to the previous one;
* ``tile_cycle`` (:mod:`.tile_cycle`): which view of the frame a tile-memory graph runs next;
* ``tile_view`` (:mod:`.tile_view`): that view, cut from the frame (it replaces the frame input).

This module imports no provider code (and no OpenCV): ``KINDS`` maps each kind to where its
provider class lives, imported the first time a bundle asks for that kind. So checking a
manifest's kinds costs nothing, and a bundle without aux inputs never loads a provider.

A provider class takes ``(shape, **args)`` (the manifest's ``shape``, batch axis excluded, and
``args``), raising ``TypeError``/``ValueError`` for ones it cannot take, and has:

* ``replaces_frame``: True when a graph that reads this input needs no frame input (it reads
  what the provider cut from the frame instead);
* ``reset()``: the stream restarted (a new stream, a cut, a reconnect);
* ``__call__(frame)``: the input for one frame ((H, W, 3) uint8 RGB at the model input size),
  a numpy array with the leading batch axis of 1;
* optionally ``mismatch``: after each call, the share of the frame its past fails to explain
  (``engine.refresh`` judges a stale memory by it), or None.

To add a kind: a module here with its provider class, and one line in ``KINDS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    import numpy as np

    from vidseg.engine.bundle import AuxSpec

__all__ = [
    "DIS_FLOW",
    "KINDS",
    "TILE_CYCLE",
    "TILE_VIEW",
    "AuxProvider",
    "make_provider",
    "provider_class",
    "replaces_frame",
]

DIS_FLOW = "dis_flow"  # the kinds a manifest's aux_inputs may name
TILE_CYCLE = "tile_cycle"
TILE_VIEW = "tile_view"

KINDS: Mapping[str, str] = MappingProxyType(
    {
        DIS_FLOW: "vidseg.engine.aux_inputs.dis_flow:DisFlowProvider",
        TILE_CYCLE: "vidseg.engine.aux_inputs.tile_cycle:TileCycleProvider",
        TILE_VIEW: "vidseg.engine.aux_inputs.tile_view:TileViewProvider",
    }
)
"""Every aux-input kind a manifest may name -> ``"module:Class"`` of its provider."""


class AuxProvider(Protocol):
    """One stream's provider of one aux input (the module docstring says what each part means)."""

    replaces_frame: ClassVar[bool]

    def reset(self) -> None: ...

    def __call__(self, frame: np.ndarray) -> np.ndarray: ...


def provider_class(kind: str) -> type[AuxProvider]:
    """The provider class of ``kind`` (its module imported on first use).

    Raises:
        KeyError: ``kind`` is not in ``KINDS``.
    """
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def replaces_frame(kind: str) -> bool:
    """Whether a graph reading an input of ``kind`` reads it instead of the frame."""
    return provider_class(kind).replaces_frame


def make_provider(spec: AuxSpec) -> AuxProvider:
    """A new provider of one stream for the aux input ``spec`` (its kind, shape and args).

    Raises:
        KeyError: an unknown kind.
        TypeError, ValueError: the provider does not take that shape or those args.
    """
    return provider_class(spec.provider)(spec.shape, **spec.args)
