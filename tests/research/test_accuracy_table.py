"""The accuracy table: rows trained, exported and scored with one budget, resumable, written
between the markers of a markdown file."""

from __future__ import annotations

import json
from pathlib import Path

import accuracy_table


def test_table_rows_resume_and_markdown(camvid: Path, tmp_path: Path, capsys) -> None:
    doc = tmp_path / "accuracy.md"
    doc.write_text(
        "# Accuracy\n\nintro\n\n<!-- accuracy-table:start -->\nold\n"
        "<!-- accuracy-table:end -->\n\nafter\n"
    )
    args = [
        "--data",
        str(camvid),
        "--runs",
        str(tmp_path / "runs"),
        "--steps",
        "2",
        "--only",
        "recurrent",
        "perframe",
        "--write",
        str(doc),
        "--",
        "--input-size",
        "64",
        "96",
        "--crop",
        "64",
        "96",
        "--batch",
        "1",
        "--seq-len",
        "2",
        "--limit",
        "4",
        "--scratch",
    ]
    assert accuracy_table.main(args) == 0
    table = json.loads((tmp_path / "runs" / "table.json").read_text())
    assert set(table) == {"recurrent", "perframe"}
    for row in table.values():
        assert row["steps"] == 2 and row["input_size"] == [64, 96]
        assert 0 <= row["miou"] <= 100 and 0 <= row["miou_reset"] <= 100
        assert row["params_m"] > 0 and row["cpu_ms_p50"] > 0
    assert (tmp_path / "runs" / "recurrent" / "bundle.vidseg" / "encode.onnx").is_file()
    text = doc.read_text()
    assert text.startswith("# Accuracy\n\nintro\n") and text.endswith("\n\nafter\n")
    assert "old" not in text and "| recurrent | recurrent-lite0-gru |" in text
    # resumable: a second run trains and exports nothing again
    ckpt = tmp_path / "runs" / "recurrent" / "last.pt"
    stamp = ckpt.stat().st_mtime_ns
    bundle_stamp = (tmp_path / "runs" / "recurrent" / "bundle.vidseg").stat().st_mtime_ns
    assert accuracy_table.main(args) == 0
    assert ckpt.stat().st_mtime_ns == stamp
    assert (tmp_path / "runs" / "recurrent" / "bundle.vidseg").stat().st_mtime_ns == bundle_stamp
    assert "recurrent" in capsys.readouterr().out


def test_tiles_row_exports_the_perframe_runs_weights(camvid: Path, tmp_path: Path) -> None:
    """A row with ``weights_of`` trains nothing of its own: it exports the other row's
    checkpoint (training it first if needed) with its export flags."""
    runs = tmp_path / "runs"
    args = [
        "--data",
        str(camvid),
        "--runs",
        str(runs),
        "--steps",
        "2",
        "--only",
        "tiles",
        "--",
        "--input-size",
        "64",
        "96",
        "--crop",
        "64",
        "96",
        "--batch",
        "1",
        "--limit",
        "4",
        "--scratch",
    ]
    assert accuracy_table.main(args) == 0
    assert (runs / "perframe" / "last.pt").is_file() and not (runs / "tiles" / "last.pt").exists()
    manifest = json.loads((runs / "tiles" / "bundle.vidseg" / "manifest.json").read_text())
    assert manifest["family"] == "recurrent" and manifest["train"]["tiles"]["grid"] == [2, 2]
    row = json.loads((runs / "table.json").read_text())["tiles"]
    assert row["flags"] == "export --tiles 2x2" and row["input_size"] == [96, 128]
    assert row["params_m"] > 0
