"""Issue 16's remaining faults: a poisoned recurrent state, an opset the runtime lacks, a variable
frame rate, image folders, huge frames, failing sinks, soak runs, fuzzed frames and clips."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from vidseg.engine import Segmenter


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_nonfinite_state_is_reset_logged_and_counted(tiny_bundle: Path, poison: float,
                                                     caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 96, 3), np.uint8) for _ in range(3)]
    seg = Segmenter(tiny_bundle, warmup=False, threads=1)
    fresh = Segmenter(tiny_bundle, warmup=False, threads=1)
    seg.step(frames[0])
    name = seg.manifest.state[-1].input
    poisoned = np.array(seg.state.tensors[name])  # a copy: ORT's outputs may be read-only
    poisoned.flat[poisoned.size // 2] = poison
    seg.state.tensors[name] = poisoned
    with caplog.at_level(logging.WARNING, logger="vidseg.engine.segmenter"):
        result = seg.step(frames[1])
        seg.step(frames[2])
    # reset before the frame ran on it: the same labels as a fresh stream's first frame
    np.testing.assert_array_equal(result.labels, fresh.step(frames[1]).labels)
    assert seg.state.nonfinite() is None
    assert seg.stats().resets == 1 and seg.nonfinite_resets == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and name in lines[0] and "NaN or Inf" in lines[0], lines


def test_blown_up_state_counts_as_nonfinite(tiny_bundle: Path) -> None:
    seg = Segmenter(tiny_bundle, warmup=False, threads=1)
    assert seg.state.nonfinite() is None
    seg.state.tensors = {k: np.full(np.shape(v), 1e20, np.float32)
                         for k, v in seg.state.tensors.items()}  # fmt: skip
    assert seg.state.nonfinite() is not None  # blown up: x . x overflows, treated the same


def _with_opset(bundle: Path, dst: Path, opset: int) -> Path:
    """A copy of ``bundle`` whose step graph claims ``opset`` of the default ONNX domain."""
    import shutil

    import onnx

    shutil.copytree(bundle, dst)
    model = onnx.load(dst / "step.onnx")
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    onnx.save(model, dst / "step.onnx")
    return dst


def test_opset_newer_than_the_runtime_is_one_line(tiny_bundle: Path, tmp_path: Path,
                                                  sample_clip: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import onnxruntime

    from vidseg.engine import cli
    from vidseg.engine.errors import BackendError, exit_code_for

    bundle = _with_opset(tiny_bundle, tmp_path / "new.vidseg", 99)
    with pytest.raises(BackendError) as caught:
        Segmenter(bundle, warmup=False)
    message = str(caught.value)
    assert "\n" not in message and "opset 99" in message, message
    assert f"onnxruntime {onnxruntime.__version__}" in message, message
    assert exit_code_for(caught.value) == 4
    code = cli.main([str(sample_clip), "--model", str(bundle), "--jsonl",
                     str(tmp_path / "f.jsonl"), "--max-frames", "1", "-q"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and "opset 99" in err[0], err


def test_ir_version_newer_than_the_runtime_is_one_line(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from vidseg.engine.backends import BackendOptions, create_backend
    from vidseg.engine.errors import BackendError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 99
    onnx.save(model, tmp_path / "ir99.onnx")
    with pytest.raises(BackendError, match=r"IR version 99; onnxruntime \S+ reads IR version"):
        create_backend("ort", str(tmp_path / "ir99.onnx"), BackendOptions("cpu", 1))
