"""``vidseg-export BUNDLE --triton REPO``: the model repository, its configs parsed by Triton's
own model-config protobuf (tritonclient), and the controlled step graph run on ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.bundle import Manifest, load_bundle
from vidseg.engine.video import read_frames
from vidseg.export.cli import main as export_main
from vidseg.export.triton import MANIFEST_PARAMETER, TritonOptions, export_triton


def parse_config(path: Path):
    """config.pbtxt parsed by tritonclient's ModelConfig (skips without the [triton] extra)."""
    pytest.importorskip("tritonclient.grpc", reason="needs the [triton] extra (tritonclient)")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_recurrent_bundle_config(tiny_bundle: Path, tmp_path: Path) -> None:
    export_triton(tiny_bundle, tmp_path, TritonOptions(name="seg", max_batch_size=4, instances=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]  # no staging left behind
    assert (tmp_path / "seg" / "1" / "model.onnx").is_file()
    config = parse_config(tmp_path / "seg" / "config.pbtxt")
    manifest = load_bundle(tiny_bundle).manifest
    assert config.backend == "onnxruntime" and config.max_batch_size == 4
    assert [i.name for i in config.input] == ["frame"]
    assert list(config.input[0].dims) == [manifest.input.height, manifest.input.width, 3]
    assert [o.name for o in config.output] == [o.name for o in manifest.outputs]
    seq = config.sequence_batching
    assert seq.WhichOneof("strategy_choice") == "oldest"
    assert seq.oldest.max_candidate_sequences == 64
    kinds = {c.name: c.control[0].kind for c in seq.control_input}
    pb = type(seq.control_input[0].control[0])
    assert kinds == {
        "START": pb.CONTROL_SEQUENCE_START,
        "READY": pb.CONTROL_SEQUENCE_READY,
        "END": pb.CONTROL_SEQUENCE_END,
        "CORRID": pb.CONTROL_SEQUENCE_CORRID,
    }
    assert [(s.input_name, s.output_name, tuple(s.dims)) for s in seq.state] == [
        (s.input, s.output, s.shape) for s in manifest.state
    ]
    assert all(s.initial_state[0].zero_data for s in seq.state)
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == type(config.instance_group[0]).KIND_CPU
    carried = Manifest.from_dict(json.loads(config.parameters[MANIFEST_PARAMETER].string_value))
    assert carried == manifest


def test_split_bundle_is_an_ensemble(tiny_split_bundle: Path, tmp_path: Path) -> None:
    options = TritonOptions(kind="gpu", accelerator="tensorrt")
    export_triton(tiny_split_bundle, tmp_path, options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vidseg", "vidseg_encode", "vidseg_step"]
    ensemble = parse_config(tmp_path / "vidseg" / "config.pbtxt")
    encode = parse_config(tmp_path / "vidseg_encode" / "config.pbtxt")
    step = parse_config(tmp_path / "vidseg_step" / "config.pbtxt")
    manifest = load_bundle(tiny_split_bundle).manifest
    assert ensemble.platform == "ensemble"
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == ("vidseg_encode", "vidseg_step")
    assert dict(first.input_map) == {"frame": "frame"}
    assert (
        dict(first.output_map)
        == dict(second.input_map)
        == {f.name: f.name for f in manifest.features}
    )
    assert set(second.output_map) == {o.name for o in ensemble.output}
    assert encode.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert step.WhichOneof("scheduling_choice") == "sequence_batching"
    assert [i.name for i in step.input] == [f.name for f in manifest.features]
    accel = step.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt" and step.instance_group[0].kind == 1  # KIND_GPU
    assert not (tmp_path / "vidseg" / "1" / "model.onnx").exists()  # an ensemble has no graph


def test_controlled_graph_computes_the_bundle(
    tiny_bundle: Path, sample_clip: Path, tmp_path: Path
) -> None:
    """START zeroes whatever state arrives (NaN here), READY=0 leaves the state unchanged, and
    with START/READY as a server sets them the labels are the engine's, frame for frame."""
    export_triton(tiny_bundle, tmp_path, TritonOptions())
    session = ort.InferenceSession(str(tmp_path / "vidseg" / "1" / "model.onnx"))
    segmenter = Segmenter(tiny_bundle, warmup=False)
    manifest = segmenter.manifest
    h, w = segmenter.input_size
    frames = [f.image for f in read_frames(sample_clip, size=(w, h), max_frames=6)]
    state = {s.input: np.full((1, *s.shape), np.nan, np.float32) for s in manifest.state}
    names = [o.name for o in session.get_outputs()]
    for t, frame in enumerate(frames):
        start = t in (0, 3)
        if t == 3:
            segmenter.reset()
        ours = segmenter.step(frame)
        feed = {
            "frame": frame[None],
            "START": np.array([[int(start)]], np.int32),
            "READY": np.ones((1, 1), np.int32),
            "END": np.zeros((1, 1), np.int32),
            "CORRID": np.full((1, 1), 7, np.uint64),
            **state,
        }
        out = dict(zip(names, session.run(None, feed)))
        np.testing.assert_array_equal(out["labels"][0], ours.outputs.labels)
        state = {s.input: out[s.output] for s in manifest.state}
    idle = dict(feed, READY=np.zeros((1, 1), np.int32), START=np.zeros((1, 1), np.int32))
    out = dict(zip(names, session.run(None, idle)))
    for s in manifest.state:
        np.testing.assert_array_equal(out[s.output], idle[s.input])


def test_cli_writes_and_refuses(
    tiny_bundle: Path,
    tiny_keyframe_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = tmp_path / "repo"
    assert export_main([str(tiny_bundle), "--triton", str(repo), "--triton-max-batch", "2"]) == 0
    assert "triton model 'vidseg'" in capsys.readouterr().out
    # the same name again: refused, one line, nothing changed
    assert export_main([str(tiny_bundle), "--triton", str(repo)]) == 1
    assert "already has model(s) vidseg" in capsys.readouterr().err
    assert (
        export_main([str(tiny_keyframe_bundle), "--triton", str(repo), "--triton-name", "kf"]) == 3
    )
    assert "keyframe bundle needs the engine" in capsys.readouterr().err
    assert sorted(p.name for p in repo.iterdir()) == ["vidseg"]
    with pytest.raises(SystemExit) as usage:
        export_main([str(tiny_bundle), "--triton", str(repo), "--triton-accelerator", "tensorrt"])
    assert usage.value.code == 2
    assert "needs --triton-kind gpu" in capsys.readouterr().err
