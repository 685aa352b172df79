"""Wrap a foreign ONNX segmenter into a bundle: ``vidseg-export --wrap MODEL.onnx``.

A segmentation network trained elsewhere takes a float NCHW image normalised its own way and
returns (N, K, h, w) logits (and, if it is recurrent, its next state as extra outputs). The engine
feeds (N, H, W, 3) uint8 RGB frames and reads uint8 labels. This module composes three graphs
into the one ``step`` graph of a bundle, with ONNX's own tools (``onnx.compose.add_prefix`` and
``onnx.compose.merge_models``), so every backend runs it as any other bundle:

    pre   frame uint8 [b, H, W, 3] -> Cast float32 -> channel order (Gather) ->
          (x - mean) / std on 0-255 values -> Transpose to [b, 3, H, W]
    model the user's graph, every name prefixed ``model/``; its declared state inputs and outputs
          keep their own names (Identity pass-throughs), other outputs are pruned
    post  logits [b, K, h, w] -> Cast float32 -> (Resize bilinear, half_pixel, only when the
          labels' size asks for it) -> labels = Cast uint8 (ArgMax axis 1), logits,
          scores = Cast uint8 (Round (255 * ReduceMax (Softmax axis 1)))  (optional)

The logits stay at the model's own resolution when it is the input size over a stride the
manifest allows (1, 2, 4, 8): the engine upsamples labels crisply from them
(``engine.upsample``). Otherwise they are resized to the input size (or to ``label_stride``).

Before anything is written the original graph runs once on ONNX Runtime at the chosen input
size (a size the graph rejects is an error now, not at run time), which also gives the logits'
and state's real shapes. After writing, a parity check runs the wrapped graph and the original
graph fed :meth:`Normalization.apply` in numpy on real frames, state carried. See docs/wrap.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from vidseg.engine.backends.ort import session_options
from vidseg.engine.bundle import (
    DTYPES,
    LABEL_STRIDES,
    SCHEMA_VERSION,
    InputSpec,
    Manifest,
    OutputSpec,
    StateSpec,
    load_bundle,
)
from vidseg.engine.errors import BundleError, ParityError, StateSpecError
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.video import read_frames
from vidseg.export.onnx import FRAME, LABELS, LOGITS, SCORES, ClassInfo, staged_dir

logger = logging.getLogger(__name__)

MODEL_PREFIX = "model/"  # every name of the user's graph, inside the wrapped graph
PRE = "vidseg_pre/"  # names of the pre-graph's own tensors
POST = "vidseg_post/"  # names of the post-graph's own tensors
MIN_OPSET = 13  # Softmax over one axis, optional Resize inputs; older graphs are converted
MAX_CLASSES = 256  # labels are uint8
RESERVED = (FRAME, LABELS, LOGITS, SCORES)
PARITY_TIE = 1e-4  # labels may differ only where the reference's two best logits are this close
PARITY_MAX_DIFF = 1e-3  # logits and state, absolute
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with margin

_ORT_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError) + tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, n)
    for n in (
        "Fail",
        "InvalidArgument",
        "RuntimeException",
        "InvalidGraph",
        "NotImplemented",
        "InvalidProtobuf",
        "NoSuchFile",
    )
    if hasattr(ort.capi.onnxruntime_pybind11_state, n)
)


@dataclass(frozen=True)
class Normalization:
    """How the wrapped model wants its pixels, applied to 0-255 values in float32: reorder the
    channels (``channel_order`` "rgb" keeps them, "bgr" reverses them), then ``(x - mean) / std``
    per channel, ``mean`` and ``std`` given in the model's channel order. A model trained on
    0-1 inputs normalised by (m, s) takes ``mean = 255 m`` and ``std = 255 s``."""

    channel_order: str = "rgb"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32: the pre-graph's arithmetic, op for
        op (Cast, Gather, Sub, Div, Transpose), so the two agree bit for bit."""
        x = frames.astype(np.float32)
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class WrapOptions:
    """What ``vidseg-export --wrap`` is told about the foreign model."""

    classes: ClassInfo  # K names (K = the logits' channels), palette, ignore index
    normalization: Normalization = field(default_factory=Normalization)
    input_size: tuple[int, int] | None = None  # (height, width); required if the graph's is dynamic
    state: tuple[tuple[str, str], ...] = ()  # (input, output) pairs carried frame to frame
    logits_output: str | None = None  # default: the graph's one output that is not state
    scores: bool = False  # also output uint8 confidence, round(255 * max softmax)
    label_stride: int | None = None  # None: the model's own output resolution when allowed
    parity_frames: int = 24  # consecutive frames of the parity clip, state reset half way


@dataclass(frozen=True)
class GraphIO:
    """The foreign graph's interface, as ``inspect_graph`` reads and checks it."""

    image: str  # the image input, (N, 3, H, W) float
    image_type: int  # its TensorProto element type (FLOAT, FLOAT16 or DOUBLE)
    batch: int | str  # its batch dim: a static size or "batch"
    size: tuple[int, int]  # (H, W) the wrapped graph takes
    logits: str  # the (N, K, h, w) logits output
    state: tuple[StateSpec, ...]  # the user's names; shapes exclude the batch axis
    opset: int  # of the default domain, after any conversion


@dataclass(frozen=True)
class Probe:
    """What one run of the original graph at the chosen size showed."""

    classes: int  # K, the logits' channels
    logits_size: tuple[int, int]  # (h, w)
    logits_type: int  # TensorProto element type of the logits


@dataclass(frozen=True)
class WrapParity:
    """The wrapped graph against the original graph + ``Normalization.apply`` in numpy."""

    frames: int
    resets: tuple[int, ...]
    pixels: int  # label pixels compared, all frames
    label_mismatches: int  # pixels whose labels differ
    unexplained: int  # of those, where the reference's two best logits differ by > PARITY_TIE
    max_logit_diff: float
    max_state_diff: float

    @property
    def passed(self) -> bool:
        return (
            self.unexplained == 0
            and self.max_logit_diff <= PARITY_MAX_DIFF
            and self.max_state_diff <= PARITY_MAX_DIFF
        )

    def summary(self) -> str:
        equal = 100 * (1 - self.label_mismatches / max(self.pixels, 1))
        return (
            f"parity over {self.frames} frames (resets at {list(self.resets)}): labels equal "
            f"on {equal:.4f}% of {self.pixels} pixels ({self.label_mismatches} differ, "
            f"{self.unexplained} not at a near-tie), max |logit diff| "
            f"{self.max_logit_diff:.2e}, max |state diff| {self.max_state_diff:.2e}"
        )


def load_foreign(path: Path) -> onnx.ModelProto:
    """Load and check the ONNX model at ``path`` (external data beside it is loaded too).

    Raises:
        BundleError: missing, not an ONNX model, or an invalid one.
    """
    if not path.is_file():
        raise BundleError(f"model not found: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(str(path))
    except (DecodeError, onnx.checker.ValidationError, OSError, ValueError) as exc:
        raise BundleError(f"not a valid ONNX model: {path} ({_one_line(exc)})") from exc
    if not model.graph.node:
        raise BundleError(f"not a valid ONNX model: {path} (the graph has no nodes)")
    return model


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """A tensor's declared dims: int when static, the symbol (or None) when dynamic."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _dtype_name(elem_type: int) -> str:
    """numpy's name for an ONNX element type ("float32"), or ONNX's own for the others."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return (
            TensorProto.DataType.Name(elem_type).lower()
            if elem_type in TensorProto.DataType.values()
            else f"type {elem_type}"
        )


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """``model`` at opset >= ``MIN_OPSET`` (``onnx.version_converter`` when it is older).

    Raises:
        BundleError: the converter cannot convert one of its ops.
    """
    opset = opset_of(model)
    if opset >= MIN_OPSET:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(converted)
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
        raise BundleError(
            f"{path}: cannot convert opset {opset} to {MIN_OPSET} ({_one_line(exc)})"
        ) from exc
    logger.info("%s: converted opset %d -> %d", path, opset, MIN_OPSET)
    return converted


def inspect_graph(model: onnx.ModelProto, options: WrapOptions, path: Path) -> GraphIO:
    """Find the image input, the logits output and the declared state in ``model``'s graph,
    and the input size.

    Raises:
        StateSpecError: a ``--state`` name is not an input/output, or its shape is not static
            past the batch axis, or input and output disagree.
        BundleError: not exactly one image input, no (unique) logits output, an input that is
            not (N, 3, H, W) float, or no usable input size.
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    outputs = {o.name: o for o in graph.output}
    state = tuple(_state_spec(i, o, inputs, outputs, path) for i, o in options.state)
    state_in, state_out = {s.input for s in state}, {s.output for s in state}
    images = [name for name in inputs if name not in state_in]
    if len(images) != 1:
        raise BundleError(
            f"{path}: expected one image input besides the declared state, the "
            f"graph has {images or 'none'} (declare recurrent inputs with "
            "--state IN:OUT)"
        )
    image = inputs[images[0]]
    elem = image.type.tensor_type.elem_type
    dims = _dims(image)
    nchw = len(dims) == 4 and (dims[1] == 3 or not isinstance(dims[1], int))
    if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE) or not nchw:
        raise BundleError(
            f"{path}: input {image.name!r} is {_dtype_name(elem)} {dims}; "
            "expected a float (N, 3, H, W) image"
        )
    size = _input_size(dims[2:], options.input_size, image.name, path)
    if options.logits_output is not None:
        if options.logits_output not in outputs:
            raise BundleError(
                f"{path}: --logits-output {options.logits_output!r} is not an "
                f"output; the graph outputs {sorted(outputs)}"
            )
        logits = options.logits_output
    else:
        candidates = [name for name in outputs if name not in state_out]
        if len(candidates) != 1:
            raise BundleError(
                f"{path}: outputs {candidates} besides the declared state; name "
                "the logits with --logits-output"
            )
        logits = candidates[0]
    if logits in state_out:
        raise BundleError(f"{path}: {logits!r} is declared as state, it cannot be the logits")
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else "batch"
    return GraphIO(image.name, elem, batch, size, logits, state, opset_of(model))


def _input_size(
    dims: Sequence[int | str | None], requested: tuple[int, int] | None, name: str, path: Path
) -> tuple[int, int]:
    """(H, W): the graph's static dims, or ``requested`` where they are dynamic."""
    static = [d if isinstance(d, int) and d > 0 else None for d in dims]
    if requested is None:
        if None in static:
            raise BundleError(
                f"{path}: input {name!r} has a dynamic size {list(dims)}: give --input-size HxW"
            )
        return static[0], static[1]  # type: ignore[return-value]
    for want, have in zip(requested, static):
        if have is not None and have != want:
            raise BundleError(
                f"{path}: input {name!r} is fixed at {dims[0]}x{dims[1]}, "
                f"--input-size asks for {requested[0]}x{requested[1]}"
            )
    return requested


def _state_spec(
    name_in: str,
    name_out: str,
    inputs: dict[str, onnx.ValueInfoProto],
    outputs: dict[str, onnx.ValueInfoProto],
    path: Path,
) -> StateSpec:
    """The manifest entry for ``--state name_in:name_out``, shape read from the graph."""
    for name in (name_in, name_out):
        if name in RESERVED:
            raise StateSpecError(
                f"{path}: state tensor {name!r} clashes with the bundle's own "
                f"{name!r}; rename it in the model"
            )
    if name_in not in inputs:
        raise StateSpecError(
            f"{path}: --state {name_in}:{name_out}: {name_in!r} is not a graph "
            f"input; the inputs are {sorted(inputs)}"
        )
    if name_out not in outputs:
        raise StateSpecError(
            f"{path}: --state {name_in}:{name_out}: {name_out!r} is not a "
            f"graph output; the outputs are {sorted(outputs)}"
        )
    dims_in, dims_out = _dims(inputs[name_in]), _dims(outputs[name_out])
    shape = dims_in[1:]
    if not dims_in or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise StateSpecError(
            f"{path}: state input {name_in!r} has shape {dims_in}: vidseg "
            "carries fixed-shape state, every axis but the batch must be "
            "static (export the model with static state shapes)"
        )
    if dims_out and (
        len(dims_out) != len(dims_in)
        or any(isinstance(o, int) and o != i for o, i in zip(dims_out[1:], shape))
    ):
        raise StateSpecError(
            f"{path}: state output {name_out!r} is {dims_out}, its input {name_in!r} is {dims_in}"
        )
    elem_in = inputs[name_in].type.tensor_type.elem_type
    elem_out = outputs[name_out].type.tensor_type.elem_type
    dtype = _dtype_name(elem_in)
    if elem_out and elem_out != elem_in or dtype not in DTYPES:
        raise StateSpecError(
            f"{path}: state {name_in!r} -> {name_out!r} is {dtype} -> "
            f"{_dtype_name(elem_out)}; both must be one of {DTYPES}"
        )
    return StateSpec(name_in, name_out, tuple(shape), dtype)  # type: ignore[arg-type]


class Reference:
    """The original graph on ONNX Runtime (CPU), fed as the wrapped graph will be: frames
    through ``Normalization.apply``, state zeros at first."""

    def __init__(self, path: Path, io: GraphIO, normalization: Normalization) -> None:
        self.io, self.normalization = io, normalization
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(), providers=["CPUExecutionProvider"]
            )
        except _ORT_ERRORS as exc:
            raise BundleError(f"{path}: ONNX Runtime cannot load it ({_one_line(exc)})") from exc
        self.image_dtype = helper.tensor_dtype_to_np_dtype(io.image_type)
        self.outputs = [io.logits, *(s.output for s in io.state)]

    def zero_state(self, batch: int = 1) -> dict[str, np.ndarray]:
        return {s.input: np.zeros((batch, *s.shape), s.dtype) for s in self.io.state}

    def run(
        self, frames: np.ndarray, state: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(N, H, W, 3) uint8 frames and the state -> (logits as the graph returns them, the
        next state by input name)."""
        x = self.normalization.apply(frames).astype(self.image_dtype, copy=False)
        logits, *new = self.session.run(self.outputs, {self.io.image: x, **state})
        return logits, {s.input: v for s, v in zip(self.io.state, new)}


def probe(reference: Reference, path: Path) -> Probe:
    """Run the original graph once at the wrap size: the logits' shape, and each state
    output's, checked against its input.

    Raises:
        BundleError: the graph fails at this size, or its logits are not (N, K, h, w).
        StateSpecError: a state output's shape or dtype differs from its input's.
    """
    io = reference.io
    height, width = io.size
    frame = np.full((1, height, width, 3), 128, np.uint8)
    try:
        logits, state = reference.run(frame, reference.zero_state())
    except _ORT_ERRORS as exc:
        raise BundleError(
            f"{path}: the graph fails on a {height}x{width} input ({_one_line(exc)})"
        ) from exc
    if logits.ndim != 4 or logits.shape[0] != 1 or not np.issubdtype(logits.dtype, np.floating):
        raise BundleError(
            f"{path}: output {io.logits!r} is {logits.dtype} "
            f"{list(logits.shape)}, expected float (N, K, h, w) logits"
        )
    for spec in io.state:
        got = state[spec.input]
        if got.shape[1:] != spec.shape or got.dtype.name != spec.dtype:
            raise StateSpecError(
                f"{path}: state output {spec.output!r} comes out "
                f"{got.dtype} {list(got.shape[1:])}, its input {spec.input!r} is "
                f"{spec.dtype} {list(spec.shape)} (batch excluded)"
            )
    return Probe(
        logits.shape[1],
        (logits.shape[2], logits.shape[3]),
        helper.np_dtype_to_tensor_dtype(logits.dtype),
    )


def labels_stride(
    size: tuple[int, int], logits_size: tuple[int, int], requested: int | None
) -> tuple[int, bool]:
    """(the labels' stride, whether the logits must be resized to it). Without ``requested``:
    the model's own output resolution when it is the input size over an allowed stride, else
    the input size.

    Raises:
        BundleError: ``requested`` does not divide the input size.
    """
    (height, width), (h, w) = size, logits_size
    if requested is None:
        native = (
            height // h
            if height % h == 0 and width % w == 0 and height // h == width // w
            else None
        )
        if native in LABEL_STRIDES:
            return native, False  # type: ignore[return-value]
        requested = 1
    if height % requested or width % requested:
        raise BundleError(
            f"--label-stride {requested} does not divide the input size {height}x{width}"
        )
    return requested, (h, w) != (height // requested, width // requested)


def _value(name: str, elem: int, dims: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(dims))


def _state_value(name: str, spec: StateSpec, batch: int | str) -> onnx.ValueInfoProto:
    return _value(name, helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype)), [batch, *spec.shape])


def pre_graph(io: GraphIO, normalization: Normalization) -> onnx.GraphProto:
    """frame uint8 [b, H, W, 3] (+ state inputs) -> the model's image [b, 3, H, W] (+ the state,
    passed through under ``PRE`` names)."""
    height, width = io.size
    order = [2, 1, 0] if normalization.channel_order == "bgr" else [0, 1, 2]
    nodes = [helper.make_node("Cast", [FRAME], [PRE + "float"], to=TensorProto.FLOAT)]
    x = PRE + "float"
    if order != [0, 1, 2]:
        nodes.append(helper.make_node("Gather", [x, PRE + "order"], [PRE + "ordered"], axis=3))
        x = PRE + "ordered"
    nodes += [
        helper.make_node("Sub", [x, PRE + "mean"], [PRE + "centred"]),
        helper.make_node("Div", [PRE + "centred", PRE + "std"], [PRE + "normalised"]),
        helper.make_node("Transpose", [PRE + "normalised"], [PRE + "nchw"], perm=[0, 3, 1, 2]),
    ]
    image = PRE + "nchw"
    if io.image_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [image], [PRE + "image"], to=io.image_type))
        image = PRE + "image"
    nodes.append(helper.make_node("Identity", [image], [PRE + "out"]))
    initializers = [
        numpy_helper.from_array(np.asarray(order, np.int64), PRE + "order"),
        numpy_helper.from_array(np.asarray(normalization.mean, np.float32), PRE + "mean"),
        numpy_helper.from_array(np.asarray(normalization.std, np.float32), PRE + "std"),
    ]
    if order == [0, 1, 2]:
        initializers = initializers[1:]
    inputs = [_value(FRAME, TensorProto.UINT8, [io.batch, height, width, 3])]
    outputs = [_value(PRE + "out", io.image_type, [io.batch, 3, height, width])]
    for spec in io.state:
        nodes.append(helper.make_node("Identity", [spec.input], [PRE + spec.input]))
        inputs.append(_state_value(spec.input, spec, io.batch))
        outputs.append(_state_value(PRE + spec.input, spec, io.batch))
    return helper.make_graph(nodes, "vidseg_pre", inputs, outputs, initializers)


def post_graph(
    io: GraphIO, found: Probe, stride: int, resize: bool, scores: bool
) -> onnx.GraphProto:
    """The model's logits (+ state outputs under ``POST`` names) -> labels, the state, scores
    (optional) and logits, at the input size over ``stride``."""
    height, width = io.size[0] // stride, io.size[1] // stride
    k, (h, w) = found.classes, found.logits_size
    nodes = [helper.make_node("Cast", [POST + "in"], [POST + "float"], to=TensorProto.FLOAT)]
    initializers = []
    x = POST + "float"
    if resize:
        initializers += [
            numpy_helper.from_array(np.asarray([0], np.int64), POST + "zero"),
            numpy_helper.from_array(np.asarray([2], np.int64), POST + "two"),
            numpy_helper.from_array(np.asarray([height, width], np.int64), POST + "hw"),
        ]
        nodes += [
            helper.make_node("Shape", [x], [POST + "shape"]),
            helper.make_node("Slice", [POST + "shape", POST + "zero", POST + "two"], [POST + "nk"]),
            helper.make_node("Concat", [POST + "nk", POST + "hw"], [POST + "sizes"], axis=0),
            helper.make_node(
                "Resize",
                [x, "", "", POST + "sizes"],
                [POST + "resized"],
                mode="linear",
                coordinate_transformation_mode="half_pixel",
            ),
        ]
        x = POST + "resized"
    nodes += [
        helper.make_node("ArgMax", [x], [POST + "argmax"], axis=1, keepdims=0),
        helper.make_node("Cast", [POST + "argmax"], [LABELS], to=TensorProto.UINT8),
    ]
    outputs = [_value(LABELS, TensorProto.UINT8, [io.batch, height, width])]
    inputs = [_value(POST + "in", found.logits_type, [io.batch, k, h, w])]
    for spec in io.state:
        nodes.append(helper.make_node("Identity", [POST + spec.output], [spec.output]))
        inputs.append(_state_value(POST + spec.output, spec, io.batch))
        outputs.append(_state_value(spec.output, spec, io.batch))
    if scores:
        initializers.append(numpy_helper.from_array(np.asarray(255, np.float32), POST + "255"))
        nodes.append(helper.make_node("Softmax", [x], [POST + "softmax"], axis=1))
        if io.opset >= 18:  # ReduceMax takes its axes as an input from opset 18 on
            initializers.append(numpy_helper.from_array(np.asarray([1], np.int64), POST + "ax"))
            nodes.append(
                helper.make_node(
                    "ReduceMax", [POST + "softmax", POST + "ax"], [POST + "max"], keepdims=0
                )
            )
        else:
            nodes.append(
                helper.make_node(
                    "ReduceMax", [POST + "softmax"], [POST + "max"], axes=[1], keepdims=0
                )
            )
        nodes += [
            helper.make_node("Mul", [POST + "max", POST + "255"], [POST + "scaled"]),
            helper.make_node("Round", [POST + "scaled"], [POST + "rounded"]),
            helper.make_node("Cast", [POST + "rounded"], [SCORES], to=TensorProto.UINT8),
        ]
        outputs.append(_value(SCORES, TensorProto.UINT8, [io.batch, height, width]))
    nodes.append(helper.make_node("Identity", [x], [LOGITS]))
    outputs.append(_value(LOGITS, TensorProto.FLOAT, [io.batch, k, height, width]))
    return helper.make_graph(nodes, "vidseg_post", inputs, outputs, initializers)


def compose(
    model: onnx.ModelProto,
    io: GraphIO,
    normalization: Normalization,
    found: Probe,
    stride: int,
    resize: bool,
    scores: bool,
) -> onnx.ModelProto:
    """The wrapped ``step`` graph: ``pre_graph`` -> the prefixed user graph -> ``post_graph``,
    merged by ``onnx.compose.merge_models`` (which also prunes the user's other outputs)."""
    opsets = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")]
    opsets.insert(0, helper.make_opsetid("", io.opset))
    ir_version = max(model.ir_version, helper.find_min_ir_version_for(opsets))
    model.ir_version = ir_version

    def as_model(graph: onnx.GraphProto) -> onnx.ModelProto:
        return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)

    user = onnx.compose.add_prefix(model, MODEL_PREFIX)
    front = onnx.compose.merge_models(
        as_model(pre_graph(io, normalization)),
        user,
        io_map=[(PRE + "out", MODEL_PREFIX + io.image)]
        + [(PRE + s.input, MODEL_PREFIX + s.input) for s in io.state],
    )
    outputs = [LABELS, *(s.output for s in io.state)] + [SCORES] * scores + [LOGITS]
    wrapped = onnx.compose.merge_models(
        front,
        as_model(post_graph(io, found, stride, resize, scores)),
        io_map=[(MODEL_PREFIX + io.logits, POST + "in")]
        + [(MODEL_PREFIX + s.output, POST + s.output) for s in io.state],
        outputs=outputs,
        producer_name="vidseg-export --wrap",
    )
    wrapped.graph.name = "vidseg_wrapped"
    del wrapped.opset_import[:]  # merge_models lists each graph's imports: one per domain
    wrapped.opset_import.extend(opsets)
    return wrapped


def default_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """``count`` distinct colours: the PASCAL VOC colour map (bits of the class id spread over
    the high bits of r, g, b)."""
    colours = []
    for index in range(count):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_wrap_manifest(
    path: Path, io: GraphIO, options: WrapOptions, stride: int, resize: bool, source_opset: int
) -> Manifest:
    """The manifest of a wrapped bundle: ``perframe``, or ``recurrent`` with declared state;
    ``train`` records where the graph came from and how it is fed."""
    norm = options.normalization
    name = "wrapped-" + "".join(c if c.isalnum() else "-" for c in path.stem.lower())
    return Manifest(
        name=name,
        family="recurrent" if io.state else "perframe",
        classes=options.classes.names,
        palette=options.classes.palette,
        ignore_index=options.classes.ignore_index,
        input=InputSpec(name=FRAME, height=io.size[0], width=io.size[1]),
        graphs={"step": "step.onnx"},
        outputs=(OutputSpec(LABELS, "labels", "uint8", stride),)
        + ((OutputSpec(SCORES, "scores", "uint8", stride),) if options.scores else ())
        + (OutputSpec(LOGITS, "logits", "float32", stride),),
        state=io.state,
        train={
            "dataset": "unknown: a foreign model wrapped by vidseg-export --wrap",
            "wrapped": {
                "model": path.name,
                "sha256": _sha256(path),
                "image_input": io.image,
                "logits_output": io.logits,
                "channel_order": norm.channel_order,
                "mean": list(norm.mean),
                "std": list(norm.std),
                "opset": [source_opset, io.opset],
                "logits_resized": resize,
            },
        },
        schema_version=SCHEMA_VERSION,
    )


def _save(model: onnx.ModelProto, path: Path) -> None:
    """Save, with the weights in ``NAME.data`` beside it past protobuf's 2 GB limit."""
    large = model.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save(model, str(path), save_as_external_data=large, location=path.name + ".data")


def check_wrap_parity(
    graph: Path,
    reference: Reference,
    frames: Sequence[np.ndarray],
    stride: int,
    resize: bool,
    resets: Sequence[int] = (),
) -> WrapParity:
    """Run the wrapped ``graph`` and ``reference`` (the original graph + numpy normalisation,
    logits resized by ``cv2.resize`` bilinear when the wrapped graph resizes them, arg-max)
    on ``frames`` ((H, W, 3) uint8 RGB at the input size, consecutive), each carrying its own
    state, both reset to zeros before each frame index in ``resets``."""
    io = reference.io
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = [LABELS, LOGITS, *(s.output for s in io.state)]
    height, width = io.size[0] // stride, io.size[1] // stride
    ref_state, wrap_state = reference.zero_state(), reference.zero_state()
    pixels = mismatches = unexplained = 0
    logit_diff = state_diff = 0.0
    for index, frame in enumerate(frames):
        if index in resets:
            ref_state, wrap_state = reference.zero_state(), reference.zero_state()
        raw, ref_state = reference.run(frame[None], ref_state)
        expected = raw[0].astype(np.float32)
        if resize:
            expected = cv2.resize(
                expected.transpose(1, 2, 0), (width, height), interpolation=cv2.INTER_LINEAR
            )
            expected = expected.reshape(height, width, -1).transpose(2, 0, 1)
        labels, logits, *new = session.run(names, {FRAME: frame[None], **wrap_state})
        wrap_state = {s.input: v for s, v in zip(io.state, new)}
        differ = labels[0] != expected.argmax(0)
        top2 = np.sort(expected, axis=0)[-2:] if expected.shape[0] > 1 else np.zeros((2, 1, 1))
        unexplained += int((differ & (top2[1] - top2[0] > PARITY_TIE)).sum())
        pixels += differ.size
        mismatches += int(differ.sum())
        logit_diff = max(logit_diff, float(np.abs(logits[0] - expected).max()))
        for spec in io.state:
            a, b = wrap_state[spec.input], ref_state[spec.input]
            state_diff = max(state_diff, float(np.abs(a.astype(np.float64) - b).max()))
    report = WrapParity(
        len(frames), tuple(resets), pixels, mismatches, unexplained, logit_diff, state_diff
    )
    logger.info(report.summary())
    return report


def wrap_model(path: str | Path, out: str | Path, options: WrapOptions, video: str | Path) -> str:
    """Wrap the ONNX segmenter at ``path`` into the bundle directory ``out`` (see the module
    docstring), parity-checked on ``options.parity_frames`` frames of ``video``. Written into
    ``OUT.partial`` and renamed only when every check passed: nothing is left on failure.

    Returns:
        a summary: the bundle's I/O and the parity report.
    Raises:
        BundleError: the file is not a usable ONNX segmenter, or disagrees with the options.
        StateSpecError: a declared state pair is missing, dynamic or inconsistent.
        ParityError: the wrapped graph does not reproduce the original.
        VideoIOError: the parity clip cannot be read.
    """
    path, out = Path(path), Path(out)
    model = load_foreign(path)
    source_opset = opset_of(model)
    io = inspect_graph(model, options, path)
    reference = Reference(path, io, options.normalization)
    found = probe(reference, path)
    if found.classes != len(options.classes.names):
        raise BundleError(
            f"{path}: the logits have {found.classes} channels, --classes names "
            f"{len(options.classes.names)}"
        )
    if found.classes > MAX_CLASSES:
        raise BundleError(f"{path}: {found.classes} classes do not fit uint8 labels")
    stride, resize = labels_stride(io.size, found.logits_size, options.label_stride)
    model = upgrade_opset(model, path)
    io = dataclasses.replace(io, opset=opset_of(model))
    try:
        wrapped = compose(model, io, options.normalization, found, stride, resize, options.scores)
    except (ValueError, onnx.checker.ValidationError) as exc:  # merge_models' own checks
        raise BundleError(f"{path}: composing the wrapped graph failed ({_one_line(exc)})") from exc
    manifest = build_wrap_manifest(path, io, options, stride, resize, source_opset)
    height, width = io.size
    frames = [
        f.image for f in read_frames(video, size=(width, height), max_frames=options.parity_frames)
    ]
    if len(frames) < options.parity_frames:
        raise BundleError(
            f"parity clip {video} has {len(frames)} frames, need {options.parity_frames}"
        )
    resets = (len(frames) // 2,) if io.state else ()
    with staged_dir(out) as tmp:
        _save(wrapped, tmp / "step.onnx")
        (tmp / "manifest.json").write_text(manifest.to_json())
        Segmenter(load_bundle(tmp))  # the engine accepts it (checks its I/O at load)
        report = check_wrap_parity(tmp / "step.onnx", reference, frames, stride, resize, resets)
        if not report.passed:
            raise ParityError(
                f"wrap parity failed (labels may differ only at near-ties, logits "
                f"and state within {PARITY_MAX_DIFF:g}): {report.summary()}"
            )
    k = found.classes
    state = f", {len(io.state)} state pairs" if io.state else ""
    how = "resized" if resize else "at the model's resolution"
    return (
        f"wrapped {path.name} ({manifest.family}{state}): frame [{height}, {width}, 3] -> "
        f"labels/logits [{k}, {height // stride}, {width // stride}] (stride {stride}, "
        f"logits {how})\n{report.summary()}"
    )
