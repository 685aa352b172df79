"""Segmenter vs a plain reference loop, state handling, input checks, torch-free engine."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from vidseg.engine import FrameError, Segmenter, StateSpecError
from vidseg.engine.frame import Frame
from vidseg.engine.multistream import MultiStreamSegmenter
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
    ],
)
def test_bad_frames_rejected(tiny_bundle: Path, frame) -> None:
    with pytest.raises(FrameError, match=r"\(H, W, 3\) uint8"):
        Segmenter(tiny_bundle).step(frame)


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop"])
@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (0, 0, 3)])
def test_empty_frames_rejected_in_every_resize_mode(
    tiny_bundle: Path, resize: str, shape: tuple[int, ...]
) -> None:
    """A frame without pixels is a one-line FrameError on every way in (it was a cv2.error,
    or a ValueError from the letterbox/crop geometry)."""
    seg = Segmenter(tiny_bundle, resize=resize, warmup=False)
    for call in (seg.step, seg.prepare):
        with pytest.raises(FrameError, match=r"H, W >= 1, got uint8 \(\d+, \d+, 3\)") as caught:
            call(np.zeros(shape, np.uint8))
        assert "\n" not in str(caught.value)
    assert seg.stats().frames == 0
    if resize == "stretch":  # the multi-stream batch checks its frames the same way
        multi = MultiStreamSegmenter(tiny_bundle, streams=2, warmup=False)
        with pytest.raises(FrameError, match=r"H, W >= 1"):
            multi.step([np.zeros((4, 4, 3), np.uint8), np.zeros(shape, np.uint8)])


def _state(seg: Segmenter) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in seg.state.tensors.items()}


def test_step_resets_on_a_new_frame_size(
    tiny_bundle: Path, clip_frames, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream that changes resolution is a new scene for ``step`` too (only vidseg-run's
    pipeline reset before): logged once, counted, and the frame after the change runs on a
    fresh state."""
    small = [cv2.resize(f, (480, 270)) for f in clip_frames[3:6]]
    seg, fresh = Segmenter(tiny_bundle), Segmenter(tiny_bundle)
    for frame in clip_frames[:3]:
        seg.step(frame)
    with caplog.at_level(logging.INFO, logger="vidseg.engine"):
        got = [seg.step(f).labels for f in small]
    want = [fresh.step(f).labels for f in small]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    for name, value in _state(fresh).items():
        np.testing.assert_allclose(_state(seg)[name], value, atol=1e-6)
    assert seg.cut_resets == 1 and seg.stats().resets == 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["frame 3: frame size changed from 960x540 to 480x270; state reset"], lines
    seg.reset()  # a reset by hand forgets the size: the next frame is not a cut
    seg.step(clip_frames[0])
    assert seg.cut_resets == 1


def test_stream_resets_at_a_discontinuity_and_a_new_size(tiny_bundle: Path, clip_frames) -> None:
    """``stream`` honours ``Frame.discontinuity`` (a reconnected source) and size changes as
    the pipeline does: each part segments like a fresh stream of its own."""
    tb = Fraction(1, 25)
    big = [Frame(f, i, i, tb) for i, f in enumerate(clip_frames[:6])]
    big[3] = replace(big[3], discontinuity=True)
    small = [
        Frame(cv2.resize(f, (320, 180)), 6 + i, 6 + i, tb) for i, f in enumerate(clip_frames[6:9])
    ]
    seg = Segmenter(tiny_bundle)
    got = [r.labels for r in seg.stream(big + small)]
    parts = [big[:3], big[3:], small]
    want = [r.labels for part in parts for r in Segmenter(tiny_bundle).stream(part)]
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {i}")
    assert seg.cut_resets == 2 and seg.stats().resets == 2


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
