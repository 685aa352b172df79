"""ONNX Runtime backend (CPU execution provider; CUDA when onnxruntime-gpu is installed).

On the CPU every tensor is a numpy array and state outputs are fed straight back. Idle worker
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
        if options.device != "cpu":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise BackendError(
                    f"device {options.device!r} needs onnxruntime-gpu (pip install "
                    f"'vidseg[gpu]'); this onnxruntime offers {', '.join(available)}"
                )
            raise BackendError("the ORT CUDA backend with IO binding is not implemented yet")
        opts = ort.SessionOptions()
        if options.threads:
            opts.intra_op_num_threads = options.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if options.spinning else "0"
        )
        try:
            self.session = ort.InferenceSession(
                graph_path, opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise BackendError(f"onnxruntime cannot load {graph_path}: {exc}") from exc
        self.inputs = tuple(_info(i) for i in self.session.get_inputs())
        self.outputs = tuple(_info(o) for o in self.session.get_outputs())

    def zeros(self, shape: Sequence[int], dtype: str) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def run(self, feeds: Mapping[str, Any], host_outputs: Sequence[str]) -> dict[str, Any]:
        names = [o.name for o in self.outputs]
        try:
            values = self.session.run(names, dict(feeds))
        except Exception as exc:
            raise BackendError(f"onnxruntime run failed: {exc}") from exc
        return dict(zip(names, values))

    def to_host(self, value: Any) -> np.ndarray:
        return np.asarray(value)


register_backend("ort", OrtBackend)
