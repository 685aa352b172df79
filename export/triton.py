"""``vidseg-export BUNDLE --triton REPO``: a Triton Inference Server model repository.

The recurrent state stays on the server (Triton's *implicit state*): each manifest state pair
becomes ``sequence_batching.state`` (zeros at a sequence's START), so a client streams frames
with a sequence id per video and never sees the state. The ``oldest`` sequence-batching strategy
batches frames of different sequences into one run (dynamic batching across sequences).

Layout written (``NAME`` = ``TritonOptions.name``)::

    REPO/NAME/config.pbtxt          a recurrent or perframe bundle: one model
    REPO/NAME/1/model.onnx
    REPO/NAME/config.pbtxt          a split bundle (encode + step): an ensemble of
    REPO/NAME_encode/...            the stateless encoder (dynamic batching) and
    REPO/NAME_step/...              the stateful step (sequence batching)

The step graph gains four control inputs, each ``(batch, 1)``: ``START``, ``READY``, ``END``
(int32 0/1) and ``CORRID`` (uint64). ``START`` zeroes the incoming state inside the graph (so
the first frame of a sequence is right even where a server leaves the state uninitialised),
``READY`` keeps a slot's state unchanged when the slot carried no request; ``END`` and
``CORRID`` are accepted for the server's benefit and unused. With those inputs set to 1/1/0 the
graph computes exactly what the bundle's graph does (tested). Every config also carries the
bundle manifest as the parameter ``vidseg_manifest``, which the client (``vidseg-run
--triton``) reads over gRPC for the input size, classes and palette.

Triton serves a bundle that runs one ``step`` graph (optionally split) on every frame and reads
no engine-computed input: one with key frames (its key-frame scheduler) or with ``aux_inputs``
(e.g. optical flow) is refused, since those run in the engine, not in a graph. Writing needs
``onnx`` (the ``[export]`` extra), nothing of Triton.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vidseg.engine.bundle import Bundle, Manifest, load_bundle
from vidseg.engine.errors import BundleError, VidsegError
from vidseg.engine.roles import ENCODE, STEP

logger = logging.getLogger(__name__)

MANIFEST_PARAMETER = "vidseg_manifest"  # config parameter holding the bundle manifest (JSON)
CONTROLS = ("START", "READY", "END", "CORRID")  # step-graph control inputs, (batch, 1) each
KINDS = ("cpu", "gpu")
ACCELERATORS = ("none", "tensorrt")  # tensorrt: the ONNX Runtime backend's TensorRT provider
TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "uint8": "TYPE_UINT8",
    "int64": "TYPE_INT64",
}
VERSION = "1"  # the one model version written


@dataclass(frozen=True)
class TritonOptions:
    """How the repository is configured (each field is a ``vidseg-export --triton-*`` flag)."""

    name: str = "vidseg"  # the model clients address; an ensemble's parts get _encode/_step
    max_batch_size: int = 8  # frames (of different sequences) per run
    instances: int = 1  # model instances (instance_group count)
    kind: str = "cpu"  # instance_group kind: cpu (KIND_CPU) or gpu (KIND_GPU)
    accelerator: str = "none"  # "tensorrt": ORT's TensorRT execution provider (gpu only)
    max_sequences: int = 64  # concurrent sequences (streams) per instance (oldest strategy)
    max_queue_delay_us: int = 2000  # longest a frame waits for a batch to fill
    idle_timeout_s: int = 60  # a sequence silent this long is released (its state dropped)

    def check(self) -> None:
        """Raises VidsegError on an inconsistent option (the CLI checks the same first)."""
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise VidsegError(f"triton model name must be [A-Za-z0-9_.-]+, got {self.name!r}")
        if self.kind not in KINDS or self.accelerator not in ACCELERATORS:
            raise VidsegError(
                f"triton kind must be one of {KINDS} and accelerator one of {ACCELERATORS}"
            )
        if self.accelerator == "tensorrt" and self.kind != "gpu":
            raise VidsegError("the tensorrt accelerator needs --triton-kind gpu")
        for field_name in ("max_batch_size", "instances", "max_sequences", "idle_timeout_s"):
            if getattr(self, field_name) < 1:
                raise VidsegError(f"triton {field_name} must be >= 1")
        if self.max_queue_delay_us < 0:
            raise VidsegError("triton max_queue_delay_us must be >= 0")


class _Ident(str):
    """An enum value in the text format (written bare, not quoted)."""


def _scalar(value: object) -> str:
    if isinstance(value, _Ident):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def to_pbtxt(message: dict, indent: int = 0) -> str:
    """A nested dict as protobuf text format, Triton's config.pbtxt style.

    dict values are messages, lists of dicts repeated messages (``key [ {...}, {...} ]``), lists
    of scalars repeated scalars, ``_Ident`` values enums; a map field is a list of
    ``{"key": ..., "value": ...}`` dicts.
    """
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", to_pbtxt(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            items = [f"{pad}  {{\n{to_pbtxt(v, indent + 2)}\n{pad}  }}" for v in value]
            lines += [f"{pad}{key} [", ",\n".join(items), f"{pad}]"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _tensor(name: str, dtype: str, dims: tuple[int, ...]) -> dict:
    return {"name": name, "data_type": _Ident(TRITON_TYPES[dtype]), "dims": list(dims)}


def output_tensors(manifest: Manifest) -> list[dict]:
    """The manifest's graph outputs as config ``output`` entries (dims without the batch)."""
    h, w = manifest.labels_size
    dims = {"labels": (h, w), "scores": (h, w), "logits": (len(manifest.classes), h, w)}
    return [_tensor(o.name, o.dtype, dims[o.role]) for o in manifest.outputs]


def frame_tensor(manifest: Manifest) -> dict:
    spec = manifest.input
    return _tensor(spec.name, spec.dtype, (spec.height, spec.width, 3))


def _instances(options: TritonOptions) -> list[dict]:
    kind = "KIND_GPU" if options.kind == "gpu" else "KIND_CPU"
    return [{"count": options.instances, "kind": _Ident(kind)}]


def _onnx_model(name: str, options: TritonOptions) -> dict:
    config = {"name": name, "backend": "onnxruntime", "max_batch_size": options.max_batch_size}
    return config


def _accelerator(options: TritonOptions) -> dict:
    if options.accelerator != "tensorrt":
        return {}
    trt = {
        "name": "tensorrt",
        "parameters": [
            {"key": "precision_mode", "value": "FP16"},
            {"key": "max_workspace_size_bytes", "value": "1073741824"},
        ],
    }
    return {"optimization": {"execution_accelerators": {"gpu_execution_accelerator": [trt]}}}


def _manifest_parameter(manifest: Manifest) -> dict:
    text = json.dumps(json.loads(manifest.to_json()), separators=(",", ":"))
    return {"parameters": [{"key": MANIFEST_PARAMETER, "value": {"string_value": text}}]}


def _control(name: str) -> dict:
    if name == "CORRID":
        control = {"kind": _Ident("CONTROL_SEQUENCE_CORRID"), "data_type": _Ident("TYPE_UINT64")}
    else:
        kind = {
            "START": "CONTROL_SEQUENCE_START",
            "READY": "CONTROL_SEQUENCE_READY",
            "END": "CONTROL_SEQUENCE_END",
        }[name]
        control = {"kind": _Ident(kind), "int32_false_true": [0, 1]}
    return {"name": name, "control": [control]}


def sequence_batching(manifest: Manifest, options: TritonOptions) -> dict:
    """``sequence_batching``: oldest strategy (frames of different sequences batched), the four
    controls, and each state pair as implicit state starting from zeros."""
    states = []
    for s in manifest.state:
        dtype = _Ident(TRITON_TYPES[s.dtype])
        states.append(
            {
                "input_name": s.input,
                "output_name": s.output,
                "data_type": dtype,
                "dims": list(s.shape),
                "initial_state": {
                    "data_type": dtype,
                    "dims": list(s.shape),
                    "zero_data": True,
                    "name": f"{s.input}_zeros",
                },
            }
        )
    return {
        "sequence_batching": {
            "max_sequence_idle_microseconds": options.idle_timeout_s * 1_000_000,
            "oldest": {
                "max_candidate_sequences": options.max_sequences,
                "preferred_batch_size": [options.max_batch_size],
                "max_queue_delay_microseconds": options.max_queue_delay_us,
            },
            "control_input": [_control(name) for name in CONTROLS],
            "state": states,
        }
    }


def step_config(name: str, manifest: Manifest, options: TritonOptions, inputs: list[dict]) -> dict:
    """The stateful (or, for a perframe bundle, stateless) model running the step graph."""
    config = _onnx_model(name, options)
    config["input"] = inputs
    config["output"] = output_tensors(manifest)
    if manifest.state:
        config.update(sequence_batching(manifest, options))
    else:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": options.max_queue_delay_us}
    config["instance_group"] = _instances(options)
    config.update(_accelerator(options))
    config.update(_manifest_parameter(manifest))
    return config


def encode_config(name: str, manifest: Manifest, options: TritonOptions) -> dict:
    """The stateless encoder of a split bundle: plain dynamic batching."""
    config = _onnx_model(name, options)
    config["input"] = [frame_tensor(manifest)]
    config["output"] = [_tensor(f.name, f.dtype, f.shape) for f in manifest.features]
    config["dynamic_batching"] = {"max_queue_delay_microseconds": options.max_queue_delay_us}
    config["instance_group"] = _instances(options)
    config.update(_accelerator(options))
    return config


def ensemble_config(manifest: Manifest, options: TritonOptions) -> dict:
    """frame -> NAME_encode -> features -> NAME_step -> outputs. The client's sequence id and
    START/END flags reach the step model through the ensemble."""
    feats = [{"key": f.name, "value": f.name} for f in manifest.features]
    outs = [{"key": o.name, "value": o.name} for o in manifest.outputs]
    frame = manifest.input.name
    config = {
        "name": options.name,
        "platform": "ensemble",
        "max_batch_size": options.max_batch_size,
        "input": [frame_tensor(manifest)],
        "output": output_tensors(manifest),
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": f"{options.name}_encode",
                    "model_version": -1,
                    "input_map": [{"key": frame, "value": frame}],
                    "output_map": feats,
                },
                {
                    "model_name": f"{options.name}_step",
                    "model_version": -1,
                    "input_map": feats,
                    "output_map": outs,
                },
            ]
        },
    }
    config.update(_manifest_parameter(manifest))
    return config


def _replace_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node input named ``old`` (subgraphs included) now reads ``new``."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _replace_uses(attr.g, old, new)
            for sub in attr.graphs:
                _replace_uses(sub, old, new)


def with_controls(model: onnx.ModelProto, manifest: Manifest) -> onnx.ModelProto:
    """The step graph with Triton's control inputs: ``START`` zeroes each incoming state,
    ``READY`` = 0 passes the incoming state through unchanged; ``END``/``CORRID`` unused.

    Raises:
        BundleError: the graph lacks a state tensor the manifest names.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    for s in manifest.state:
        if s.input not in inputs or s.output not in outputs:
            raise BundleError(f"step graph lacks state {s.input}/{s.output}")
    for name in CONTROLS:
        elem = TensorProto.UINT64 if name == "CORRID" else TensorProto.INT32
        graph.input.append(helper.make_tensor_value_info(name, elem, ["batch", 1]))
    front = [
        helper.make_node("Cast", [flag], [f"{flag}_bool"], to=TensorProto.BOOL)
        for flag in ("START", "READY")
    ]
    tail = []
    for s in manifest.state:
        shape = numpy_helper.from_array(
            np.array([-1] + [1] * len(s.shape), np.int64), f"{s.input}_control_shape"
        )
        zero = numpy_helper.from_array(np.zeros((), s.dtype), f"{s.input}_zero")
        graph.initializer.extend([shape, zero])
        start, ready = f"{s.input}_start", f"{s.input}_ready"
        gated, fresh = f"{s.input}_gated", f"{s.output}_fresh"
        _replace_uses(graph, s.input, gated)
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == s.output:
                    node.output[i] = fresh
        _replace_uses(graph, s.output, fresh)
        front += [
            helper.make_node("Reshape", ["START_bool", shape.name], [start]),
            helper.make_node("Reshape", ["READY_bool", shape.name], [ready]),
            helper.make_node("Where", [start, zero.name, s.input], [gated]),
        ]
        tail.append(helper.make_node("Where", [ready, fresh, gated], [s.output]))
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(front + body + tail)  # topological order kept
    onnx.checker.check_model(model)
    return model


def _write_model(root: Path, name: str, config: dict, graph: onnx.ModelProto | None) -> None:
    model_dir = root / name
    (model_dir / VERSION).mkdir(parents=True)
    if graph is not None:
        onnx.save(graph, model_dir / VERSION / "model.onnx")
    (model_dir / "config.pbtxt").write_text(to_pbtxt(config) + "\n")


def engine_only(manifest: Manifest) -> str | None:
    """What of ``manifest`` only the engine can run (None: a Triton model serves it whole)."""
    if manifest.has_key_frames:
        return "its key-frame schedule picks the key and current graphs"
    if manifest.aux_inputs:
        kinds = ", ".join(sorted({a.provider for a in manifest.aux_inputs}))
        return f"it reads engine-computed inputs: {kinds}"
    return None


def build_repository(bundle: Bundle, staging: Path, options: TritonOptions) -> list[str]:
    """Write the model directories for ``bundle`` under ``staging``; their names."""
    manifest = bundle.manifest
    step = onnx.load(bundle.graph_path(STEP))
    if manifest.state:
        step = with_controls(step, manifest)
    if ENCODE not in manifest.graphs:
        inputs = [frame_tensor(manifest)]
        _write_model(
            staging, options.name, step_config(options.name, manifest, options, inputs), step
        )
        return [options.name]
    encode_name, step_name = f"{options.name}_encode", f"{options.name}_step"
    features = [_tensor(f.name, f.dtype, f.shape) for f in manifest.features]
    _write_model(
        staging,
        encode_name,
        encode_config(encode_name, manifest, options),
        onnx.load(bundle.graph_path(ENCODE)),
    )
    _write_model(staging, step_name, step_config(step_name, manifest, options, features), step)
    ensemble = ensemble_config(manifest, options)
    _write_model(staging, options.name, ensemble, None)
    return [options.name, encode_name, step_name]


def export_triton(bundle_path: str | Path, repo: str | Path, options: TritonOptions) -> str:
    """Write a Triton model repository for the bundle at ``bundle_path`` into ``repo``.

    ``repo`` may already hold other models; a model directory of the same name is refused.
    Everything is written to a hidden staging directory in ``repo`` and moved into place only
    when complete, so a failure leaves nothing behind.

    Returns:
        A one-paragraph summary for the CLI.

    Raises:
        BundleError: the bundle is invalid or needs the engine (``engine_only``).
        VidsegError: a bad option, or a model of that name exists in ``repo``.
    """
    options.check()
    bundle = load_bundle(bundle_path)
    manifest = bundle.manifest
    reason = engine_only(manifest)
    if reason is not None:
        raise BundleError(
            f"--triton: a {manifest.family} bundle needs the engine ({reason}); Triton serves "
            "bundles that run one step graph on every frame without engine-computed inputs"
        )
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise VidsegError(f"--triton: {repo} is not a directory")
    repo.mkdir(parents=True, exist_ok=True)
    staging = repo / f".{options.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        names = build_repository(bundle, staging, options)
        taken = [n for n in names if (repo / n).exists()]
        if taken:
            raise VidsegError(f"--triton: {repo} already has model(s) {', '.join(taken)}")
        for name in names:
            (staging / name).rename(repo / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kind = "ensemble of " + ", ".join(names[1:]) if len(names) > 1 else "one model"
    state = f"{len(manifest.state)} implicit state tensor(s)" if manifest.state else "no state"
    logger.info("triton repository %s: %s", repo, names)
    return (
        f"triton model '{options.name}' ({kind}; {state}; max batch "
        f"{options.max_batch_size}, {options.instances} {options.kind} instance(s), "
        f"accelerator {options.accelerator}) in {repo}"
    )
