"""ONNX Runtime backend (CPU execution provider; CUDA when onnxruntime-gpu is installed).

On the CPU every tensor is a numpy array and state outputs are fed straight back. On a GPU
(``device="cuda[:N]"``) the session runs through IO binding: state and cache tensors are
``OrtValue``s in GPU memory that go from one run's outputs to the next run's inputs without a
copy; only the frame (and aux inputs) go up and only the labels (and scores) come down. The same
binding path runs on the CPU with ``BackendOptions(io_binding=True)``, which is how it is tested
on machines without a GPU. Idle worker
threads do not spin by default: on small machines spinning threads starve video decode/encode
and other sessions (measured numbers are in benchmarks/README.md).
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from vidseg.engine.backends.base import BackendOptions, TensorInfo, Transfers, register_backend
from vidseg.engine.backends.fixed import PingPongBuffers, fixed_shapes_ok
from vidseg.engine.errors import BackendError, BundleError

logger = logging.getLogger(__name__)

# numpy path: arrays a backend returned as state/features (device-resident on the binding path),
# so a later run of any graph that is fed them does not count them as a copy up
_RESIDENT: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def tensor_info(node: Any) -> TensorInfo:
    """The engine's ``TensorInfo`` of an ONNX Runtime graph input or output (``NodeArg``):
    symbolic dimensions become None, ONNX element types numpy dtype names."""
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorInfo(node.name, shape, _ORT_TYPES.get(node.type, node.type))


class OrtBackend:
    """One ``onnxruntime.InferenceSession`` behind the ``Backend`` interface.

    Three run paths: numpy in and out (CPU, no binding); IO binding with state kept as runtime
    tensors (``cuda``, or ``io_binding=True``); fixed buffers with the state ping-ponged
    between two sets (``engine.backends.fixed``), replayed as two captured CUDA graphs on a GPU
    (``cuda_graph``: on by default for ``cuda`` where the graph allows it, else one log line
    and the binding path). ``tensorrt=True`` puts ONNX Runtime's TensorRT execution provider
    first (engines cached in ``<bundle>/trt-cache``; unverified: no machine here has TensorRT).
    """

    name = "ort"

    def __init__(self, graph_path: str, options: BackendOptions, tensorrt: bool = False) -> None:
        self.device = _parse_device(options.device)
        self.transfers = Transfers()
        on_gpu = self.device[0] == "cuda"
        providers: list[Any] = ["CPUExecutionProvider"]
        if on_gpu:
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise BackendError(
                    f"device {options.device!r} needs onnxruntime-gpu in place of onnxruntime "
                    f"(pip uninstall -y onnxruntime && pip install onnxruntime-gpu); this "
                    f"onnxruntime offers "
                    f"{', '.join(available)}"
                )
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device[1]}))
            if tensorrt:
                if "TensorrtExecutionProvider" not in available:
                    raise BackendError(
                        "backend 'ort-trt' needs onnxruntime-gpu built with "
                        "TensorRT and the TensorRT libraries; this onnxruntime "
                        f"offers {', '.join(available)}"
                    )
                providers.insert(
                    0, ("TensorrtExecutionProvider", _trt_ep_options(graph_path, self.device[1]))
                )
        elif tensorrt:
            raise BackendError("backend 'ort-trt' runs on cuda[:N] only")
        self.bound = on_gpu or options.io_binding
        want_fixed = (
            options.cuda_graph if options.cuda_graph is not None else (on_gpu and not tensorrt)
        )
        opts = session_options(options.threads, options.spinning)
        self.capture = False  # fixed buffers replayed as captured CUDA graphs
        self.session = None
        if want_fixed and on_gpu and not tensorrt:
            graph_providers = [
                ("CUDAExecutionProvider", {"device_id": self.device[1], "enable_cuda_graph": "1"}),
                "CPUExecutionProvider",
            ]
            try:
                self.session = ort.InferenceSession(graph_path, opts, providers=graph_providers)
                self.capture = True
            except Exception as exc:  # e.g. nodes left on the CPU: no capture possible
                logger.info(
                    "%s: no CUDA graph (%s); IO binding instead",
                    graph_path,
                    str(exc).splitlines()[0][:200],
                )
                want_fixed = False
        if self.session is None:
            try:
                self.session = ort.InferenceSession(graph_path, opts, providers=providers)
            except Exception as exc:  # ORT raises its own untyped errors for bad files
                raise _load_error(graph_path, exc) from exc
        self.inputs = tuple(tensor_info(i) for i in self.session.get_inputs())
        self.outputs = tuple(tensor_info(o) for o in self.session.get_outputs())
        self._names = [o.name for o in self.outputs]
        self._input_dtypes = {t.name: t.dtype for t in self.inputs}
        why = fixed_shapes_ok(self.inputs, self.outputs) if want_fixed else None
        if why is not None:
            logger.info("%s: fixed buffers impossible (%s); IO binding instead", graph_path, why)
            if self.capture:  # reopen without capture: ORT refuses changing addresses
                self.session = ort.InferenceSession(graph_path, opts, providers=providers)
                self.capture = False
            want_fixed = False
        self.fixed = want_fixed
        self.bound = self.bound or self.fixed
        self._state_pairs = options.state_pairs
        self._buffers: PingPongBuffers | None = None  # made at the first run (its batch)
        self._bindings: dict[int, tuple[Any, Any]] = {}  # graph id -> (IOBinding, RunOptions)

    def zeros(self, shape: Sequence[int], dtype: str) -> Any:
        value = np.zeros(shape, dtype=dtype)
        if self.bound and not self.fixed:  # fixed buffers: copied in at the next run
            return ort.OrtValue.ortvalue_from_numpy(value, *self.device)
        _RESIDENT[id(value)] = value
        return value

    def run(self, feeds: Mapping[str, Any], host_outputs: Sequence[str]) -> dict[str, Any]:
        try:
            if self.fixed:
                return self._run_fixed(feeds, host_outputs)
            if not self.bound:
                return self._run_numpy(feeds, host_outputs)
            binding = self.session.io_binding()
            up = 0
            t0 = time.perf_counter_ns()
            for name, value in feeds.items():
                if not isinstance(value, ort.OrtValue):  # frame, aux: host arrays, copied up
                    value = np.ascontiguousarray(value)
                    up += value.nbytes
                    value = ort.OrtValue.ortvalue_from_numpy(value, *self.device)
                binding.bind_ortvalue_input(name, value)  # state/cache: already there
            for name in self._names:
                binding.bind_output(name, *self.device)
            t1 = time.perf_counter_ns()
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            values = binding.get_outputs()
            t2 = time.perf_counter_ns()
            out = {
                name: value.numpy() if name in host_outputs else value
                for name, value in zip(self._names, values)
            }
            t3 = time.perf_counter_ns()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"onnxruntime run failed: {exc}") from exc
        self._count(up, out, host_outputs, times=(t1 - t0, t2 - t1, t3 - t2))
        return out

    def _run_numpy(self, feeds: Mapping[str, Any], host_outputs: Sequence[str]) -> dict[str, Any]:
        up = sum(np.asarray(v).nbytes for v in feeds.values() if _RESIDENT.get(id(v)) is not v)
        t0 = time.perf_counter_ns()
        out = dict(zip(self._names, self.session.run(self._names, dict(feeds))))
        compute = time.perf_counter_ns() - t0
        for name, value in out.items():
            if name not in host_outputs:  # state: would stay on the device
                _RESIDENT[id(value)] = value
        self._count(up, out, host_outputs, times=(0, compute, 0))
        return out

    def _run_fixed(self, feeds: Mapping[str, Any], host_outputs: Sequence[str]) -> dict[str, Any]:
        if self._buffers is None:
            first = next(iter(feeds.values()))
            batch = first.shape[0] if isinstance(first, np.ndarray) else first.shape()[0]
            self._buffers = PingPongBuffers(
                self.inputs, self.outputs, self._state_pairs, self._alloc, batch
            )
        plan = self._buffers.plan(feeds)
        up = down = 0
        t0 = time.perf_counter_ns()
        for name, value in plan.uploads:  # the frame each run; the zero state after a reset
            if isinstance(value, ort.OrtValue):  # not ours: through the host (rare)
                value = value.numpy()
                down += value.nbytes
            value = np.ascontiguousarray(value, dtype=self._input_dtypes[name])
            plan.inputs[name].update_inplace(value)
            up += value.nbytes
        if plan.graph_id not in self._bindings:
            binding = self.session.io_binding()
            for name, buffer in plan.inputs.items():
                binding.bind_ortvalue_input(name, buffer)
            for name, buffer in plan.outputs.items():
                binding.bind_ortvalue_output(name, buffer)
            run_options = ort.RunOptions()
            if self.capture:
                run_options.add_run_config_entry("gpu_graph_id", str(plan.graph_id))
            self._bindings[plan.graph_id] = (binding, run_options)
        binding, run_options = self._bindings[plan.graph_id]
        t1 = time.perf_counter_ns()
        self.session.run_with_iobinding(binding, run_options)
        binding.synchronize_outputs()
        self._buffers.advance()
        t2 = time.perf_counter_ns()
        out = {
            name: plan.outputs[name].numpy() if name in host_outputs else plan.outputs[name]
            for name in self._names
        }
        self._count(
            up, out, host_outputs, down, times=(t1 - t0, t2 - t1, time.perf_counter_ns() - t2)
        )
        return out

    def _alloc(self, shape: tuple[int, ...], dtype: str) -> Any:
        return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype), *self.device)

    def _count(
        self,
        up: int,
        out: Mapping[str, Any],
        host_outputs: Sequence[str],
        down: int = 0,
        times: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        """Add one run: bytes up and down, and its (up, compute, down) nanoseconds."""
        down += sum(out[n].nbytes for n in host_outputs if n in out)
        self.transfers = self.transfers.add(Transfers(1, up, down, *times))

    def to_host(self, value: Any) -> np.ndarray:
        return value.numpy() if isinstance(value, ort.OrtValue) else np.asarray(value)


_TOO_NEW = (  # what onnxruntime says of a graph newer than it -> (what it needs, what it has)
    (
        re.compile(r"Opset (\d+) is under development.*?domain (\S+) is till opset (\d+)", re.S),
        "needs ONNX opset {0} ({1}); onnxruntime {v} supports opset {2} at most",
    ),
    (
        re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)"),
        "is ONNX IR version {0}; onnxruntime {v} reads IR version {1} at most",
    ),
    (
        re.compile(r"Could not find an implementation for (\S+)\((\d+)\)"),
        "needs operator {0} of opset {1}, which onnxruntime {v} does not implement",
    ),
)


_DAMAGED = ("InvalidProtobuf", "InvalidGraph", "NoSuchFile")  # ORT's error classes, by name
_DAMAGED_TEXT = re.compile(r"Protobuf parsing failed|No graph was found in the protobuf")


def _load_error(graph_path: str, exc: Exception) -> BundleError | BackendError:
    """One line for a graph ONNX Runtime cannot load: a ``BundleError`` for a file that is not a
    readable ONNX graph (damaged, cut short, missing: the bundle is bad), a ``BackendError``
    otherwise; for a graph newer than the installed runtime (its opset, IR version or an
    operator version), what it needs and what is installed."""
    text = str(exc)
    for pattern, needs in _TOO_NEW:
        match = pattern.search(text)
        if match:
            return BackendError(
                f"{graph_path} {needs.format(*match.groups(), v=ort.__version__)}"
                ": upgrade onnxruntime or export the bundle for this one"
            )
    if type(exc).__name__ in _DAMAGED or _DAMAGED_TEXT.search(text):
        reason = text.rpartition("failed:")[2].strip().rstrip(".") or text
        return BundleError(
            f"{graph_path} is not a readable ONNX graph ({reason}): the bundle is "
            "damaged; export or download it again"
        )
    return BackendError(f"onnxruntime cannot load {graph_path}: {text}")


def session_options(threads: int | None = None, spinning: bool = False) -> ort.SessionOptions:
    """The session options every vidseg session uses: ``threads`` intra-op threads (None: the
    runtime's default), one inter-op thread, and idle threads spinning only when asked (they
    starve decode/encode and other sessions on small machines)."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def _trt_ep_options(graph_path: str, device_id: int) -> dict[str, Any]:
    """ONNX Runtime TensorRT EP options: engines and timing caches beside the graph (keyed by
    ORT itself on the graph, the GPU and the TensorRT version), fp16 where TensorRT picks it."""
    cache = Path(graph_path).parent / "trt-cache"
    return {
        "device_id": device_id,
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": "True",
    }


def _parse_device(device: str) -> tuple[str, int]:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` -> (ORT device type, index)."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise BackendError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return kind, int(index or 0)


register_backend("ort", OrtBackend)
register_backend("ort-trt", lambda path, options: OrtBackend(path, options, tensorrt=True))
