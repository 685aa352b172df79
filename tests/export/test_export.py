"""Export: ONNX vs torch parity over real frames with state carried, and the CLI's failure modes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vidseg.engine.bundle import load_bundle
from vidseg.engine.errors import ParityError
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.video import read_frames
from vidseg.export.cli import parity_frames
from vidseg.export.parity import check_parity, require_parity

SIZE = (64, 96)


@pytest.fixture(scope="module")
def frames(sample_clip: Path) -> list[np.ndarray]:
    return parity_frames(sample_clip, SIZE, 24)


def test_graph_contract(tiny_bundle: Path) -> None:
    graph = onnx.load(str(tiny_bundle / "step.onnx"))
    inputs = {i.name: i.type.tensor_type for i in graph.graph.input}
    outputs = {o.name: o.type.tensor_type for o in graph.graph.output}
    assert list(inputs) == ["frame", "h8_in", "h16_in", "h32_in"]
    assert list(outputs) == ["labels", "h8_out", "h16_out", "h32_out"]
    assert inputs["frame"].elem_type == onnx.TensorProto.UINT8
    assert outputs["labels"].elem_type == onnx.TensorProto.UINT8
    dims = lambda t: [d.dim_param or d.dim_value for d in t.shape.dim]  # noqa: E731
    assert dims(inputs["frame"]) == ["batch", 64, 96, 3]
    assert dims(inputs["h16_in"]) == ["batch", 64, 4, 6]  # full fixed shape, batch dynamic
    assert dims(outputs["h16_out"]) == ["batch", 64, 4, 6]


def test_parity_over_frames_with_state_and_reset(tiny_bundle, frames, tiny_model_factory):
    report = check_parity(tiny_model_factory(), tiny_bundle / "step.onnx", frames, resets=(12,))
    assert report.frames == 24 and report.passed, report.summary()
    assert report.label_agreement >= 0.999
    assert report.max_state_diff <= 1e-3 and report.max_logit_diff <= 1e-3


def test_parity_catches_a_wrong_graph(tiny_bundle, frames, tiny_model_factory) -> None:
    """A graph from other weights must fail: the check can fail."""
    report = check_parity(tiny_model_factory(seed=1), tiny_bundle / "step.onnx", frames[:4])
    assert not report.passed
    with pytest.raises(ParityError, match="parity failed"):
        require_parity(report)


def test_export_cli_writes_a_loadable_bundle(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.vidseg"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseg.export.cli",
            str(tiny_checkpoint),
            "--out",
            str(out),
            "--parity-frames",
            "20",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "parity over 20 frames" in proc.stdout
    manifest = load_bundle(out).manifest
    assert manifest.family == "recurrent" and "CC BY-NC" in manifest.train["dataset"]
    assert manifest.train["pretrained"] == "ImageNet (test)"  # from the checkpoint
    assert not (tmp_path / "m.vidseg.partial").exists()


def test_export_cli_input_size_reexports_the_weights(tiny_checkpoint, tmp_path, sample_clip):
    """--input-size: the trained weights at another size, parity-checked and runnable; a size
    the encoder cannot take is one line, no bundle."""
    from vidseg.export import cli

    out = tmp_path / "big.vidseg"
    assert (
        cli.main(
            [
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--input-size",
                "96x128",
                "--parity-frames",
                "4",
            ]
        )
        == 0
    )
    manifest = load_bundle(out).manifest
    assert (manifest.input.height, manifest.input.width) == (96, 128)
    assert manifest.train["trained_input_size"] == [64, 96]
    seg = Segmenter(out)
    frame = next(iter(read_frames(sample_clip, max_frames=1))).image
    assert seg.step(frame).labels.shape == frame.shape[:2]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseg.export.cli",
            str(tiny_checkpoint),
            "--out",
            str(tmp_path / "odd.vidseg"),
            "--input-size",
            "100x128",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "needs multiples of 32 (e.g. 96x128)" in proc.stderr
    assert not (tmp_path / "odd.vidseg").exists()


def test_export_cli_errors(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "vidseg.export.cli"]
    missing = subprocess.run(
        [*cmd, str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 3 and "checkpoint not found" in missing.stderr
    junk = tmp_path / "junk.pt"
    torch.save({"hello": 1}, junk)
    bad = subprocess.run(
        [*cmd, str(junk), "--out", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert bad.returncode == 3 and "not a vidseg-train checkpoint" in bad.stderr
    for proc in (missing, bad):
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()


def test_export_cli_parity_failure_leaves_no_bundle(tiny_checkpoint, tmp_path, monkeypatch):
    from vidseg.export import cli

    monkeypatch.setattr("vidseg.export.parity.MAX_ABS_DIFF", -1.0)  # nothing can pass
    code = cli.main(
        [str(tiny_checkpoint), "--out", str(tmp_path / "x.vidseg"), "--parity-frames", "4"]
    )
    assert code == 7
    assert not (tmp_path / "x.vidseg").exists() and not (tmp_path / "x.vidseg.partial").exists()


def test_scores_output_end_to_end(tiny_checkpoint: Path, tmp_path: Path, sample_clip) -> None:
    """`vidseg-export --scores`: the graph outputs 255 x max softmax; the engine returns it at
    the frame's size, and it agrees with a softmax of torch's logits."""
    from vidseg.engine import Segmenter
    from vidseg.engine.video import read_frames
    from vidseg.export import cli
    from vidseg.export.cli import load_checkpoint
    from vidseg.export.onnx import FrameGraph

    out = tmp_path / "s.vidseg"
    assert (
        cli.main([str(tiny_checkpoint), "--out", str(out), "--parity-frames", "4", "--scores"]) == 0
    )
    manifest = load_bundle(out).manifest
    assert [(o.name, o.role) for o in manifest.outputs] == [
        ("labels", "labels"),
        ("scores", "scores"),
    ]
    frames = [f.image for f in read_frames(sample_clip, size=(96, 64), max_frames=3)]
    seg = Segmenter(out)
    model, _ = load_checkpoint(tiny_checkpoint)
    graph = FrameGraph(model, with_logits=True).eval()
    state: tuple = ()
    for frame in frames:
        result = seg.step(frame)
        with torch.no_grad():
            _, *rest = graph(torch.from_numpy(frame[None]), *state)
        state, logits = tuple(rest[:-1]), rest[-1]
        want = torch.softmax(logits, 1).amax(1)[0].numpy() * 255
        assert result.scores is not None and result.scores.shape == frame.shape[:2]
        assert np.abs(result.scores.astype(float) - want).max() <= 1.0


@pytest.mark.parametrize(
    ("name", "stride"),
    [
        ("keyframe-lite0-c2", 1),
        ("netwarp-lite0", 1),
        ("keyframe-lite0-c2", 4),
        ("netwarp-lite0", 2),
    ],
)
def test_scores_for_keyframe_and_netwarp(
    name: str, stride: int, tiny_model_factory, frames, tmp_path
) -> None:
    """Both multi-input families export the confidence too (and take a label stride): the
    engine's ``Result.scores`` follow torch's softmax over a stream with key and current frames
    / flow carried, at the frame's size."""
    import cv2

    from vidseg.engine import Segmenter
    from vidseg.engine.schedule import Schedule
    from vidseg.export.cli import CAMVID
    from vidseg.export.onnx import FrameGraph, RoleGraph, model_manifest
    from vidseg.export.parity import export_bundle, stream_aux

    model, out, clip = tiny_model_factory(name), tmp_path / "b.vidseg", frames[:6]
    if name.startswith("keyframe"):
        manifest = model_manifest(model, CAMVID, {}, scores=True, label_stride=stride)
        export_bundle(model, out, manifest, clip, intervals=(2,))
        seg = Segmenter(out, schedule=Schedule("fixed", 2))
        key = RoleGraph(model, with_scores=True, label_stride=stride, role="key")
        current = RoleGraph(model, with_scores=True, label_stride=stride, role="current")
        cache: list = []

        def reference(i: int, x: torch.Tensor) -> torch.Tensor:
            nonlocal cache
            if i % 2 == 0:
                _, *cache, scores = key(x)
                return scores
            return current(x, *cache)[1]
    else:
        manifest = model_manifest(model, CAMVID, {}, scores=True, label_stride=stride)
        export_bundle(model, out, manifest, clip)
        seg = Segmenter(out)
        graph = FrameGraph(model, with_scores=True, label_stride=stride)
        spec = model.flow_spec
        flows = [torch.from_numpy(f[spec.name]) for f in stream_aux([spec], clip)]
        state = [s for s in model.initial_state(1, *SIZE)]

        def reference(i: int, x: torch.Tensor) -> torch.Tensor:
            nonlocal state
            _, *rest = graph(x, flows[i], *state)
            state = rest[:-1]
            return rest[-1]

    outputs = load_bundle(out).manifest.outputs
    assert [(o.role, o.stride) for o in outputs] == [("labels", stride), ("scores", stride)]
    for i, frame in enumerate(clip):
        result = seg.step(frame)
        with torch.no_grad():
            want = reference(i, torch.from_numpy(frame[None]))[0].numpy()
        assert want.shape == (SIZE[0] // stride, SIZE[1] // stride)
        want = cv2.resize(want, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_LINEAR)
        assert result.key_frame == (i % 2 == 0 or not name.startswith("keyframe"))
        assert result.scores is not None and result.scores.shape == frame.shape[:2]
        assert np.abs(result.scores.astype(float) - want).max() <= 1.0, f"frame {i}"


def test_label_stride_end_to_end(
    tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path, sample_clip
) -> None:
    """`vidseg-export --label-stride 4`: labels leave the graph at 1/4 of the input (no full-size
    upsampling or arg-max), parity holds at that size, and the engine still returns labels at
    the frame's size: the graph's labels taken by nearest neighbour. A manifest that disagrees
    with the graph's labels size is refused by name."""
    import cv2

    from vidseg.engine import Segmenter
    from vidseg.engine.errors import BundleError
    from vidseg.engine.video import read_frames
    from vidseg.export import cli
    from vidseg.export.parity import cpu_session

    out = tmp_path / "s4.vidseg"
    assert (
        cli.main(
            [
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--parity-frames",
                "4",
                "--label-stride",
                "4",
                "--scores",
            ]
        )
        == 0
    )
    manifest = load_bundle(out).manifest
    assert manifest.labels_size == (16, 24)
    assert {o.role: o.stride for o in manifest.outputs} == {"labels": 4, "scores": 4}
    graph = onnx.load(str(out / "step.onnx"))
    dims = {
        o.name: [d.dim_value for d in o.type.tensor_type.shape.dim[1:]] for o in graph.graph.output
    }
    assert dims["labels"] == dims["scores"] == [16, 24]
    full = onnx.load(str(tiny_bundle / "step.onnx"))  # the same model at label stride 1
    resizes = [sum(n.op_type == "Resize" for n in g.graph.node) for g in (graph, full)]
    assert resizes[0] == resizes[1] - 1  # no full-size upsampling before the arg-max
    frames = [f.image for f in read_frames(sample_clip, max_frames=3)]
    seg, session = Segmenter(out), cpu_session(out / "step.onnx")
    state = {s.input: np.zeros((1, *s.shape), np.float32) for s in manifest.state}
    names = [o.name for o in session.get_outputs()]
    for frame in frames:
        result = seg.step(frame)
        x = cv2.resize(frame, (96, 64), interpolation=cv2.INTER_LINEAR)[None]
        values = dict(zip(names, session.run(names, {"frame": x, **state})))
        state = {s.input: values[s.output] for s in manifest.state}
        want = cv2.resize(values["labels"][0], frame.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        assert result.labels.shape == result.scores.shape == frame.shape[:2]
        np.testing.assert_array_equal(result.labels, want)
    raw = json.loads((out / "manifest.json").read_text())
    raw["outputs"][0]["stride"] = 2
    (out / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(
        BundleError,
        match=r"output 'labels' is \[16, 24\], the manifest says "
        r"\[32, 48\]",
    ):
        Segmenter(out)
