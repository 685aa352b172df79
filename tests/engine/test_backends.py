"""The ORT backend's device path (IO binding, state kept as runtime tensors) against the plain
numpy path; on machines without a GPU it runs on the CPU, the CUDA run itself is skipped."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from vidseg.engine import Segmenter
from vidseg.engine import segmenter as segmenter_module
from vidseg.engine.backends import BackendOptions, create_backend
from vidseg.engine.errors import BackendError
from vidseg.engine.multistream import MultiStreamSegmenter
from vidseg.engine.schedule import Schedule
from vidseg.engine.video import read_frames

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def clip(sample_clip: Path) -> list[np.ndarray]:
    return [f.image for f in read_frames(sample_clip, max_frames=16)]


@pytest.mark.parametrize("family", ["recurrent", "keyframe", "split"])
def test_io_binding_path_matches_numpy_path(family: str, request, clip, monkeypatch) -> None:
    """State (recurrent) and cache (keyframe) stay OrtValues from run to run, fed back without a
    copy; labels match the numpy path exactly, through a reset. A split bundle's features also
    stay OrtValues between its encode and step graphs."""
    bundle = request.getfixturevalue({"recurrent": "tiny_bundle", "split": "tiny_split_bundle",
                                      "keyframe": "tiny_keyframe_bundle"}[family])  # fmt: skip
    schedule = Schedule("fixed", 3) if family == "keyframe" else None
    plain = Segmenter(bundle, schedule=schedule)
    monkeypatch.setattr(segmenter_module, "BackendOptions",
                        functools.partial(BackendOptions, io_binding=True))  # fmt: skip
    bound = Segmenter(bundle, schedule=schedule)
    held = bound.state.tensors or bound.cache.tensors
    assert held and all(isinstance(v, ort.OrtValue) for v in held.values())
    for i, frame in enumerate(clip):
        if i == 9:
            plain.reset()
            bound.reset()
        a, b = plain.step(frame), bound.step(frame)
        np.testing.assert_array_equal(a.labels, b.labels, err_msg=f"frame {i}")
        if family == "split":  # the pipeline's way: features made ahead, kept as OrtValues
            prepared = bound.prepare(frame)
            assert all(isinstance(v, ort.OrtValue) for v in prepared.features.values())
        assert a.key_frame == b.key_frame
    held = bound.state.tensors or bound.cache.tensors
    assert all(isinstance(v, ort.OrtValue) for v in held.values())
    mine = bound.state if bound.state.tensors else bound.cache
    theirs = plain.state if plain.state.tensors else plain.cache
    for name, value in mine.tensors.items():
        np.testing.assert_allclose(mine.backend.to_host(value), theirs.tensors[name], atol=1e-5)


def test_bad_devices_are_clear_errors(tiny_bundle: Path) -> None:
    with pytest.raises(BackendError, match="cpu, cuda or cuda:N"):
        create_backend("ort", str(tiny_bundle / "step.onnx"), BackendOptions(device="tpu"))
    with pytest.raises(BackendError, match="multi-stream batching runs on the CPU"):
        MultiStreamSegmenter(tiny_bundle, streams=2, device="cuda")
    if not HAS_CUDA:
        with pytest.raises(BackendError, match="needs onnxruntime-gpu"):
            Segmenter(tiny_bundle, device="cuda")


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a CUDA GPU "
                    "(CUDAExecutionProvider not available)")  # fmt: skip
def test_cuda_matches_cpu(tiny_bundle: Path, clip) -> None:
    cpu, gpu = Segmenter(tiny_bundle), Segmenter(tiny_bundle, device="cuda")
    for i, frame in enumerate(clip):
        a, b = cpu.step(frame), gpu.step(frame)
        assert (a.labels == b.labels).mean() >= 0.999, f"frame {i}"
