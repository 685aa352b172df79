"""int8 bundles: QDQ-quantized graphs, the manifest's I/O kept, calibrated on what the engine
feeds each graph, labels agreeing with the float bundle through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.video import read_frames
from vidseg.export import cli
from vidseg.export.int8 import record_feeds


def _io(model: onnx.ModelProto) -> list[tuple[str, int, list]]:
    return [
        (
            v.name,
            v.type.tensor_type.elem_type,
            [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
        )
        for v in (*model.graph.input, *model.graph.output)
    ]


@pytest.mark.parametrize("name", ["tiny_bundle", "tiny_split_bundle", "tile_bundle"])
def test_int8_bundle_keeps_io_and_agrees_with_float(
    name: str, request, sample_clip: Path, tmp_path: Path
) -> None:
    """Recurrent, split (encode + step) and tile-memory bundles (aux inputs flow, tile cycle
    and view): every graph quantized (QDQ, int8 weights), its I/O as before, run by the
    engine with state carried, labels close to the float bundle's."""
    src = request.getfixturevalue(name)
    out = tmp_path / "q.vidseg"
    args = [str(src), "--int8", "--calibration", str(sample_clip), "--calibration-frames", "6"]
    assert cli.main([*args, "--out", str(out), "--parity-frames", "8"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["train"]["int8"]
    assert record["calibration"] == {"source": str(sample_clip), "frames": 6}
    assert record["frames"] == 8 and record["float_convs"] == 0
    assert record["label_agreement"] >= 0.98, record
    for graph in manifest["graphs"].values():
        before, after = onnx.load(str(src / graph)), onnx.load(str(out / graph))
        ops = [n.op_type for n in after.graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, graph
        weights = [t for t in after.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        assert len(weights) >= 5, f"{graph}: weights not quantized"
        assert _io(before) == _io(after)  # names, dtypes and shapes
        # the recurrent path stays in float: the state is not requantized every frame
        state = {s["input"] for s in manifest["state"]}
        assert not [
            n for n in after.graph.node if n.op_type == "QuantizeLinear" and state & set(n.input)
        ]
    # through the engine: state carried, labels agree with the float bundle frame by frame,
    # and logits stay close (the untrained tile model's labels are one class everywhere)
    frames = [f.image for f in read_frames(sample_clip, max_frames=10)]
    a, b = Segmenter(src), Segmenter(out)
    agree, logits_error = [], []
    for frame in frames:
        fa, fb = a.step(frame), b.step(frame)
        agree.append(float((fa.labels == fb.labels).mean()))
        if fa.outputs.logits is not None:
            diff = np.abs(fa.outputs.logits - fb.outputs.logits).mean()
            logits_error.append(float(diff / fa.outputs.logits.std()))
    assert np.mean(agree) >= 0.98, agree
    assert max(logits_error, default=0.0) < 0.02, logits_error
    assert all(v.dtype == np.float32 and v.any() for v in b.state.tensors.values())


def test_calibration_records_what_the_engine_feeds(tile_bundle: Path, sample_clip: Path) -> None:
    """Every call of the graph, in order: the tile view, flow and tile cycle the engine
    computed, and the state the previous call wrote."""
    frames = [f.image for f in read_frames(sample_clip, max_frames=3)]
    feeds = record_feeds(tile_bundle, frames)["step"]
    seg = Segmenter(tile_bundle, warmup=False)
    assert len(feeds) == 3 and set(feeds[0]) == {"view", "flow", "tile", "memory_in"}
    for i, frame in enumerate(frames):
        assert np.array_equal(feeds[i]["memory_in"], seg.state.tensors["memory_in"])
        seg.step(frame)
    assert not feeds[0]["memory_in"].any() and feeds[2]["memory_in"].any()
    assert not np.array_equal(feeds[1]["tile"], feeds[2]["tile"])  # the cycle moved on


def test_int8_from_a_checkpoint_with_float_convs(
    tiny_checkpoint: Path, sample_clip: Path, tmp_path: Path
) -> None:
    """Exported in float32 (parity with torch), then quantized, calibrated on a folder of
    frames; the first two convolutions stay in float; nothing left beside the bundle."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in read_frames(sample_clip, max_frames=5):
        cv2.imwrite(str(frames / f"{f.index:04d}.png"), f.image[:, :, ::-1])
    out = tmp_path / "q.vidseg"
    args = ["--int8", "--calibration", str(frames), "--int8-float-convs", "2"]
    assert cli.main([str(tiny_checkpoint), "--out", str(out), *args, "--parity-frames", "6"]) == 0
    record = json.loads((out / "manifest.json").read_text())["train"]["int8"]
    assert record["calibration"]["frames"] == 5 and record["float_convs"] == 2
    model = onnx.load(str(out / "step.onnx"))
    made_by = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert [made_by.get(c.input[1]) for c in convs[:3]] == [None, None, "DequantizeLinear"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "q.vidseg"]


@pytest.mark.parametrize(
    "calibration, message",
    [
        ("empty", "no images in the folder"),
        ("junk.mp4", "calibration frames: cannot read"),
    ],
)
def test_int8_bad_calibration(
    tiny_bundle: Path, tmp_path: Path, capsys, calibration: str, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.mp4").write_text("not a video")
    out = tmp_path / "q.vidseg"
    args = [str(tiny_bundle), "--int8", "--calibration", str(tmp_path / calibration)]
    assert cli.main([*args, "--out", str(out)]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--int8 needs --calibration"),
        (["--calibration", "nowhere"], "--calibration: nowhere does not exist"),
        (["--calibration", ".", "--fp16"], "one conversion at a time"),
        (["--calibration", ".", "--calibration-frames", "0"], "--calibration-frames must be"),
        (["--calibration", ".", "--split"], "--int8 on a BUNDLE converts it as it is"),
    ],
)
def test_int8_usage_errors(tiny_bundle: Path, tmp_path: Path, capsys, extra, message) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(tiny_bundle), "--int8", "--out", str(tmp_path / "o"), *extra])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_int8_flags_need_int8(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(tiny_bundle), "--fp16", "--out", str(tmp_path / "o"), "--calibration", "."])
    assert exit_.value.code == 2 and "go with --int8" in capsys.readouterr().err
