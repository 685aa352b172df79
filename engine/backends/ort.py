"""ONNX Runtime backend (CPU execution provider; CUDA when onnxruntime-gpu is installed).

On the CPU every tensor is a numpy array and state outputs are fed straight back. On a GPU
(``device="cuda[:N]"``) the session runs through IO binding: state and cache tensors are
``OrtValue``s in GPU memory that go from one run's outputs to the next run's inputs without a
copy; only the frame (and aux inputs) go up and only the labels (and scores) come down. The same
binding path runs on the CPU with ``BackendOptions(io_binding=True)``, which is how it is tested
on machines without a GPU. Idle worker
threads do not spin by default: on small machines spinning threads starve video decode/encode
and other sessions (measured 25 -> 55 ms per frame on 2 cores, ../shared/FACTS.md; our own
numbers are in benchmarks/README.md).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from vidseg.engine.backends.base import BackendOptions, TensorInfo, register_backend
from vidseg.engine.errors import BackendError

logger = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def _info(node: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorInfo(node.name, shape, _ORT_TYPES.get(node.type, node.type))


class OrtBackend:
    """One ``onnxruntime.InferenceSession`` behind the ``Backend`` interface."""

    name = "ort"

    def __init__(self, graph_path: str, options: BackendOptions) -> None:
        self.device = _parse_device(options.device)
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device[0] == "cuda":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise BackendError(
                    f"device {options.device!r} needs onnxruntime-gpu (pip install "
                    f"'vidseg[gpu]'); this onnxruntime offers {', '.join(available)}"
                )
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device[1]}))
        self.bound = self.device[0] != "cpu" or options.io_binding
        opts = ort.SessionOptions()
        if options.threads:
            opts.intra_op_num_threads = options.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if options.spinning else "0"
        )
        try:
            self.session = ort.InferenceSession(graph_path, opts, providers=providers)
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise BackendError(f"onnxruntime cannot load {graph_path}: {exc}") from exc
        self.inputs = tuple(_info(i) for i in self.session.get_inputs())
        self.outputs = tuple(_info(o) for o in self.session.get_outputs())
        self._names = [o.name for o in self.outputs]

    def zeros(self, shape: Sequence[int], dtype: str) -> Any:
        value = np.zeros(shape, dtype=dtype)
        return ort.OrtValue.ortvalue_from_numpy(value, *self.device) if self.bound else value

    def run(self, feeds: Mapping[str, Any], host_outputs: Sequence[str]) -> dict[str, Any]:
        try:
            if not self.bound:
                return dict(zip(self._names, self.session.run(self._names, dict(feeds))))
            binding = self.session.io_binding()
            for name, value in feeds.items():
                if isinstance(value, ort.OrtValue):  # state/cache: already where the graph runs
                    binding.bind_ortvalue_input(name, value)
                else:  # frame, aux: host arrays, copied up by ORT
                    binding.bind_cpu_input(name, np.ascontiguousarray(value))
            for name in self._names:
                if name in host_outputs:
                    binding.bind_output(name, "cpu")
                else:
                    binding.bind_output(name, *self.device)
            self.session.run_with_iobinding(binding)
            values = binding.get_outputs()
        except Exception as exc:
            raise BackendError(f"onnxruntime run failed: {exc}") from exc
        return {name: value.numpy() if name in host_outputs else value
                for name, value in zip(self._names, values)}  # fmt: skip

    def to_host(self, value: Any) -> np.ndarray:
        return value.numpy() if isinstance(value, ort.OrtValue) else np.asarray(value)


def _parse_device(device: str) -> tuple[str, int]:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` -> (ORT device type, index)."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise BackendError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return kind, int(index or 0)


register_backend("ort", OrtBackend)
