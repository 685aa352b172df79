"""NetWarp bundles: one ``step`` graph with the engine-computed optical flow as an aux input.

Graph contract (see ``vidseg.models.netwarp`` for the model):

    inputs : frame     uint8   [batch, H, W, 3]          RGB at the model input size
             flow      float32 [batch, 2, H/4, W/4]      aux input ``dis_flow``: DIS flow from
                                                          this frame to the previous one, in
                                                          pixels of its grid; zeros on a
                                                          stream's first frame
             image4_in float32 [batch, 3, H/4, W/4]      previous frame, normalised, 1/4
             z8_in     float32 [batch, 32, H/8, W/8]     previous projected 1/8 features
             z16_in    float32 [batch, 64, H/16, W/16]   previous projected 1/16 features
    outputs: labels    uint8   [batch, H/s, W/s]         s: the labels' stride (--label-stride)
             image4_out, z8_out, z16_out                 (same shapes as the inputs)

All state starts at zeros. The model's ``export_graphs()`` declares the flow as the step graph's
aux input, so the manifest lists it under ``aux_inputs`` and the engine runs
``vidseg.engine.flow.DisFlowProvider`` on the frames it feeds, the same function training used.
Parity feeds identical flow arrays (from that provider, reset with the state) to ONNX Runtime and
torch. Nothing here is particular to the family; these names are kept for their callers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from vidseg.engine.bundle import AuxSpec
from vidseg.export.onnx import ClassInfo, model_manifest
from vidseg.export.parity import ParityReport, check_parity, export_bundle, stream_aux

FLOW = "flow"


def flow_spec(model: nn.Module) -> AuxSpec:
    """The manifest's aux input for ``model``'s flow: (2, h, w) float32 at ``model.flow_size``."""
    return model.flow_spec


def stream_flows(spec: AuxSpec, frames: Sequence[np.ndarray],
                 resets: Sequence[int] = ()) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """The flow the engine would feed for each of ``frames`` ((H, W, 3) uint8 at the model input
    size), the provider reset (zero flow next) at ``resets``: one {name: (1, 2, h, w)} each."""
    return stream_aux([spec], frames, resets)


def check_netwarp_parity(model: nn.Module, graph: Path, frames: Sequence[np.ndarray],
                         resets: Sequence[int] = (), label_stride: int = 1) -> ParityReport:  # fmt: skip
    """``check_parity`` with the provider's flow fed to both sides (see module docstring)."""
    return check_parity(model, graph, frames, resets=resets, label_stride=label_stride)


def export_netwarp_bundle(model: nn.Module, out: Path, classes: ClassInfo, train_info: dict,
                          frames: list[np.ndarray], scores: bool = False,
                          label_stride: int = 1) -> str:  # fmt: skip
    """Write the netwarp bundle ``out`` (``step.onnx`` + manifest with the flow aux input) after
    parity passes (``export_bundle``). Returns the parity summary.

    Raises:
        ParityError: ONNX Runtime and torch disagree beyond tolerance (no bundle is left).
    """
    manifest = model_manifest(model, classes, train_info, scores, label_stride)
    return export_bundle(model, out, manifest, frames)
