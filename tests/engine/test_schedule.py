"""Key-frame scheduling policies."""

from __future__ import annotations

import numpy as np
import pytest

from vidseg.engine.errors import BundleError
from vidseg.engine.schedule import KeyFrameScheduler, Schedule


def _run(scheduler: KeyFrameScheduler, frames, cost_ms=lambda key: 10.0) -> list[bool]:
    keys = []
    for frame in frames:
        key = scheduler.is_key(frame)
        scheduler.record(key, cost_ms(key))
        keys.append(key)
    return keys


FLAT = [np.full((48, 64, 3), 100, np.uint8)] * 12


@pytest.mark.parametrize("interval", [2, 5])
def test_fixed_interval(interval: int) -> None:
    keys = _run(KeyFrameScheduler(Schedule("fixed", interval)), FLAT)
    assert [i for i, k in enumerate(keys) if k] == list(range(0, 12, interval))


def test_reset_forces_a_key_frame() -> None:
    s = KeyFrameScheduler(Schedule("fixed", 5))
    _run(s, FLAT[:3])
    s.reset()
    assert s.is_key(FLAT[0])


def test_adaptive_keys_on_a_cut_only() -> None:
    cut = [np.full((48, 64, 3), 100, np.uint8)] * 5 + [np.full((48, 64, 3), 200, np.uint8)] * 5
    keys = _run(KeyFrameScheduler(Schedule("adaptive", 5, threshold=0.1, max_interval=30)), cut)
    assert [i for i, k in enumerate(keys) if k] == [0, 5]


def test_adaptive_max_interval() -> None:
    keys = _run(KeyFrameScheduler(Schedule("adaptive", 2, threshold=0.5, max_interval=4)), FLAT)
    assert [i for i, k in enumerate(keys) if k] == [0, 4, 8]


def test_deadline_postpones_expensive_keys_and_catches_up() -> None:
    # key frames cost 30 ms against a 20 ms budget; current frames 8 ms (12 ms credit each)
    sched = Schedule("deadline", interval=2, budget_ms=20.0, max_interval=6)
    keys = _run(KeyFrameScheduler(sched), FLAT, cost_ms=lambda key: 30.0 if key else 8.0)
    # due at 2 (credit 12 >= overrun 10): key. Same rhythm afterwards.
    assert [i for i, k in enumerate(keys) if k] == [0, 2, 4, 6, 8, 10]
    tight = Schedule("deadline", interval=2, budget_ms=20.0, max_interval=6)
    keys = _run(KeyFrameScheduler(tight), FLAT, cost_ms=lambda key: 60.0 if key else 18.0)
    # overrun 40 needs 20 credit-frames of 2 ms: never affordable -> catch-up at max_interval
    assert [i for i, k in enumerate(keys) if k] == [0, 6]


def test_schedule_validation() -> None:
    assert Schedule.from_manifest({"policy": "fixed", "interval": 3}).interval == 3
    with pytest.raises(BundleError, match="unknown keys"):
        Schedule.from_manifest({"policy": "fixed", "speed": 3})
    with pytest.raises(BundleError, match="policy must be one of"):
        Schedule.from_manifest({"policy": "sometimes"})
    with pytest.raises(BundleError, match="budget_ms"):
        Schedule.from_manifest({"policy": "deadline"})
