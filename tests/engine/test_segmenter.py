"""Segmenter vs a plain reference loop, state handling, input checks, torch-free engine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from vidseg.engine import FrameError, Segmenter, StateSpecError
from vidseg.engine.video import read_frames

N_FRAMES = 30


@pytest.fixture(scope="module")
def clip_frames(sample_clip: Path) -> list[np.ndarray]:
    return [f.image for f in read_frames(sample_clip, max_frames=N_FRAMES)]


def reference_loop(bundle: Path, frames: list[np.ndarray], resets: set[int]) -> list[np.ndarray]:
    """The straightforward loop a user would write against the graph itself."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    h, w = manifest["input"]["height"], manifest["input"]["width"]
    session = ort.InferenceSession(str(bundle / "step.onnx"), providers=["CPUExecutionProvider"])
    zeros = {s["input"]: np.zeros([1, *s["shape"]], np.float32) for s in manifest["state"]}
    state, out = dict(zeros), []
    names = [o.name for o in session.get_outputs()]
    for i, frame in enumerate(frames):
        if i in resets:
            state = dict(zeros)
        x = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)[None]
        values = dict(zip(names, session.run(names, {"frame": x, **state})))
        state = {s["input"]: values[s["output"]] for s in manifest["state"]}
        labels = values["labels"][0]
        out.append(cv2.resize(labels, frame.shape[1::-1], interpolation=cv2.INTER_NEAREST))
    return out


def test_engine_matches_reference_loop(tiny_bundle: Path, clip_frames: list[np.ndarray]) -> None:
    resets = {17}
    expected = reference_loop(tiny_bundle, clip_frames, resets)
    seg = Segmenter(tiny_bundle)
    for i, (frame, want) in enumerate(zip(clip_frames, expected)):
        if i in resets:
            seg.reset()
        result = seg.step(frame, timestamp=i / 25)
        assert result.labels.shape == frame.shape[:2] and result.labels.dtype == np.uint8
        np.testing.assert_array_equal(result.labels, want, err_msg=f"frame {i}")
        assert result.index == i and result.timestamp == pytest.approx(i / 25)
        assert result.timings.infer_ms > 0
        assert result.scores is None  # the bundle exports no confidence output


def test_state_is_carried_and_reset(tiny_bundle: Path, clip_frames: list[np.ndarray]) -> None:
    seg = Segmenter(tiny_bundle)
    first = seg.step(clip_frames[0]).labels
    before = {k: v.copy() for k, v in seg.state.tensors.items()}
    assert any(np.abs(v).max() > 0 for v in before.values()), "state did not change"
    # the same frame again gives a different state (memory), and reset gives the first result
    seg.step(clip_frames[0])
    assert any(not np.array_equal(before[k], v) for k, v in seg.state.tensors.items())
    seg.reset()
    assert all(np.abs(v).max() == 0 for v in seg.state.tensors.values())
    np.testing.assert_array_equal(seg.step(clip_frames[0]).labels, first)


def test_stream_resets_and_matches_step(tiny_bundle: Path, clip_frames: list[np.ndarray]) -> None:
    seg = Segmenter(tiny_bundle)
    seg.step(clip_frames[5])  # dirty state: stream() must start fresh
    streamed = [r.labels for r in seg.stream(clip_frames[:6])]
    expected = reference_loop(tiny_bundle, clip_frames[:6], set())
    for got, want in zip(streamed, expected):
        np.testing.assert_array_equal(got, want)


def test_perframe_bundle_has_no_state(tiny_perframe_bundle: Path, clip_frames) -> None:
    seg = Segmenter(tiny_perframe_bundle)
    a = seg.step(clip_frames[3]).labels
    seg.step(clip_frames[0])
    np.testing.assert_array_equal(seg.step(clip_frames[3]).labels, a)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10, 4), np.uint8),
        [[0, 0, 0]],
    ],  # fmt: skip
)
def test_bad_frames_rejected(tiny_bundle: Path, frame) -> None:
    with pytest.raises(FrameError, match=r"\(H, W, 3\) uint8"):
        Segmenter(tiny_bundle).step(frame)


def test_state_shape_mismatch_is_a_load_error(tiny_bundle: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad.vidseg"
    shutil.copytree(tiny_bundle, bad)
    raw = json.loads((bad / "manifest.json").read_text())
    raw["state"][0]["shape"] = [16, 8, 12]
    (bad / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(StateSpecError, match="h8_in.*manifest says"):
        Segmenter(bad)
    raw["state"][0]["shape"] = [32, 8, 12]
    raw["state"][0]["input"] = "memory_in"
    (bad / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(StateSpecError, match="memory_in"):
        Segmenter(bad)


def test_engine_never_imports_torch(tiny_bundle: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from vidseg.engine import Segmenter\n"
        "import vidseg.engine.cli, vidseg.engine.pipeline, vidseg.engine.video\n"
        f"Segmenter({str(tiny_bundle)!r}).step(np.zeros((64, 96, 3), np.uint8))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'vidseg') and "
        "(m.startswith('torch') or m.startswith(('vidseg.models', 'vidseg.export'))))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    engine = Path(__file__).resolve().parents[2] / "engine"
    forbidden = re.compile(r"^\s*(import|from)\s+(torch|vidseg\.models|vidseg\.export)\b", re.M)
    for path in engine.rglob("*.py"):
        assert not forbidden.search(path.read_text()), f"{path} imports torch/models/export"
