"""benchmarks.scale_views: mirrored views undone, rows scored, bad input one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import scale_views  # noqa: E402
from scale_views import combinations, view_probs, view_size  # noqa: E402

from vidseg.export.cli import load_checkpoint  # noqa: E402


def test_view_size_rounds_to_the_stride() -> None:
    assert view_size((352, 480), 1.25, 32) == (448, 608)
    assert view_size((64, 96), 0.1, 32) == (32, 32)


def test_rows() -> None:
    rows = combinations([1.0, 1.5], flip=True)
    assert rows["1.5 mirrored"] == [(1.5, True)]
    assert rows["1 + mirror"] == [(1.0, False), (1.0, True)]
    assert len(rows["all views"]) == 4 and "all views at s >= 1" not in rows
    assert len(combinations([0.75, 1.0], flip=True)["all views at s >= 1"]) == 2


def test_a_mirrored_view_is_mirrored_back(tiny_perframe_checkpoint: Path, sample_clip) -> None:
    from vidseg.engine.video import read_frames

    model, _ = load_checkpoint(tiny_perframe_checkpoint)
    image = next(iter(read_frames(sample_clip, size=(96, 64), max_frames=1))).image
    views = [(1.0, False), (1.0, True)]
    plain = view_probs(model, image, views, (64, 96))
    mirror = view_probs(model, np.ascontiguousarray(image[:, ::-1]), views, (64, 96))
    assert torch.allclose(plain[(1.0, True)], mirror[(1.0, False)].flip(3), atol=1e-5)
    assert not torch.allclose(plain[(1.0, False)], plain[(1.0, True)], atol=1e-3)


def test_cli_scores_the_rows_and_rejects_a_recurrent_model(
    tiny_perframe_checkpoint: Path, tiny_checkpoint: Path, camvid: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rows.json"
    assert (
        scale_views.main(
            [
                "--checkpoint",
                str(tiny_perframe_checkpoint),
                "--data",
                str(camvid),
                "--scales",
                "1",
                "1.5",
                "--flip",
                "--limit",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert set(rows) == {
        "1",
        "1 mirrored",
        "1.5",
        "1.5 mirrored",
        "1 + mirror",
        "1.5 + mirror",
        "all views",
    }
    for r in rows.values():
        assert 0 <= r["miou"] <= 100 and len(r["iou"]) == 11 and 0 <= r["trimap_iou"] <= 100
        assert 0 <= r["excess_flicker"] <= r["flicker"]
    proc = subprocess.run(
        [
            sys.executable,
            scale_views.__file__,
            "--checkpoint",
            str(tiny_checkpoint),
            "--data",
            str(camvid),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "carries state" in proc.stderr
