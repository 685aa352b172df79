"""benchmarks/research/refresh_sweep.py: its rules and orders, and a cell scored as vidseg-eval
scores it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import refresh_sweep

from vidseg.benchmarks import evaluate
from vidseg.engine.refresh import Refresh


def test_rules_and_orders_parse() -> None:
    assert refresh_sweep.parse_rule("off") == (Refresh.off(), True, True)
    assert refresh_sweep.parse_rule("reset") == (Refresh.off(), False, False)
    assert refresh_sweep.parse_rule("default") == (Refresh(), True, True)
    assert refresh_sweep.parse_rule("gap=0.3") == (Refresh(0.3, None), True, True)
    assert refresh_sweep.parse_rule("mismatch=0.1") == (Refresh(None, 0.1), False, True)
    assert refresh_sweep.parse_rule("gap=1,mismatch=0.1") == (Refresh(1.0, 0.1), True, True)
    with pytest.raises(ValueError):
        refresh_sweep.parse_rule("fast=1")
    assert refresh_sweep.parse_order("4") == (4, None)
    assert refresh_sweep.parse_order("s3") == (1, 3)


def test_a_cell_is_what_vidseg_eval_gives(
    tiny_bundle: Path, camvid: Path, tmp_path: Path, capsys
) -> None:
    frames, labels = tmp_path / "f", tmp_path / "l"
    frames.mkdir()
    labels.mkdir()
    for src in sorted((camvid / "val").glob("*.png"))[:6]:
        shutil.copy(src, frames / src.name)
        shutil.copy(camvid / "valannot" / src.name, labels / src.name)
    common = ["--model", str(tiny_bundle), "--frames", str(frames), "--labels", str(labels)]
    assert refresh_sweep.main([*common, "--orders", "s1", "--rules", "off", "reset"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    out = tmp_path / "e.json"
    assert (
        evaluate.main(
            [
                *common,
                "--shuffle",
                "1",
                "--frame-rate",
                "15",
                "--no-refresh",
                "--json",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    assert rows[0]["miou"] == json.loads(out.read_text())["miou"]
    assert evaluate.main([*common, "--reset-every-frame", "--json", str(out), "-q"]) == 0
    assert rows[1]["miou"] == json.loads(out.read_text())["miou"]
