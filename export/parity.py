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

from vidseg.engine.aux_inputs import make_provider
from vidseg.engine.backends.ort import session_options
from vidseg.engine.bundle import AuxSpec, Manifest
from vidseg.engine.errors import ParityError
from vidseg.engine.roles import ENCODE, STEP, RolePlanner
from vidseg.engine.schedule import Schedule
from vidseg.export.onnx import (
    FRAME,
    RoleGraph,
    carried_zeros,
    export_model_graphs,
    write_bundle,
)
from vidseg.export.onnx import label_stride as manifest_stride
from vidseg.models.protocol import GraphSpec

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


def stream_aux(
    specs: Sequence[AuxSpec], frames: Sequence[np.ndarray], resets: Sequence[int] = ()
) -> list[dict[str, np.ndarray]]:
    """The aux inputs the engine would feed for each of ``frames`` ((H, W, 3) uint8 at the
    model input size), each provider reset at ``resets``: one {name: (1, *shape)} per frame
    (empty dicts without aux inputs)."""
    providers = {spec.name: make_provider(spec) for spec in specs}
    aux = []
    for index, frame in enumerate(frames):
        if index in resets:
            for provider in providers.values():
                provider.reset()
        aux.append({name: provider(frame) for name, provider in providers.items()})
    return aux


def stream_roles(
    roles: Sequence[str],
    frames: Sequence[np.ndarray],
    interval: int = 1,
    resets: Sequence[int] = (),
) -> list[str]:
    """The graph the engine runs on each of ``frames``, chosen by the engine's own
    ``RolePlanner``: ``step`` throughout, or with ``key`` and ``current`` a key frame every
    ``interval`` frames from a stream's start (a reset at ``resets`` restarts it)."""
    planner = RolePlanner(roles, Schedule("fixed", interval, max_interval=interval))
    order = []
    for index, frame in enumerate(frames):
        if index in resets:
            planner.reset()
        order.append(planner.role(frame))
        planner.record(order[-1], 0.0)
    return order


class _OrtStream:
    """The sessions of a bundle's graphs, carrying their own state or cache as the engine does
    (``encode``: a split bundle's encoder feeds the step graph its features)."""

    def __init__(
        self,
        paths: Mapping[str, Path],
        specs: Mapping[str, GraphSpec],
        zeros: Mapping[str, np.ndarray],
    ) -> None:
        self.sessions = {role: cpu_session(paths[role]) for role in specs}
        self.encoder = cpu_session(paths[ENCODE]) if ENCODE in paths else None
        self.features = [o.name for o in self.encoder.get_outputs()] if self.encoder else []
        self.specs, self.zeros = specs, zeros
        self.reset()

    def reset(self) -> None:
        self.carried = dict(self.zeros)

    def run(self, role: str, frame: np.ndarray, aux: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs: labels, *carried out[, scores][, logits]."""
        spec = self.specs[role]
        feeds = {FRAME: frame} if spec.reads_frame else {}
        feeds |= {a.name: aux[a.name] for a in spec.aux}
        if self.encoder is not None:
            feeds = dict(zip(self.features, self.encoder.run(None, feeds)))
        feeds |= {f"{c.name}_in": self.carried[c.name] for c in spec.carried_in}
        out = self.sessions[role].run(None, feeds)
        self.carried |= {c.name: t for c, t in zip(spec.carried_out, out[1:])}
        return out


@torch.no_grad()
def check_stream_parity(
    model: torch.nn.Module,
    graphs: Mapping[str, Path],
    frames: Sequence[np.ndarray],
    resets: Sequence[int] = (),
    interval: int = 1,
    label_stride: int = 1,
    aux: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> ParityReport:
    """Compare the shipped ``graphs`` (paths by role, as ``model.export_graphs()`` names them,
    plus ``encode`` for a split bundle) with ``model`` on ``frames`` in streaming order.

    Torch and ONNX Runtime each carry their own state or cache; with ``key`` and ``current``
    graphs a key frame runs every ``interval`` frames (see ``stream_roles``). Labels and carried
    outputs come from the shipped graphs, logits from twins that also output them. The report's
    ``max_state_diff`` is over every carried output (state each frame, cache on key frames).

    Args:
        frames: (H, W, 3) uint8 RGB at the model's input size, consecutive.
        resets: indices where state returns to zeros (a key frame next) before the frame runs.
        aux: per frame, the aux inputs (name -> (1, *shape) float32), fed identically to both
            sides; by default what the engine's providers compute (``stream_aux``).

    Raises:
        ValueError: ``aux`` is not one mapping per frame, or ``interval`` is below 1.
    """
    if interval < 1:
        raise ValueError(f"key interval must be >= 1, got {interval}")
    model = model.eval()
    specs = model.export_graphs()
    if aux is None:
        aux = stream_aux([a for spec in specs.values() for a in spec.aux], frames, resets)
    if len(aux) != len(frames):
        raise ValueError(f"aux holds {len(aux)} entries for {len(frames)} frames")
    reference = {
        role: RoleGraph(model, with_logits=True, label_stride=label_stride, role=role).eval()
        for role in specs
    }
    zeros = carried_zeros(model, 1)
    with tempfile.TemporaryDirectory() as tmp:
        twin_paths = export_model_graphs(
            model, Path(tmp), with_logits=True, label_stride=label_stride
        )
        numpy_zeros = {name: t.numpy() for name, t in zeros.items()}
        shipped = _OrtStream(graphs, specs, numpy_zeros)
        twin = _OrtStream(twin_paths, specs, numpy_zeros)
        torch_carried = dict(zeros)
        agreement, logit_diff, state_diff = 1.0, 0.0, 0.0
        roles = stream_roles(tuple(specs), frames, interval, resets)
        for index, (frame, role) in enumerate(zip(frames, roles)):
            if index in resets:
                torch_carried = dict(zeros)
                shipped.reset()
                twin.reset()
            spec, x, extra = specs[role], frame[None], aux[index]
            labels_t, *carried_t = reference[role](
                *(torch.from_numpy(x),) * spec.reads_frame,
                *(torch.from_numpy(extra[a.name]) for a in spec.aux),
                *(torch_carried[c.name] for c in spec.carried_in),
            )
            logits_t = carried_t.pop()
            torch_carried |= {c.name: t for c, t in zip(spec.carried_out, carried_t)}
            labels_o = shipped.run(role, x, extra)[0]
            logits_o = twin.run(role, x, extra)[-1]
            agreement = min(agreement, float((labels_o == labels_t.numpy()).mean()))
            logit_diff = max(logit_diff, float(np.abs(logits_o - logits_t.numpy()).max()))
            for c in spec.carried_out:
                diff = np.abs(shipped.carried[c.name] - torch_carried[c.name].numpy()).max()
                state_diff = max(state_diff, float(diff))
    report = ParityReport(len(frames), tuple(resets), agreement, logit_diff, state_diff)
    logger.info(report.summary())
    return report


def check_parity(
    model: torch.nn.Module,
    graph_path: Path,
    frames: Sequence[np.ndarray],
    resets: Sequence[int] = (),
    aux: Sequence[Mapping[str, np.ndarray]] = (),
    label_stride: int = 1,
    encode_path: Path | None = None,
) -> ParityReport:
    """``check_stream_parity`` of a ``step`` bundle: ``graph_path`` is its step graph,
    ``encode_path`` a split bundle's encode graph; ``aux`` as there (empty: the providers')."""
    graphs = {STEP: graph_path} | ({ENCODE: encode_path} if encode_path is not None else {})
    return check_stream_parity(
        model, graphs, frames, resets, label_stride=label_stride, aux=aux or None
    )


def require_parity(report: ParityReport) -> None:
    """Raise ``ParityError`` with the report when it misses a tolerance."""
    if not report.passed:
        raise ParityError(
            f"export parity failed (need labels >= {MIN_LABEL_AGREEMENT * 100:.1f}%, diffs <= "
            f"{MAX_ABS_DIFF:g}): {report.summary()}"
        )


PARITY_INTERVALS = (2, 5)  # key intervals a key-frame bundle is checked at


def export_bundle(
    model: torch.nn.Module,
    out: Path,
    manifest: Manifest,
    frames: Sequence[np.ndarray],
    intervals: Sequence[int] = PARITY_INTERVALS,
) -> str:
    """Write ``model``'s bundle at ``out`` (``write_bundle``) after parity over ``frames``
    (state reset half way) passes: once for a ``step`` bundle, per key interval in
    ``intervals`` for one with key frames. Returns the summary, one line per check.

    Raises:
        ParityError: a check misses a tolerance (no bundle is left under ``out``).
    """
    resets = (len(frames) // 2,)
    keyed = manifest.has_key_frames
    summaries: list[str] = []

    def check(paths: dict[str, Path]) -> None:
        for interval in intervals if keyed else (1,):
            prefix = f"key interval {interval}: " if keyed else ""
            report = check_stream_parity(
                model, paths, frames, resets, interval, manifest_stride(manifest)
            )
            summaries.append(prefix + report.summary())
            try:
                require_parity(report)
            except ParityError as exc:
                raise ParityError(prefix + str(exc)) from None

    write_bundle(model, Path(out), manifest, check=check)
    return "\n".join(summaries)
