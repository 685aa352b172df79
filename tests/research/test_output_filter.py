"""benchmarks/research/output_filter.py: the warp, the unfiltered row equal to vidseg-eval's."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from vidseg.benchmarks.accuracy import evaluate_bundle
from vidseg.engine import Segmenter
from vidseg.models.data import load_split

FRAMES = 6


def _root_with_labels(camvid: Path, root: Path, labels: list[np.ndarray]) -> Path:
    """A CamVid root whose val split is the first frames of the real one with ``labels``."""
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    for path, label in zip(sorted((camvid / "val").glob("*.png"))[:FRAMES], labels):
        shutil.copy(path, root / "val" / path.name)
        cv2.imwrite(str(root / "valannot" / path.name), label)
    return root


def test_output_filter_warp_and_its_unfiltered_row(
    tiny_bundle: Path, camvid: Path, tmp_path: Path, capsys
) -> None:
    """The output-filter probe: an integer flow shifts exactly; a = 0 scores exactly as
    vidseg-eval does (same frames, same bundle); bad input is one line, exit 1."""
    import output_filter

    from vidseg.export.logits import add_logits

    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    flow = np.zeros((2, 5, 7), np.float32)
    flow[0] = 2  # current(x, y) = previous(x + 2, y)
    maps = output_filter.sample_maps(flow)
    np.testing.assert_array_equal(output_filter.warp(x, maps)[:, :, :5], x[:, :, 2:])

    with_logits = tmp_path / "l.vidseg"
    shutil.copytree(tiny_bundle, with_logits)
    add_logits(with_logits)
    labels = load_split(camvid, "val", limit=FRAMES).labels
    root = _root_with_labels(camvid, tmp_path / "r", list(labels))
    shipped = evaluate_bundle(Segmenter(with_logits), load_split(root, "val"))
    plain, smooth = output_filter.filter_scores(Segmenter(with_logits), str(root), [0.0, 0.5])
    assert plain["miou"] == shipped.metrics.miou and plain["trimap_iou"] == shipped.trimap.miou
    assert (plain["flicker"], plain["excess_flicker"]) == (
        shipped.flicker.pred,
        shipped.flicker.excess,
    )
    assert smooth["alpha"] == 0.5 and smooth != plain

    args = ["--data", str(root), "--threads", "1"]
    assert output_filter.main([*args, "--model", str(tiny_bundle)]) == 1
    assert "no logits output" in capsys.readouterr().err
    assert output_filter.main([*args, "--model", str(with_logits), "--alpha", "1"]) == 1
    assert capsys.readouterr().err.strip().endswith("every value must be in [0, 1)")
    assert output_filter.main([*args, "--model", str(with_logits), "--alpha", "0"]) == 0
    assert f"| 0 | {shipped.metrics.miou:.2f} |" in capsys.readouterr().out
