"""The native TensorRT backend's bookkeeping against a fake ``tensorrt`` module and a fake CUDA
runtime (no machine here has TensorRT): plan cache keys, state buffers swapped by address,
nothing bound as input and output of one run, bytes moved per frame."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.backends import tensorrt as trt_backend
from vidseg.engine.errors import BackendError


class FakeCuda:
    name, capability, stream_handle = "Fake H200", (9, 0), 7

    def __init__(self, device: int = 0) -> None:
        self.next, self.uploads, self.copies = 0x1000, [], []

    def malloc(self, nbytes: int) -> int:
        self.next += 0x100000
        return self.next

    def upload(self, ptr: int, array: np.ndarray) -> None:
        self.uploads.append((ptr, array.nbytes))

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        self.copies.append((dst, src))

    def download(self, array: np.ndarray, ptr: int) -> None:
        array[...] = 0

    def synchronize(self) -> None:
        pass


def fake_tensorrt(version: str) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds, trt.contexts = [], []
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")

    class Profile:
        def __init__(self) -> None:
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            self.shapes[name] = (lo, opt, hi)

    class Config:
        def __init__(self) -> None:
            self.flags, self.profiles = [], []

        def set_flag(self, flag) -> None:
            self.flags.append(flag)

        def add_optimization_profile(self, profile) -> None:
            self.profiles.append(profile)

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags: int) -> object:
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config) -> bytes:
            trt.builds.append(config)
            return b"plan"

    class Parser:
        num_errors = 0

        def __init__(self, network, logger) -> None:
            pass

        def parse(self, data: bytes) -> bool:
            return data.startswith(b"\x08")  # an ONNX ModelProto's first field

    class Context:
        def __init__(self) -> None:
            self.addresses, self.runs, self.sets, self.shapes = {}, [], [], {}
            trt.contexts.append(self)

        def set_input_shape(self, name, shape) -> bool:
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr) -> bool:
            self.addresses[name] = ptr
            self.sets.append(name)
            return True

        def execute_async_v3(self, stream) -> bool:
            self.runs.append(dict(self.addresses))
            return True

    class Engine:
        def __init__(self, names) -> None:
            self.names = names
            self.num_io_tensors = len(names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> Engine:
            return Engine(trt.tensor_names)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


@pytest.fixture()
def fake_trt(monkeypatch, tiny_bundle: Path, tmp_path: Path):
    bundle = tmp_path / "tiny.vidseg"
    shutil.copytree(tiny_bundle, bundle)
    trt = fake_tensorrt("10.7.0")
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "step.onnx"), providers=["CPUExecutionProvider"])
    trt.tensor_names = [t.name for t in (*session.get_inputs(), *session.get_outputs())]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "CudaRuntime", FakeCuda)
    return trt, bundle


def test_tensorrt_swaps_state_by_address_and_caches_plans(fake_trt, monkeypatch) -> None:
    trt, bundle = fake_trt
    seg = Segmenter(bundle, backend="tensorrt", device="cuda", warmup=False)
    backend = seg.model.backends["step"]
    state_in = sorted(seg.state.tensors)
    state_out = [dict(backend._state_pairs)[name] for name in state_in]
    h, w = seg.input_size
    frame = np.zeros((h, w, 3), np.uint8)
    for i in range(6):
        if i == 4:
            seg.reset()
        seg.step(frame)
    assert len(trt.builds) == 1 and trt.builds[0].flags == ["FP16"]
    [profile] = trt.builds[0].profiles
    assert profile.shapes["frame"] == ((1, h, w, 3),) * 3  # batch fixed at the first run's
    plans = list((bundle / "trt").glob("step-*.plan"))
    assert len(plans) == 1 and plans[0] == backend.plan_path
    runs = trt.contexts[0].runs
    assert len(runs) == 6
    for run in runs:  # never one buffer as input and output of a run
        assert not {run[n] for n in state_in} & {run[n] for n in state_out}
    a = [runs[0][n] for n in state_in]
    b = [runs[1][n] for n in state_in]
    assert a != b
    assert [[run[n] for n in state_in] for run in runs] == [a, b, a, b, a, b]
    assert [[run[n] for n in state_out] for run in runs] == [b, a, b, a, b, a]
    assert len({run["frame"] for run in runs}) == 1 and len({run["labels"] for run in runs}) == 1
    # the first run sets every address; from then on only the state's, in and out, per run
    sets, k = trt.contexts[0].sets, len(runs[0])
    assert len(sets) == k + 5 * 2 * len(state_in)
    for i in range(5):
        chunk = sets[k + i * 2 * len(state_in) : k + (i + 1) * 2 * len(state_in)]
        assert sorted(chunk) == sorted((*state_in, *state_out))
    # bytes: the frame up each run, the zero state up at the start and after the reset
    state_bytes = sum(v.nbytes for v in seg.state.tensors.values())
    moved = seg.model.transfers()
    assert moved.runs == 6
    assert moved.up_bytes == 6 * h * w * 3 + 2 * state_bytes
    assert moved.down_bytes == 6 * h * w  # labels (uint8, stride 1) only

    # the same GPU, TensorRT and graph: the cached plan, no build
    Segmenter(bundle, backend="tensorrt", device="cuda")
    assert len(trt.builds) == 1
    # another TensorRT version: another plan
    trt.__version__ = "10.8.0"
    Segmenter(bundle, backend="tensorrt", device="cuda")
    assert len(trt.builds) == 2 and len(list((bundle / "trt").glob("step-*.plan"))) == 2


def test_tensorrt_plan_key_names_gpu_capability_version_graph(tmp_path: Path) -> None:
    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"one")
    key = trt_backend.plan_key("H200", (9, 0), "10.7.0", graph, True)
    assert key != trt_backend.plan_key("H100", (9, 0), "10.7.0", graph, True)
    assert key != trt_backend.plan_key("H200", (8, 9), "10.7.0", graph, True)
    assert key != trt_backend.plan_key("H200", (9, 0), "10.8.0", graph, True)
    graph.write_bytes(b"two")
    assert key != trt_backend.plan_key("H200", (9, 0), "10.7.0", graph, True)


def test_tensorrt_missing_is_one_clear_error(tiny_bundle: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    with pytest.raises(BackendError, match="needs TensorRT 10"):
        Segmenter(tiny_bundle, backend="tensorrt", device="cuda")
    with pytest.raises(BackendError, match="runs on cuda"):
        Segmenter(tiny_bundle, backend="tensorrt")
