"""Latency statistics shared by the engine's telemetry, ``vidseg-run`` and ``vidseg-bench``."""

from __future__ import annotations

from typing import Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def percentiles(values_ms: Sequence[float], qs: Sequence[int] = PERCENTILES) -> dict[str, float]:
    """min, ``p<q>`` for each q, max, mean (ms rounded to µs) and n of ``values_ms``; ``{}``
    when there are none."""
    if not len(values_ms):
        return {}
    a = np.asarray(values_ms, dtype=np.float64)
    out = {"min": float(a.min())} | {f"p{q}": float(v) for q, v in zip(qs, np.percentile(a, qs))}
    out |= {"max": float(a.max()), "mean": float(a.mean())}
    return {k: round(v, 3) for k, v in out.items()} | {"n": int(a.size)}
