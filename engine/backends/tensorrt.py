"""Native TensorRT backend (``backend="tensorrt"``, ``device="cuda[:N]"``). UNVERIFIED.

Written against the TensorRT 10 name-based Python API from its documentation; no machine this
project has used can install TensorRT, so it has only run against a fake ``tensorrt`` module in
the tests (tests/engine/test_tensorrt.py): the bookkeeping is tested, the numbers are not.

* The engine is built from the bundle's ONNX graph (``OnnxParser``, one optimization profile
  whose batch is fixed at the first run's, fp16 allowed) and its serialized plan cached in
  ``<bundle>/trt/<graph>-<key>.plan``, the key a hash of the GPU name, its compute capability,
  the TensorRT version and the graph file's SHA-256: a plan is never loaded on another GPU,
  TensorRT or graph.
* Every tensor lives in a fixed device buffer (``engine.backends.fixed``): the state in two
  sets, swapped by address with ``set_tensor_address`` from run to run (no copy), the frame
  copied up and the labels down, one ``execute_async_v3`` on the backend's stream per run.
* Device memory and copies go through NVIDIA's ``cuda-python`` runtime bindings
  (``pip install cuda-python``); never torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vidseg.engine.backends.base import BackendOptions, TensorInfo, Transfers, register_backend
from vidseg.engine.backends.fixed import PingPongBuffers
from vidseg.engine.errors import BackendError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class DeviceTensor:
    """A tensor in GPU memory owned by a ``TensorRTBackend`` (compared by identity)."""

    ptr: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


class CudaRuntime:
    """The few CUDA runtime calls the backend needs, through cuda-python's ``cudart``."""

    def __init__(self, device: int) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python
            except ImportError as exc:
                raise BackendError(
                    "backend 'tensorrt' needs cuda-python (pip install cuda-python)"
                ) from exc
        self.rt = cudart
        self._check(cudart.cudaSetDevice(device))
        props = self._check(cudart.cudaGetDeviceProperties(device))
        name = props.name
        self.name = (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")
        self.capability = (int(props.major), int(props.minor))
        self.stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendError(f"CUDA runtime error {err}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> int:
        ptr = int(self._check(self.rt.cudaMalloc(max(nbytes, 1))))
        self._check(self.rt.cudaMemsetAsync(ptr, 0, max(nbytes, 1), self.stream))
        return ptr

    def upload(self, ptr: int, array: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self.stream)
        )

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._check(self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream))

    def download(self, array: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, self.stream)
        )

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream))

    @property
    def stream_handle(self) -> int:
        return int(self.stream)


def plan_key(
    gpu: str, capability: tuple[int, int], trt_version: str, graph: Path, fp16: bool
) -> str:
    """16 hex digits naming a plan: GPU, compute capability, TensorRT version, graph, fp16."""
    h = hashlib.sha256()
    h.update(graph.read_bytes())
    graph_hash = h.hexdigest()
    text = f"{gpu}|sm{capability[0]}{capability[1]}|trt{trt_version}|{graph_hash}|fp16={fp16}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TensorRTBackend:
    """One TensorRT engine behind the ``Backend`` interface (see the module docstring)."""

    name = "tensorrt"

    def __init__(
        self, graph_path: str, options: BackendOptions, cuda: Any = None, fp16: bool = True
    ) -> None:
        kind, _, index = options.device.partition(":")
        if kind != "cuda" or (index and not index.isdigit()):
            raise BackendError(f"backend 'tensorrt' runs on cuda[:N], got {options.device!r}")
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError(
                "backend 'tensorrt' needs TensorRT 10 (pip install "
                "'vidseg[tensorrt]'; NVIDIA's wheels)"
            ) from exc
        self.trt = trt
        self.cuda = cuda if cuda is not None else CudaRuntime(int(index or 0))
        self.graph = Path(graph_path)
        self.fp16 = fp16
        self.transfers = Transfers()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._state_pairs = options.state_pairs
        key = plan_key(self.cuda.name, self.cuda.capability, trt.__version__, self.graph, fp16)
        self.plan_path = self.graph.parent / "trt" / f"{self.graph.stem}-{key}.plan"
        self._engine: Any = None
        self._context: Any = None
        self._bound: dict[str, int] = {}  # tensor name -> address set on the context
        self._buffers: PingPongBuffers | None = None
        self.inputs, self.outputs = self._graph_io()

    def _graph_io(self) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
        """The graph's tensors as ONNX Runtime (a runtime dependency) reads them from the file:
        the names, types and shapes the engine will have once its batch is chosen."""
        import onnxruntime as ort

        from vidseg.engine.backends.ort import tensor_info

        try:
            session = ort.InferenceSession(str(self.graph), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BackendError(f"cannot read {self.graph}: {exc}") from exc
        return (
            tuple(tensor_info(i) for i in session.get_inputs()),
            tuple(tensor_info(o) for o in session.get_outputs()),
        )

    def _load(self, batch: int) -> None:
        """Deserialize the cached plan, or build it (profile at ``batch``) and cache it."""
        trt = self.trt
        plan = self.plan_path.read_bytes() if self.plan_path.is_file() else None
        if plan is None:
            logger.info(
                "building a TensorRT engine for %s (cached in %s)", self.graph, self.plan_path
            )
            plan = self._build(batch)
            self.plan_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.plan_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(plan)
            tmp.replace(self.plan_path)
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise BackendError(f"TensorRT cannot load the plan {self.plan_path}")
        self._context = self._engine.create_execution_context()
        names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        expected = {t.name for t in (*self.inputs, *self.outputs)}
        if names != expected:
            raise BackendError(
                f"{self.plan_path}: engine tensors {sorted(names)} are not the "
                f"graph's {sorted(expected)}"
            )
        for t in self.inputs:
            self._context.set_input_shape(t.name, (batch, *t.shape[1:]))

    def _build(self, batch: int) -> bytes:
        trt = self.trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(self.graph.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse {self.graph}: {errors}")
        config = builder.create_builder_config()
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for t in self.inputs:
            shape = (batch, *t.shape[1:])
            profile.set_shape(t.name, shape, shape, shape)
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendError(f"TensorRT failed to build an engine for {self.graph}")
        return bytes(plan)

    def _alloc(self, shape: tuple[int, ...], dtype: str) -> DeviceTensor:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return DeviceTensor(self.cuda.malloc(nbytes), tuple(shape), dtype)

    def zeros(self, shape: Sequence[int], dtype: str) -> Any:
        return np.zeros(shape, dtype)  # copied into the fixed state buffer at the next run

    def run(self, feeds: Mapping[str, Any], host_outputs: Sequence[str]) -> dict[str, Any]:
        if self._buffers is None:
            first = next(iter(feeds.values()))
            batch = int(first.shape[0])
            self._load(batch)
            self._buffers = PingPongBuffers(
                self.inputs, self.outputs, self._state_pairs, self._alloc, batch
            )
        plan = self._buffers.plan(feeds)
        up = 0
        t0 = time.perf_counter_ns()
        for name, value in plan.uploads:
            dst = plan.inputs[name]
            if isinstance(value, DeviceTensor):  # on the device already: device-to-device
                self.cuda.copy(dst.ptr, value.ptr, dst.nbytes)
            else:
                array = np.ascontiguousarray(value, dtype=dst.dtype)
                self.cuda.upload(dst.ptr, array)
                up += array.nbytes
        for name, tensor in (*plan.inputs.items(), *plan.outputs.items()):
            if self._bound.get(name) != tensor.ptr:  # the state: swapped by address
                if not self._context.set_tensor_address(name, tensor.ptr):
                    raise BackendError(f"TensorRT refused the address of {name!r}")
                self._bound[name] = tensor.ptr
        self.cuda.synchronize()
        t1 = time.perf_counter_ns()
        if not self._context.execute_async_v3(self.cuda.stream_handle):
            raise BackendError(f"TensorRT failed to run {self.graph}")
        self.cuda.synchronize()
        t2 = time.perf_counter_ns()
        out: dict[str, Any] = {}
        down = 0
        for name, tensor in plan.outputs.items():
            if name in host_outputs:
                array = np.empty(tensor.shape, tensor.dtype)
                self.cuda.download(array, tensor.ptr)
                down += array.nbytes
                out[name] = array
            else:
                out[name] = tensor
        self.cuda.synchronize()
        self._buffers.advance()
        times = (t1 - t0, t2 - t1, time.perf_counter_ns() - t2)
        self.transfers = self.transfers.add(Transfers(1, up, down, *times))
        return out

    def to_host(self, value: Any) -> np.ndarray:
        if not isinstance(value, DeviceTensor):
            return np.asarray(value)
        array = np.empty(value.shape, value.dtype)
        self.cuda.download(array, value.ptr)
        self.cuda.synchronize()
        return array

    @property
    def fixed(self) -> bool:  # like OrtBackend's: outputs are rewritten in place each run
        return True


register_backend("tensorrt", TensorRTBackend)
