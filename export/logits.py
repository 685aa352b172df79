"""Expose a bundle's logits: the tensor its labels are the arg-max of becomes a graph output.

Every graph this project exports ends in ``labels = Cast(ArgMax(logits, axis=1))`` (see
``export.onnx.to_labels``). With the logits as an output too, the engine upsamples the labels
crisply to any frame size (``engine.upsample``) instead of by nearest neighbour. This works on a
finished bundle, without the checkpoint: the shipped default gained its logits this way
(``vidseg-export BUNDLE --add-logits``), and ``vidseg-export --logits`` runs it on a new export.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from vidseg.engine.bundle import OutputSpec, load_bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.roles import frame_roles

LOGITS = "logits"


def _producer(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    return next((n for n in graph.node if tensor in n.output), None)


def _logits_tensor(graph: onnx.GraphProto, labels: str, path: Path) -> str:
    """The name of the (N, K, h, w) tensor whose arg-max over axis 1 is ``labels``.

    Raises:
        BundleError: ``labels`` is not (a Cast of) an ArgMax over axis 1.
    """
    node = _producer(graph, labels)
    while node is not None and node.op_type in ("Cast", "Identity"):
        node = _producer(graph, node.input[0])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0) if node else None
    if node is None or node.op_type != "ArgMax" or axis != 1:
        raise BundleError(
            f"{path}: output {labels!r} is not the ArgMax over axis 1 of a "
            "logits tensor; cannot expose the logits"
        )
    return node.input[0]


def _add_output(path: Path, labels: str, num_classes: int, size: tuple[int, int]) -> None:
    """Add ``logits`` (float32 [batch, K, h, w]) as an output of the graph at ``path``,
    written atomically (a temporary file renamed over the original)."""
    model = onnx.load(str(path))
    graph = model.graph
    if any(o.name == LOGITS for o in graph.output):
        raise BundleError(f"{path}: already has an output named {LOGITS!r}")
    source = _logits_tensor(graph, labels, path)
    graph.node.append(helper.make_node("Identity", [source], [LOGITS], name="expose_logits"))
    graph.output.append(
        helper.make_tensor_value_info(LOGITS, onnx.TensorProto.FLOAT, ["batch", num_classes, *size])
    )
    onnx.checker.check_model(model)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def _check_argmax(path: Path, labels: str) -> None:
    """On random inputs, the new logits' arg-max is the graph's labels (the surgery exposed the
    right tensor, and its dtype holds)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = [1 if not isinstance(d, int) else d for d in i.shape]
        if i.type == "tensor(uint8)":
            feeds[i.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32) * 0.1
    got, logits = session.run([labels, LOGITS], feeds)
    if not np.array_equal(got, logits.argmax(1).astype(got.dtype)):
        raise BundleError(f"{path}: the exposed logits do not arg-max to the labels")


def add_logits(bundle_dir: str | Path) -> str:
    """Give every labels-producing graph of the bundle at ``bundle_dir`` a ``logits`` output and
    record it in the manifest (role "logits", float32, the labels' stride). Returns a summary.

    Raises:
        BundleError: not a bundle, already has logits, or a graph's labels are not an arg-max.
    """
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    if manifest.output_name("logits") is not None:
        raise BundleError(f"{bundle.root}: the bundle already outputs logits")
    labels = manifest.labels_output
    roles = frame_roles(manifest.graphs)  # the graphs that output labels
    for role in roles:
        path = bundle.graph_path(role)
        _add_output(path, labels, len(manifest.classes), manifest.labels_size)
        _check_argmax(path, labels)
    stride = next(o.stride for o in manifest.outputs if o.role == "labels")
    manifest = dataclasses.replace(
        manifest, outputs=(*manifest.outputs, OutputSpec(LOGITS, "logits", "float32", stride))
    )
    tmp = bundle.root / "manifest.json.tmp"
    tmp.write_text(manifest.to_json())
    os.replace(tmp, bundle.root / "manifest.json")
    load_bundle(bundle.root)  # the result validates
    height, width = manifest.labels_size
    return f"added logits [{len(manifest.classes)}, {height}, {width}] to {', '.join(roles)}"
