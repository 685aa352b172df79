"""benchmarks/research/crisp_figure.py: the side-by-side figure, and a bundle without logits."""

from __future__ import annotations

from pathlib import Path


def test_crisp_figure(tiny_bundle: Path, sample_clip: Path, tmp_path: Path, capsys) -> None:
    import shutil

    import crisp_figure
    import cv2

    from vidseg.export.logits import add_logits

    with_logits = tmp_path / "l.vidseg"
    shutil.copytree(tiny_bundle, with_logits)
    add_logits(with_logits)
    out = tmp_path / "fig.png"
    args = [str(sample_clip), str(out), "--frame", "2", "--crop", "10,20,64,32", "--zoom", "2"]
    assert crisp_figure.main([*args, "--model", str(with_logits)]) == 0
    assert cv2.imread(str(out)).shape == (64, 2 * 128 + 8, 3)
    assert crisp_figure.main([*args, "--model", str(tiny_bundle)]) == 1
    assert "has no logits output" in capsys.readouterr().err
