"""int8 bundles: a bundle's graphs statically quantized for the CPU, their I/O kept.

``vidseg-export BUNDLE.vidseg --int8 --calibration FRAMES --out BUNDLE-int8.vidseg`` (or
``vidseg-export CHECKPOINT --int8 ...``: exported, then quantized) quantizes every graph with
ONNX Runtime's post-training static quantization (``onnxruntime.quantization.quantize_static``):
QuantizeLinear/DequantizeLinear pairs (QDQ) around the convolutions and the nodes that feed
them, int8 weights per output channel, uint8 activations whose ranges (min-max) come from
calibration; ONNX Runtime's CPU provider fuses the pairs into integer kernels (QLinearConv and
kin). The weights use 7 of their 8 bits (``reduce_range``): without VNNI, x86's AVX2 kernels
multiply uint8 by int8 into int16 sums that saturate with full-range weights, and int8
activations, which would avoid that, run on a slower path there. The recurrent path and the
tail after the last convolution stay in float (:func:`float_nodes`), and so, on request, do
the first N convolutions of each graph that reads the image (the high-resolution layers, where
int8 costs most accuracy). The graph inputs and outputs keep their names, dtypes and shapes
(the uint8 frame, the float32 state, features and aux inputs, the uint8 labels), so the engine
runs the new bundle unchanged.

Calibration feeds each graph what the engine really feeds it: the float bundle runs through
``Segmenter`` over the calibration frames in order, state carried, and every graph call's feeds
(the frame or a tile view, the state inputs, aux inputs such as flow, a split bundle's features)
are kept; each graph is calibrated on its own calls. The new bundle's labels are compared with
the float bundle's through the engine over a clip, state carried, and the agreement goes into
the manifest's ``train.int8`` with the calibration source, its frame count, the method and the
nodes left in float (``export.convert``).

Needs ``onnx`` (``pip install 'vidseg[export]'``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vidseg.engine.bundle import Bundle
from vidseg.engine.errors import BundleError, VideoIOError
from vidseg.engine.folder import open_image_folder
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.video import read_frames
from vidseg.export.convert import convert_bundle

METHOD = (
    "onnxruntime.quantization.quantize_static: QDQ, per-channel int8 weights in 7 bits "
    "(reduce_range), uint8 activations, min-max calibration"
)

Feeds = dict[str, np.ndarray]  # one graph call's inputs by name


@dataclass(frozen=True)
class Calibration:
    """The frames a bundle is calibrated on, in order, and where they came from."""

    source: str  # the folder of images or the video, as given
    frames: tuple[np.ndarray, ...]  # (H, W, 3) uint8 RGB, any size (the engine resizes)

    @classmethod
    def read(cls, source: str | os.PathLike[str], count: int) -> Calibration:
        """The first ``count`` frames of ``source``: a folder of images (file-name order,
        undecodable ones skipped with a warning, as ``vidseg-run`` reads a folder) or a video.

        Raises:
            VideoIOError: ``source`` is missing, holds no readable image or is not a video,
                or gives no frame.
        """
        path = Path(source)
        try:
            if path.is_dir():
                frames = tuple(f.image for f in open_image_folder(path, max_frames=count)[1])
            else:
                frames = tuple(f.image for f in read_frames(path, max_frames=count))
        except VideoIOError as exc:
            raise VideoIOError(f"calibration frames: {exc}") from exc
        if not frames:
            raise VideoIOError(f"calibration frames: {source} gives no frame")
        return cls(os.fspath(source), frames)


class _Recording:
    """A backend that runs the backend it wraps and keeps a host copy of every run's feeds;
    everything else is the wrapped backend's."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.feeds: list[Feeds] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def run(self, feeds: Mapping[str, Any], host_outputs: Sequence[str]) -> dict[str, Any]:
        self.feeds.append({name: np.array(value) for name, value in feeds.items()})
        return self._backend.run(feeds, host_outputs)


def record_feeds(bundle: Path, frames: Iterable[np.ndarray]) -> dict[str, list[Feeds]]:
    """Each graph's feeds (by role) over ``frames`` run in order through ``Segmenter`` on the
    ONNX Runtime CPU, state carried: what the engine feeds the graph on these frames."""
    segmenter = Segmenter(bundle, warmup=False)
    backends = segmenter.model.backends
    recordings = {role: _Recording(backend) for role, backend in backends.items()}
    backends.update(recordings)
    for frame in frames:
        segmenter.step(frame)
    return {role: r.feeds for role, r in recordings.items()}


def _upstream(nodes: Sequence[Any], tensors: Iterable[str]) -> set[str]:
    """The names of the ``nodes`` (ONNX ``NodeProto``) that ``tensors`` depend on."""
    made_by = {out: node for node in nodes for out in node.output}
    found: set[str] = set()
    pending = list(tensors)
    while pending:
        node = made_by.get(pending.pop())
        if node is not None and node.name not in found:
            found.add(node.name)
            pending.extend(node.input)
    return found


def float_nodes(model: Any, state: Sequence[tuple[str, str]], float_convs: int) -> list[str]:
    """The names of the nodes of ``model`` (an ``onnx.ModelProto``, nodes in graph order, which
    is topological) that stay in float, in graph order:

    * the first ``float_convs`` convolutions, nearest the input;
    * the recurrent path, every node between a state input and a state output (``state``:
      (input, output) pairs; a memory's warp and blend, a ConvGRU's gates): quantized, the
      state would be requantized on every frame;
    * every node no convolution depends on, the tail after the last convolution (softmax, the
      log of a memory's probabilities, arg-max, scores): int8 saves nothing there, and 8-bit
      probabilities round the small ones to zero, whose log is -inf.
    """
    nodes = list(model.graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    after_state: set[str] = set()
    tainted = {state_in for state_in, _ in state}
    for node in nodes:
        if tainted.intersection(node.input):
            after_state.add(node.name)
            tainted.update(node.output)
    recurrent = after_state & _upstream(nodes, (state_out for _, state_out in state))
    feeds_conv = _upstream(nodes, (name for conv in convs for name in conv.input))
    feeds_conv |= {conv.name for conv in convs}
    keep = {conv.name for conv in convs[:float_convs]} | recurrent
    keep |= {n.name for n in nodes} - feeds_conv
    return [n.name for n in nodes if n.name in keep]


def quantize_graph(
    src: Path,
    dst: Path,
    feeds: Sequence[Feeds],
    state: Sequence[tuple[str, str]],
    float_convs: int,
) -> int:
    """``src`` ONNX graph -> ``dst`` statically quantized (``METHOD``), calibrated on
    ``feeds`` (its inputs on the engine's calls, in order), the nodes :func:`float_nodes`
    names left in float. Returns their number.

    Raises:
        BundleError: onnx is missing or the quantization failed.
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise BundleError(f"int8 quantization needs onnx ({exc})") from exc

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> Feeds | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".int8.") as tmp:
        prepared = Path(tmp) / src.name
        try:
            # constants folded, shapes inferred: the quantizer knows every tensor's type
            quant_pre_process(str(src), str(prepared))
            model = onnx.load(str(prepared))
            for i, node in enumerate(model.graph.node):  # nodes_to_exclude goes by name
                node.name = node.name or f"{node.op_type}_{i}"
            onnx.save(model, str(prepared))
            excluded = float_nodes(model, state, float_convs)
            quantize_static(
                str(prepared),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                reduce_range=True,
                nodes_to_exclude=excluded,
            )
        except Exception as exc:  # the quantizer raises untyped errors
            raise BundleError(f"{src}: int8 quantization failed: {exc}") from exc
    return len(excluded)


def int8_bundle(
    src: Path,
    out: Path,
    calibration: Calibration,
    float_convs: int,
    clip: Path,
    frames: int = 24,
) -> str:
    """Write ``out``: ``src`` with every graph quantized to int8 (I/O kept), calibrated on
    ``calibration`` through the engine, the first ``float_convs`` convolutions of each graph
    that reads the image in float, and the label agreement with ``src`` over ``frames`` frames
    of ``clip`` recorded in ``train.int8``.

    Raises:
        BundleError: ``src`` is not a bundle, ``out`` exists, or the quantization failed.
    """

    def quantize(bundle: Bundle, work: Path) -> dict[str, Any]:
        feeds = record_feeds(bundle.root, calibration.frames)
        manifest = bundle.manifest
        features = {f.name for f in manifest.features}
        state = [(s.input, s.output) for s in manifest.state]
        excluded = 0
        for role, name in manifest.graphs.items():
            if not feeds.get(role):
                raise BundleError(
                    f"calibration: graph {role!r} ran on none of the {len(calibration.frames)} "
                    "frames; give more"
                )
            reads_image = not features & set(feeds[role][0])  # not a split bundle's step
            excluded += quantize_graph(
                bundle.root / name,
                work / name,
                feeds[role],
                state,
                float_convs if reads_image else 0,
            )
        return {
            "method": METHOD,
            "calibration": {"source": calibration.source, "frames": len(calibration.frames)},
            "float_convs": float_convs,
            "excluded_nodes": excluded,
        }

    agreement = convert_bundle(src, out, "int8", quantize, clip, frames)
    return f"wrote {out}: int8 inside, {agreement}"
