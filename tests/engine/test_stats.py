"""vidseg-bench's percentiles carry min and p95 (as ONNX Runtime's perf test reports them)."""

from __future__ import annotations

import numpy as np
import pytest

from vidseg.engine.stats import percentiles


def test_percentiles_min_p95() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0]
    got = percentiles(values)
    assert list(got) == ["min", "p50", "p90", "p95", "p99", "max", "mean", "n"]
    assert got["min"] == 1.0 and got["max"] == 100.0 and got["n"] == 6
    assert got["p95"] == pytest.approx(np.percentile(values, 95), abs=1e-3)
    assert got["min"] <= got["p50"] <= got["p90"] <= got["p95"] <= got["p99"] <= got["max"]
