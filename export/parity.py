"""Export parity: ONNX Runtime vs torch over consecutive real frames with state carried.

Both run the same frames (and the same engine-computed aux inputs, e.g. optical flow) in
order, each carrying its own state, with resets at given frames. The shipped graph's labels and
state are compared with torch, and a twin graph that also outputs logits checks those.
Tolerances: labels agree on >= 99.9 % of pixels, logits and state within 1e-3 (absolute).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort
import torch

from vidseg.engine.backends.ort import session_options
from vidseg.engine.errors import ParityError
from vidseg.export.onnx import FRAME, FrameGraph, export_graph, state_names

logger = logging.getLogger(__name__)
MIN_LABEL_AGREEMENT = 0.999
MAX_ABS_DIFF = 1e-3


@dataclass(frozen=True)
class ParityReport:
    frames: int  # frames compared
    resets: tuple[int, ...]  # frame indices where both sides reset their state to zeros
    label_agreement: float  # fraction of pixels with equal labels, worst frame
    max_logit_diff: float  # max |onnx - torch| over all frames
    max_state_diff: float  # max |onnx - torch| over all state tensors and frames

    @property
    def passed(self) -> bool:
        return (
            self.label_agreement >= MIN_LABEL_AGREEMENT
            and self.max_logit_diff <= MAX_ABS_DIFF
            and self.max_state_diff <= MAX_ABS_DIFF
        )

    def summary(self) -> str:
        return (
            f"parity over {self.frames} frames (resets at {list(self.resets)}): labels agree "
            f"{self.label_agreement * 100:.3f}% (worst frame), max |logit diff| "
            f"{self.max_logit_diff:.2e}, max |state diff| {self.max_state_diff:.2e}"
        )


def cpu_session(path: Path) -> ort.InferenceSession:
    """A CPU session for parity runs (spinning off: torch runs beside it on the same cores)."""
    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_parity(
    model: torch.nn.Module,
    graph_path: Path,
    frames: Sequence[np.ndarray],
    resets: Sequence[int] = (),
    aux: Sequence[Mapping[str, np.ndarray]] = (),
    label_stride: int = 1,
    encode_path: Path | None = None,
) -> ParityReport:
    """Compare ``graph_path`` (the shipped graph of ``model``) with ``model`` on ``frames``.

    Args:
        frames: (H, W, 3) uint8 RGB at the model's input size, consecutive.
        resets: indices where state returns to zeros before the frame runs.
        aux: per frame, the aux inputs (name -> (1, *shape) float32, e.g. netwarp's flow), fed
            identically to both sides; empty for families without aux inputs.
        label_stride: the shipped graph's labels stride (labels at the input size over it).
        encode_path: a split bundle's encode graph; ``graph_path`` is then its step graph,
            fed the encode graph's features instead of the frame.

    Raises:
        ValueError: ``aux`` is given but not one mapping per frame.
    """
    if aux and len(aux) != len(frames):
        raise ValueError(f"aux holds {len(aux)} entries for {len(frames)} frames")
    model = model.eval()
    reference = FrameGraph(model, with_logits=True, label_stride=label_stride).eval()
    state_in, state_out = state_names(model.cfg)
    height, width = model.cfg.input_size
    with tempfile.TemporaryDirectory() as tmp:
        twin_path = Path(tmp) / "twin.onnx"
        aux_shapes = {name: a.shape[1:] for name, a in aux[0].items()} if aux else {}
        export_graph(model, twin_path, with_logits=True, aux=aux_shapes,
                     label_stride=label_stride)  # fmt: skip
        shipped, twin = cpu_session(graph_path), cpu_session(twin_path)
        encoder = cpu_session(encode_path) if encode_path is not None else None
        features = [o.name for o in encoder.get_outputs()] if encoder is not None else []
        zeros = [t.numpy() for t in model.initial_state(1, height, width)] if state_in else []
        torch_state = [torch.from_numpy(z) for z in zeros]
        ort_state, twin_state = list(zeros), list(zeros)
        agreement, logit_diff, state_diff = 1.0, 0.0, 0.0
        for index, frame in enumerate(frames):
            if index in resets:
                torch_state = [torch.from_numpy(z) for z in zeros]
                ort_state, twin_state = list(zeros), list(zeros)
            x = frame[None]
            extra = dict(aux[index]) if aux else {}
            labels_t, *torch_state, logits_t = reference(
                torch.from_numpy(x), *(torch.from_numpy(a) for a in extra.values()), *torch_state
            )
            feeds = {FRAME: x, **extra}
            shipped_feeds = (
                feeds if encoder is None else dict(zip(features, encoder.run(None, feeds)))
            )
            labels_o, *ort_state = shipped.run(None, {**shipped_feeds,
                                                      **dict(zip(state_in, ort_state))})  # fmt: skip
            twin_out = twin.run(None, {**feeds, **dict(zip(state_in, twin_state))})
            twin_state, logits_o = twin_out[1:-1], twin_out[-1]  # the twin carries its own state
            agreement = min(agreement, float((labels_o == labels_t.numpy()).mean()))
            logit_diff = max(logit_diff, float(np.abs(logits_o - logits_t.numpy()).max()))
            for a, b in zip(ort_state, torch_state):
                state_diff = max(state_diff, float(np.abs(a - b.numpy()).max()))
    report = ParityReport(len(frames), tuple(resets), agreement, logit_diff, state_diff)
    logger.info(report.summary())
    return report


def require_parity(report: ParityReport) -> None:
    """Raise ``ParityError`` with the report when it misses a tolerance."""
    if not report.passed:
        raise ParityError(
            f"export parity failed (need labels >= {MIN_LABEL_AGREEMENT * 100:.1f}%, diffs <= "
            f"{MAX_ABS_DIFF:g}): {report.summary()}"
        )
