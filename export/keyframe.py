"""Key-frame bundles: ``key.onnx`` and ``current.onnx`` sharing a cache, parity-checked.

The graph contract (see docs/bundle.md):

* ``key``: ``frame`` uint8 (N, H, W, 3) -> ``labels`` uint8 (N, H/s, W/s) (s: the labels'
  stride) and one ``<c>_out``
  float32 (N, C, H/s, W/s) per cached tensor;
* ``current``: ``frame`` plus one ``<c>_in`` per cached tensor -> ``labels`` only.

The engine runs ``key`` on key frames (always the first frame of a stream) and stores its
``<c>_out`` tensors; every other frame runs ``current`` fed with them. Normalisation, upsampling
of the logits and the arg-max run inside both graphs; batch is the only dynamic axis.

Parity runs the model and both graphs in streaming order for each key interval asked for (the
key frame every ``interval`` frames, counted from the last reset), with a reset half way.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from vidseg.engine.bundle import Manifest, StateSpec
from vidseg.engine.errors import ParityError
from vidseg.export.onnx import (
    FRAME,
    LABELS,
    LOGITS,
    SCORES,
    ClassInfo,
    OutputHeads,
    build_manifest,
    carried_names,
    output_shapes,
    staged_dir,
    write_graph,
)
from vidseg.export.parity import ParityReport, cpu_session, require_parity
from vidseg.models.layers import normalize
from vidseg.models.registry import ModelCfg

logger = logging.getLogger(__name__)
GRAPHS = {"key": "key.onnx", "current": "current.onnx"}
SCHEDULE_POLICY = "fixed"  # the engine's key-frame policy written into the manifest
SCHEDULE_THRESHOLD = 0.1  # change score for adaptive policies (unused by "fixed")


def cache_names(cfg: ModelCfg) -> tuple[list[str], list[str]]:
    """Current-graph input and key-graph output names of the cached tensors, in model order."""
    return carried_names(cfg.cache)


class KeyGraph(OutputHeads):
    """``frame`` -> (labels, *cache[, scores][, logits]): the key path of a keyframe model."""

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, *cache = self.model.forward_key(normalize(frame))
        labels, logits = self.labels(logits)
        return (labels, *cache, *self.extras(logits))


class CurrentGraph(OutputHeads):
    """(``frame``, *cache) -> (labels[, scores][, logits]): the current-frame path."""

    def forward(self, frame: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        labels, logits = self.labels(self.model.forward_current(normalize(frame), *cache))
        return (labels, *self.extras(logits))


def export_keyframe_graphs(
    model: nn.Module,
    directory: Path,
    with_logits: bool = False,
    with_scores: bool = False,
    label_stride: int = 1,
) -> dict[str, Path]:
    """Write ``key.onnx`` and ``current.onnx`` of ``model`` into ``directory``; returns the paths
    by role. With ``with_scores`` both also output the uint8 confidence (N, H/s, W/s); with
    ``with_logits`` the float logits (N, K, H/s, W/s) (parity twins), s = ``label_stride``."""
    cfg: ModelCfg = model.cfg
    height, width = cfg.input_size
    cache_in, cache_out = cache_names(cfg)
    frame = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    cache = tuple(model.initial_cache(1, height, width))
    extra = [SCORES] * with_scores + [LOGITS] * with_logits
    jobs = {
        "key": (KeyGraph(model, with_logits, with_scores, label_stride), (frame,), [FRAME],
                [LABELS, *cache_out, *extra], output_shapes(cfg, label_stride, cache_out,
                                                            cfg.cache)),
        "current": (CurrentGraph(model, with_logits, with_scores, label_stride), (frame, *cache),
                    [FRAME, *cache_in], [LABELS, *extra], output_shapes(cfg, label_stride)),
    }  # fmt: skip
    paths = {}
    model.eval()
    for role, (graph, args, inputs, outputs, shapes) in jobs.items():
        paths[role] = Path(directory) / GRAPHS[role]
        write_graph(graph, args, paths[role], inputs, outputs, shapes)
    return paths


class _OrtStream:
    """A key/current session pair carrying its own cache, as the engine does."""

    def __init__(self, paths: dict[str, Path], cache_in: list[str]) -> None:
        self.key, self.current = cpu_session(paths["key"]), cpu_session(paths["current"])
        self.cache_in = cache_in
        self.cache: list[np.ndarray] = []

    def run(self, frame: np.ndarray, is_key: bool) -> list[np.ndarray]:
        """Returns the key graph's outputs (labels, *cache[, logits]) or the current graph's."""
        if is_key:
            out = self.key.run(None, {FRAME: frame})
            self.cache = out[1 : 1 + len(self.cache_in)]
            return out
        return self.current.run(None, {FRAME: frame, **dict(zip(self.cache_in, self.cache))})


@torch.no_grad()
def check_keyframe_parity(
    model: nn.Module,
    graphs: dict[str, Path],
    frames: Sequence[np.ndarray],
    interval: int,
    resets: Sequence[int] = (),
    label_stride: int = 1,
) -> ParityReport:
    """Compare the shipped ``graphs`` ({"key", "current"} paths) with ``model`` on ``frames``.

    Torch and ONNX Runtime each carry their own cache; a key frame runs at the first frame and
    every ``interval`` frames after the last reset (a reset makes the next frame a key frame).
    Labels and the key graph's cache come from the shipped graphs, logits from twins that also
    output them. The report's ``max_state_diff`` is the cache difference.

    Args:
        frames: (H, W, 3) uint8 RGB at the model's input size, consecutive.
        interval: frames from one key frame to the next (1 = every frame is a key frame).
        resets: indices where the stream restarts (that frame is a key frame).

    Raises:
        ValueError: ``interval`` is below 1.
    """
    if interval < 1:
        raise ValueError(f"key interval must be >= 1, got {interval}")
    model = model.eval()
    key_ref = KeyGraph(model, True, label_stride=label_stride).eval()
    current_ref = CurrentGraph(model, True, label_stride=label_stride).eval()
    cache_in, _ = cache_names(model.cfg)
    with tempfile.TemporaryDirectory() as tmp:
        shipped = _OrtStream(graphs, cache_in)
        twin_paths = export_keyframe_graphs(model, Path(tmp), with_logits=True,
                                            label_stride=label_stride)  # fmt: skip
        twin = _OrtStream(twin_paths, cache_in)
        torch_cache: list[torch.Tensor] = []
        agreement, logit_diff, cache_diff = 1.0, 0.0, 0.0
        since_key_origin = 0
        for index, frame in enumerate(frames):
            if index in resets:
                since_key_origin = 0
            is_key = since_key_origin % interval == 0
            since_key_origin += 1
            x = frame[None]
            if is_key:
                labels_t, *torch_cache, logits_t = key_ref(torch.from_numpy(x))
            else:
                labels_t, logits_t = current_ref(torch.from_numpy(x), *torch_cache)
            labels_o = shipped.run(x, is_key)[0]
            logits_o = twin.run(x, is_key)[-1]
            agreement = min(agreement, float((labels_o == labels_t.numpy()).mean()))
            logit_diff = max(logit_diff, float(np.abs(logits_o - logits_t.numpy()).max()))
            if is_key:
                for a, b in zip(shipped.cache, torch_cache):
                    cache_diff = max(cache_diff, float(np.abs(a - b.numpy()).max()))
    report = ParityReport(len(frames), tuple(resets), agreement, logit_diff, cache_diff)
    logger.info("key interval %d: %s", interval, report.summary())
    return report


def build_keyframe_manifest(
    model: nn.Module,
    classes: ClassInfo,
    train: dict[str, Any],
    scores: bool = False,
    label_stride: int = 1,
) -> Manifest:
    """The manifest of a key/current bundle: graphs, cache specs and the fixed schedule
    (``scores``: both graphs also output the per-pixel confidence)."""
    cfg: ModelCfg = model.cfg
    height, width = cfg.input_size
    cache_in, cache_out = cache_names(cfg)
    return replace(
        build_manifest(cfg, classes, train, scores=scores, label_stride=label_stride),
        graphs=dict(GRAPHS),
        state=(),
        cache=tuple(
            StateSpec(i, o, (c.channels, height // c.stride, width // c.stride))
            for i, o, c in zip(cache_in, cache_out, cfg.cache)
        ),
        schedule={
            "policy": SCHEDULE_POLICY,
            "interval": model.key_interval,
            "threshold": SCHEDULE_THRESHOLD,
            "budget_ms": None,
        },  # fmt: skip
    )


def export_keyframe_bundle(
    model: nn.Module,
    out: Path,
    classes: ClassInfo,
    train_info: dict[str, Any],
    frames: list[np.ndarray],
    intervals: Sequence[int] = (2, 5),
    scores: bool = False,
    label_stride: int = 1,
) -> str:
    """Export ``model`` as a keyframe bundle at ``out`` after parity passes for every interval.

    Written into ``out.partial`` first and renamed only when every check passed, so a failed
    export or check never leaves a bundle under the final name. Each check resets the stream
    half way through ``frames``. Returns one parity summary line per interval.

    Raises:
        ParityError: a check misses a tolerance (no bundle is written).
    """
    manifest = build_keyframe_manifest(model, classes, train_info, scores, label_stride)
    summaries = []
    with staged_dir(Path(out)) as tmp:
        graphs = export_keyframe_graphs(model.eval(), tmp, with_scores=scores,
                                        label_stride=label_stride)  # fmt: skip
        (tmp / "manifest.json").write_text(manifest.to_json())
        for interval in intervals:
            report = check_keyframe_parity(model, graphs, frames, interval, (len(frames) // 2,),
                                           label_stride)  # fmt: skip
            summaries.append(f"key interval {interval}: {report.summary()}")
            try:
                require_parity(report)
            except ParityError as exc:
                raise ParityError(f"key interval {interval}: {exc}") from None
    return "\n".join(summaries)
