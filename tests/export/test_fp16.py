"""fp16 bundles: float16 inside, the manifest's I/O types kept, labels agreeing with fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.video import read_frames
from vidseg.export import cli


@pytest.mark.parametrize("name", ["tiny_bundle", "tiny_split_bundle"])
def test_fp16_bundle_keeps_io_and_agrees_with_fp32(
    name: str, request, sample_clip: Path, tmp_path: Path
) -> None:
    src = request.getfixturevalue(name)
    out = tmp_path / "half.vidseg"
    assert cli.main([str(src), "--fp16", "--out", str(out), "--parity-frames", "8"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train"]["fp16"]["label_agreement"] >= 0.98
    for graph in manifest["graphs"].values():
        before, after = onnx.load(str(src / graph)), onnx.load(str(out / graph))
        halves = [t for t in after.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
        assert len(halves) > 10, f"{graph}: weights not converted"

        def io(m):
            return [
                (v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)
            ]

        assert io(before) == io(after)  # uint8 frame/labels, float32 state and features
    # through the engine: state carried, labels agree with the fp32 bundle frame by frame
    frames = [f.image for f in read_frames(sample_clip, max_frames=12)]
    a, b = Segmenter(src), Segmenter(out)
    agree = [float((a.step(f).labels == b.step(f).labels).mean()) for f in frames]
    assert min(agree) >= 0.95 and np.mean(agree) >= 0.98, agree
    assert b.state.tensors and all(v.dtype == np.float32 for v in b.state.tensors.values())


def test_fp16_refuses_an_existing_output(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "x").mkdir()
    assert cli.main([str(tiny_bundle), "--fp16", "--out", str(tmp_path / "x")]) == 3
    assert capsys.readouterr().err.count("\n") == 1


def test_fp16_from_a_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Exported in float32 (parity with torch), then converted: one bundle, fp16 inside, with
    the logits asked for; nothing left beside it."""
    out = tmp_path / "half.vidseg"
    assert (
        cli.main(
            [
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--fp16",
                "--logits",
                "--label-stride",
                "4",
                "--parity-frames",
                "6",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train"]["fp16"]["label_agreement"] >= 0.98
    assert {o["role"] for o in manifest["outputs"]} == {"labels", "logits"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.vidseg"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--wrap", "m.onnx", "--classes", "a,b"], "--fp16 converts"),
        (["--add-logits"], "no --out, --logits, --split, --fp16"),
    ],
)
def test_fp16_usage_errors(tiny_bundle: Path, tmp_path: Path, capsys, extra, message) -> None:
    args = [] if "--wrap" in extra else [str(tiny_bundle)]
    out = [] if "--add-logits" in extra else ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--fp16", *out, *extra])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
