"""Key-frame bundles: ``key.onnx`` and ``current.onnx`` sharing a cache, parity-checked.

The graph contract (see docs/bundle.md):

* ``key``: ``frame`` uint8 (N, H, W, 3) -> ``labels`` uint8 (N, H/s, W/s) (s: the labels'
  stride) and one ``<c>_out``
  float32 (N, C, H/s, W/s) per cached tensor;
* ``current``: ``frame`` plus one ``<c>_in`` per cached tensor -> ``labels`` only.

The engine runs ``key`` on key frames (always the first frame of a stream) and stores its
``<c>_out`` tensors; every other frame runs ``current`` fed with them. Normalisation, upsampling
of the logits and the arg-max run inside both graphs; batch is the only dynamic axis.

Nothing here is particular to the family: the model's ``export_graphs()`` declares both graphs,
``export.onnx`` writes them and ``export.parity`` checks them in streaming order for each key
interval asked for. These names are kept for callers that ask for a key-frame bundle by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from vidseg.engine.bundle import Manifest
from vidseg.export.onnx import (
    ClassInfo,
    RoleGraph,
    carried_names,
    export_model_graphs,
    model_manifest,
)
from vidseg.export.parity import (
    PARITY_INTERVALS,
    ParityReport,
    check_stream_parity,
    export_bundle,
)
from vidseg.models.registry import ModelCfg

GRAPHS = {"key": "key.onnx", "current": "current.onnx"}


def cache_names(cfg: ModelCfg) -> tuple[list[str], list[str]]:
    """Current-graph input and key-graph output names of the cached tensors, in model order."""
    return carried_names(cfg.cache)


class KeyGraph(RoleGraph):
    """``frame`` -> (labels, *cache[, scores][, logits]): the key path of a keyframe model."""

    role = "key"


class CurrentGraph(RoleGraph):
    """(``frame``, *cache) -> (labels[, scores][, logits]): the current-frame path."""

    role = "current"


def export_keyframe_graphs(model: nn.Module, directory: Path, with_logits: bool = False,
                           with_scores: bool = False, label_stride: int = 1) -> dict[str, Path]:  # fmt: skip
    """Write ``key.onnx`` and ``current.onnx`` of ``model`` into ``directory``; returns the paths
    by role (``export_model_graphs``)."""
    return export_model_graphs(model, directory, with_logits, with_scores, label_stride)


def check_keyframe_parity(model: nn.Module, graphs: dict[str, Path], frames: Sequence[np.ndarray],
                          interval: int, resets: Sequence[int] = (),
                          label_stride: int = 1) -> ParityReport:  # fmt: skip
    """``check_stream_parity`` of the ``key``/``current`` graphs at key ``interval``.

    Raises:
        ValueError: ``interval`` is below 1.
    """
    return check_stream_parity(model, graphs, frames, resets, interval, label_stride)


def build_keyframe_manifest(model: nn.Module, classes: ClassInfo, train: dict[str, Any],
                            scores: bool = False, label_stride: int = 1) -> Manifest:  # fmt: skip
    """The manifest of a key/current bundle (``model_manifest``)."""
    return model_manifest(model, classes, train, scores, label_stride)


def export_keyframe_bundle(
    model: nn.Module,
    out: Path,
    classes: ClassInfo,
    train_info: dict[str, Any],
    frames: list[np.ndarray],
    intervals: Sequence[int] = PARITY_INTERVALS,
    scores: bool = False,
    label_stride: int = 1,
) -> str:
    """Export ``model`` as a keyframe bundle at ``out`` after parity passes for every interval
    (``export_bundle``). Returns one parity summary line per interval.

    Raises:
        ParityError: a check misses a tolerance (no bundle is written).
    """
    manifest = model_manifest(model, classes, train_info, scores, label_stride)
    return export_bundle(model, out, manifest, frames, intervals)
