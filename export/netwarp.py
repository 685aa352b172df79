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

All state starts at zeros. The manifest declares the flow under ``aux_inputs`` so the engine
runs ``vidseg.engine.flow.DisFlowProvider`` on the frames it feeds, the same function training
used. Parity feeds identical flow arrays (from that provider, reset with the state) to ONNX
Runtime and torch.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from vidseg.engine.bundle import AuxSpec
from vidseg.engine.flow import DIS_FLOW, DisFlowProvider
from vidseg.export.onnx import ClassInfo, build_manifest, write_bundle
from vidseg.export.parity import ParityReport, check_parity, require_parity

logger = logging.getLogger(__name__)
FLOW = "flow"


def flow_spec(model: nn.Module) -> AuxSpec:
    """The manifest's aux input for ``model``'s flow: (2, h, w) float32 at ``model.flow_size``."""
    return AuxSpec(name=FLOW, provider=DIS_FLOW, shape=(2, *model.flow_size))


def stream_flows(spec: AuxSpec, frames: Sequence[np.ndarray],
                 resets: Sequence[int] = ()) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """The flow the engine would feed for each of ``frames`` ((H, W, 3) uint8 at the model input
    size), the provider reset (zero flow next) at ``resets``: one {name: (1, 2, h, w)} each."""
    provider = DisFlowProvider(spec.shape)
    flows = []
    for index, frame in enumerate(frames):
        if index in resets:
            provider.reset()
        flows.append({spec.name: provider(frame)})
    return flows


def check_netwarp_parity(model: nn.Module, graph: Path, frames: Sequence[np.ndarray],
                         resets: Sequence[int] = (), label_stride: int = 1) -> ParityReport:  # fmt: skip
    """``check_parity`` with the provider's flow fed to both sides (see module docstring)."""
    aux = stream_flows(flow_spec(model), frames, resets)
    return check_parity(model, graph, frames, resets=resets, aux=aux, label_stride=label_stride)


def export_netwarp_bundle(model: nn.Module, out: Path, classes: ClassInfo, train_info: dict,
                          frames: list[np.ndarray], scores: bool = False,
                          label_stride: int = 1) -> str:  # fmt: skip
    """Write the netwarp bundle ``out`` (``step.onnx`` + manifest with the flow aux input).

    Atomic like ``write_bundle``: the bundle appears under ``out`` only after parity over
    ``frames`` (consecutive (H, W, 3) uint8 RGB at the input size; state and flow reset half
    way) passes. ``scores``: the graph also outputs the per-pixel confidence. Returns the
    parity summary.

    Raises:
        ParityError: ONNX Runtime and torch disagree beyond tolerance (no bundle is left).
    """
    manifest = dataclasses.replace(build_manifest(model.cfg, classes, train_info, scores=scores,
                                                  label_stride=label_stride),
                                   aux_inputs=(flow_spec(model),))  # fmt: skip
    resets = (len(frames) // 2,)
    summary: list[str] = []

    def check(graph: Path) -> None:
        report = check_netwarp_parity(model, graph, frames, resets=resets,
                                      label_stride=label_stride)  # fmt: skip
        summary.append(report.summary())
        require_parity(report)

    write_bundle(model, Path(out), manifest, check=check)
    return summary[0]
