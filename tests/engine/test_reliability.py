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
