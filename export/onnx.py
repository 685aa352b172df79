"""torch -> ONNX with the bundle I/O contract: uint8 NHWC frames in, labels out, state explicit.

The exported graph (role ``step``) takes ``frame`` (N, H, W, 3) uint8 RGB plus one
``<state>_in`` per recurrent tensor, and returns ``labels`` (N, H/s, W/s) uint8 plus one
``<state>_out`` each, s the labels' stride (``--label-stride``: 1, full input size, unless asked;
the shipped default uses 4). Normalisation, upsampling of the logits to that size and the
arg-max all run inside the graph, so the engine moves only bytes. Batch is the only dynamic
axis; every state tensor has its full fixed shape. Families with engine-computed aux inputs
(netwarp's ``flow``) take them right after ``frame``, before the state.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from vidseg.engine.bundle import (
    SCHEMA_VERSION,
    FeatureSpec,
    InputSpec,
    Manifest,
    OutputSpec,
    StateSpec,
)
from vidseg.engine.roles import ENCODE, STEP
from vidseg.models.layers import normalize
from vidseg.models.protocol import GraphSpec
from vidseg.models.registry import ModelCfg, StateCfg

logger = logging.getLogger(__name__)
OPSET = 17
FRAME = "frame"
LABELS = "labels"
LOGITS = "logits"
SCORES = "scores"
FEATURE = "feat{}"  # names of a split bundle's encode -> step tensors, in model order


class OutputHeads(nn.Module):
    """What every exported graph appends to a model's logits: the arg-max labels at the input
    size over ``label_stride`` (see ``to_labels``), then after the model's other outputs the
    optional confidence (``with_scores``) and the optional float logits (``with_logits``, used
    by the parity twins; shipped graphs leave them out)."""

    def __init__(
        self,
        model: nn.Module,
        with_logits: bool = False,
        with_scores: bool = False,
        label_stride: int = 1,
    ) -> None:
        super().__init__()
        self.model = model
        self.with_logits = with_logits
        self.with_scores = with_scores
        self.label_stride = label_stride

    def labels(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return to_labels(logits, self.model.cfg, self.label_stride)

    def extras(self, logits: torch.Tensor) -> list[torch.Tensor]:
        return [confidence(logits)] * self.with_scores + [logits] * self.with_logits


class RoleGraph(OutputHeads):
    """Wraps one of a model's ``export_graphs()`` into the graph contract (see module
    docstring): (frame, *aux, *carried in) -> (labels, *carried out[, scores][, logits]).

    Labels (and scores) come at the input size over ``label_stride`` (1: full size): the
    logits are upsampled bilinearly to that size, or used as they are when already there. The
    confidence is (N, h, w) uint8 = round(255 * max softmax).
    """

    role = "step"

    def __init__(
        self,
        model: nn.Module,
        with_logits: bool = False,
        with_scores: bool = False,
        label_stride: int = 1,
        role: str | None = None,
    ) -> None:
        super().__init__(model, with_logits, with_scores, label_stride)
        self.role = role or self.role
        self.spec: GraphSpec = model.export_graphs()[self.role]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``inputs``: the frame (unless the graph reads only views of it, ``reads_frame``), the
        aux inputs (if any), then the carried tensors, passed on to the model."""
        if self.spec.reads_frame:
            frame, *inputs = inputs  # type: ignore[assignment]
            inputs = (normalize(frame), *inputs)
        out = self.spec.fn(*inputs)
        logits, *carried = (out,) if isinstance(out, torch.Tensor) else out
        labels, logits = self.labels(logits)
        return (labels, *carried, *self.extras(logits))


class FrameGraph(RoleGraph):
    """The ``step`` graph: (frame, *aux, *state) -> (labels, *state[, scores][, logits])."""


class EncodeGraph(nn.Module):
    """A split bundle's ``encode`` graph: frame (N, H, W, 3) uint8 -> the model's stateless
    ``features`` (float32), named ``feat0``, ``feat1``, ..."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features, _ = self.model.split()
        return tuple(features(normalize(frame)))


class HeadGraph(OutputHeads):
    """A split bundle's ``step`` graph: (*features, *state) -> (labels, *state[, scores]
    [, logits]), the model's ``head`` under the same output heads as ``FrameGraph``."""

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _, head = self.model.split()
        logits, *new_state = head(*inputs)
        labels, logits = self.labels(logits)
        return (labels, *new_state, *self.extras(logits))


def splittable(model: nn.Module) -> bool:
    """Whether ``model`` has a stateless ``features`` part and a ``head`` to split it into
    (``TemporalModel.split``)."""
    return model.split() is not None


@torch.no_grad()
def feature_specs(model: nn.Module) -> tuple[FeatureSpec, ...]:
    """Names and shapes (batch excluded) of ``model.features`` at its input size."""
    height, width = model.cfg.input_size
    features, _ = model.eval().split()
    feats = features(torch.zeros(1, 3, height, width))
    return tuple(FeatureSpec(FEATURE.format(i), tuple(f.shape[1:])) for i, f in enumerate(feats))


def export_split_graphs(
    model: nn.Module,
    encode_path: Path,
    step_path: Path,
    with_scores: bool = False,
    label_stride: int = 1,
) -> None:
    """Write ``model`` as an ``encode`` graph (frame -> features, stateless) and a ``step`` graph
    (features + state -> labels + state), composing to what ``export_graph`` writes as one."""
    cfg: ModelCfg = model.cfg
    height, width = cfg.input_size
    specs = feature_specs(model)
    names = [f.name for f in specs]
    state_in, state_out = state_names(cfg)
    frame = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    feats = tuple(torch.zeros(1, *f.shape) for f in specs)
    state = tuple(model.initial_state(1, height, width)) if cfg.state else ()
    write_graph(
        EncodeGraph(model), (frame,), encode_path, [FRAME], names, {f.name: f.shape for f in specs}
    )
    write_graph(
        HeadGraph(model, with_scores=with_scores, label_stride=label_stride),
        (*feats, *state),
        step_path,
        [*names, *state_in],
        [LABELS, *state_out] + [SCORES] * with_scores,
        output_shapes(cfg, label_stride, state_out, cfg.state),
    )


def labels_size(cfg: ModelCfg, label_stride: int) -> tuple[int, int]:
    """(h, w) of the labels output: the model's input size over ``label_stride``."""
    height, width = cfg.input_size
    return height // label_stride, width // label_stride


def to_labels(
    logits: torch.Tensor, cfg: ModelCfg, label_stride: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, h', w') logits -> ((N, h, w) uint8 arg-max labels, (N, K, h, w) logits) at the
    input size over ``label_stride`` (bilinear upsampling; none when already that size)."""
    size = labels_size(cfg, label_stride)
    if tuple(logits.shape[-2:]) != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits.argmax(1).to(torch.uint8), logits


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) logits -> (N, H, W) uint8 per-pixel confidence, round(255 * max softmax).

    The max of the softmax is 1 / sum(exp(logits - max)): no division per class, and no
    Softmax node, which ONNX Runtime's CPU provider runs over the channel axis of NCHW through
    transposes (1.7 ms at 11 x 112 x 152 on two cores against a few hundred us for this)."""
    top = logits.amax(1, keepdim=True)
    return torch.round(255 / (logits - top).exp().sum(1)).to(torch.uint8)


def carried_names(specs: Sequence[StateCfg]) -> tuple[list[str], list[str]]:
    """Graph input and output names (``<name>_in``, ``<name>_out``) of carried tensors, in
    model order: the recurrent state, or a key-frame cache (key outputs, current inputs)."""
    return [f"{s.name}_in" for s in specs], [f"{s.name}_out" for s in specs]


def state_names(cfg: ModelCfg) -> tuple[list[str], list[str]]:
    """Graph input and output names of the state tensors, in model order."""
    return carried_names(cfg.state)


def export_graph(
    model: nn.Module,
    path: Path,
    with_logits: bool = False,
    with_scores: bool = False,
    label_stride: int = 1,
) -> None:
    """Write ``model``'s ``step`` graph as one ONNX file at ``path`` (the contract above), its
    aux inputs the model's own (``GraphSpec.aux``)."""
    export_role(model, "step", path, with_logits, with_scores, label_stride)


def export_role(
    model: nn.Module,
    role: str,
    path: Path,
    with_logits: bool = False,
    with_scores: bool = False,
    label_stride: int = 1,
) -> None:
    """Write the graph ``role`` of ``model.export_graphs()`` to ``path``: inputs ``frame``, the
    aux inputs, ``<c>_in`` per carried input; outputs ``labels``, ``<c>_out`` per carried
    output, then ``scores`` and ``logits`` when asked."""
    cfg: ModelCfg = model.cfg
    height, width = cfg.input_size
    graph = RoleGraph(model, with_logits, with_scores, label_stride, role=role)
    spec = graph.spec
    carried_in, _ = carried_names(spec.carried_in)
    _, carried_out = carried_names(spec.carried_out)
    frame = (torch.zeros(1, height, width, 3, dtype=torch.uint8),) if spec.reads_frame else ()
    aux_example = tuple(torch.zeros(1, *a.shape, dtype=getattr(torch, a.dtype)) for a in spec.aux)
    zeros = carried_zeros(model, 1)
    example = (*frame, *aux_example, *(zeros[c.name] for c in spec.carried_in))
    outputs = [LABELS, *carried_out] + [SCORES] * with_scores + [LOGITS] * with_logits
    inputs = [FRAME] * spec.reads_frame + [a.name for a in spec.aux] + carried_in
    write_graph(
        graph,
        example,
        path,
        inputs,
        outputs,
        output_shapes(cfg, label_stride, carried_out, spec.carried_out),
    )


def export_model_graphs(
    model: nn.Module,
    directory: Path,
    with_logits: bool = False,
    with_scores: bool = False,
    label_stride: int = 1,
) -> dict[str, Path]:
    """Write every graph of ``model.export_graphs()`` as ``<role>.onnx`` into ``directory``;
    returns the paths by role."""
    paths = {role: Path(directory) / graph_file(role) for role in model.export_graphs()}
    for role, path in paths.items():
        export_role(model.eval(), role, path, with_logits, with_scores, label_stride)
    return paths


def graph_file(role: str) -> str:
    return f"{role}.onnx"


def carried_zeros(model: nn.Module, batch: int) -> dict[str, torch.Tensor]:
    """The initial value of each carried tensor (state and cache) of ``model``, by name."""
    cfg: ModelCfg = model.cfg
    height, width = cfg.input_size
    state = model.initial_state(batch, height, width) if cfg.state else []
    cache = model.initial_cache(batch, height, width) if cfg.cache else []
    return {s.name: t for s, t in zip((*cfg.state, *cfg.cache), (*state, *cache))}


def output_shapes(
    cfg: ModelCfg, label_stride: int, names: Sequence[str] = (), tensors: Sequence[StateCfg] = ()
) -> dict[str, tuple[int, ...]]:
    """Static shapes (batch excluded) of a graph's outputs: labels and scores at the input size
    over ``label_stride``, and each carried tensor ``names[i]`` as ``tensors[i]`` declares it."""
    height, width = cfg.input_size
    out_size = labels_size(cfg, label_stride)
    return {LABELS: out_size, SCORES: out_size} | {
        name: (t.channels, height // t.stride, width // t.stride) for name, t in zip(names, tensors)
    }


def write_graph(
    graph: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: Sequence[str],
    outputs: Sequence[str],
    shapes: Mapping[str, tuple[int, ...]],
) -> None:
    """Export ``graph`` on example ``args`` to ``path`` with the batch as the only dynamic axis,
    then declare the static shape of each output named in ``shapes``."""
    dynamic = {name: {0: "batch"} for name in [*inputs, *outputs]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            graph.eval(),
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    _declare_output_shapes(path, dict(shapes))


def _declare_output_shapes(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Write the full static shape (after the batch axis) of each output into the graph.

    The TorchScript exporter leaves some output dims symbolic (e.g. GRU channels); TensorRT
    profiles and IO binding need them concrete, and the engine checks them against the manifest.
    """
    model = onnx.load(str(path))
    for output in model.graph.output:
        if output.name in shapes:
            dims = output.type.tensor_type.shape.dim
            for dim, size in zip(dims[1:], shapes[output.name]):
                dim.Clear()
                dim.dim_value = size
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@dataclass(frozen=True)
class ClassInfo:
    """What the bundle says about the label space."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int | None


def build_manifest(
    cfg: ModelCfg,
    classes: ClassInfo,
    train: dict[str, Any],
    scores: bool = False,
    label_stride: int = 1,
    features: tuple[FeatureSpec, ...] = (),
) -> Manifest:
    """The manifest for a ``step`` bundle of ``cfg`` (``scores``: the graph also outputs
    per-pixel confidence; ``label_stride``: labels and scores at the input size over it;
    ``features``: split into ``encode`` + ``step`` graphs passing these tensors)."""
    height, width = cfg.input_size
    state_in, state_out = state_names(cfg)
    return Manifest(
        name=cfg.name,
        family=cfg.family,
        classes=classes.names,
        palette=classes.palette,
        ignore_index=classes.ignore_index,
        input=InputSpec(name=FRAME, height=height, width=width),
        graphs={STEP: graph_file(STEP)} | ({ENCODE: graph_file(ENCODE)} if features else {}),
        outputs=(OutputSpec(LABELS, "labels", "uint8", label_stride),)
        + ((OutputSpec(SCORES, "scores", "uint8", label_stride),) if scores else ()),
        state=tuple(
            StateSpec(i, o, (s.channels, height // s.stride, width // s.stride))
            for i, o, s in zip(state_in, state_out, cfg.state)
        ),
        features=tuple(features),
        train={**train, "pretrained": cfg.pretrained},
        schema_version=SCHEMA_VERSION,
    )


def model_manifest(
    model: nn.Module,
    classes: ClassInfo,
    train: dict[str, Any],
    scores: bool = False,
    label_stride: int = 1,
    features: tuple[FeatureSpec, ...] = (),
) -> Manifest:
    """``build_manifest`` for ``model``'s own graphs (``export_graphs()``): one file per role,
    the key-frame cache, the aux inputs and the key-frame schedule the model declares."""
    cfg: ModelCfg = model.cfg
    height, width = cfg.input_size
    specs = model.export_graphs()
    cache_in, cache_out = carried_names(cfg.cache)
    aux = {a.name: a for spec in specs.values() for a in spec.aux}
    base = build_manifest(cfg, classes, train, scores, label_stride, features)
    return replace(
        base,
        graphs={role: graph_file(role) for role in specs}
        | ({ENCODE: base.graphs[ENCODE]} if ENCODE in base.graphs else {}),
        cache=tuple(
            StateSpec(i, o, (c.channels, height // c.stride, width // c.stride))
            for i, o, c in zip(cache_in, cache_out, cfg.cache)
        ),
        aux_inputs=tuple(aux.values()),
        schedule=model.schedule(),
    )


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Build a bundle directory in ``OUT.partial`` and rename it onto ``out`` only when the
    with-block succeeds; on any exception (a failed export or parity check, Ctrl-C) the partial
    directory is deleted, so nothing ever appears under the final name half-written."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def label_stride(manifest: Manifest) -> int:
    """The stride of the manifest's labels output (1: labels at the input size)."""
    return next(o.stride for o in manifest.outputs if o.role == "labels")


def write_bundle(
    model: nn.Module,
    out: Path,
    manifest: Manifest,
    check: Callable[[dict[str, Path]], None] | None = None,
) -> None:
    """Export ``model``'s graphs and write ``manifest`` into the bundle directory ``out``.

    Written into ``out.partial`` first; ``check`` (e.g. the parity check) runs on the finished
    graphs there (their paths by role, ``encode`` included when split), and only when it returns
    is the directory renamed to ``out``. So a failed export or check never leaves a bundle under
    the final name.
    """
    with staged_dir(out) as tmp:
        with_scores = any(o.role == "scores" for o in manifest.outputs)
        paths = {role: tmp / name for role, name in manifest.graphs.items()}
        if ENCODE in manifest.graphs:
            export_split_graphs(
                model,
                paths[ENCODE],
                paths[STEP],
                with_scores=with_scores,
                label_stride=label_stride(manifest),
            )
        else:
            for role, path in paths.items():
                export_role(
                    model.eval(),
                    role,
                    path,
                    with_scores=with_scores,
                    label_stride=label_stride(manifest),
                )
        (tmp / "manifest.json").write_text(manifest.to_json())
        if check is not None:
            check(paths)
