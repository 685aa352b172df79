"""Exposed logits (export/logits.py) and the engine's crisp labels from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.bundle import Manifest, load_bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.engine.video import read_frames
from vidseg.export import cli
from vidseg.export.logits import add_logits

N_FRAMES = 12


@pytest.fixture(scope="module")
def stride4_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model_factory) -> Path:
    """The tiny split recurrent model at label stride 4 (labels 16x24), without logits."""
    from vidseg.export.cli import CAMVID
    from vidseg.export.onnx import build_manifest, feature_specs, write_bundle

    model = tiny_model_factory()
    out = tmp_path_factory.mktemp("logits") / "s4.vidseg"
    manifest = build_manifest(
        model.cfg,
        CAMVID,
        {"dataset": "none"},
        scores=True,
        label_stride=4,
        features=feature_specs(model),
    )
    write_bundle(model, out, manifest)
    return out


@pytest.fixture(scope="module")
def with_logits(stride4_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("logits") / "s4l.vidseg"
    shutil.copytree(stride4_bundle, out)
    assert cli.main([str(out), "--add-logits"]) == 0
    return out


@pytest.fixture(scope="module")
def clip(sample_clip: Path) -> list[np.ndarray]:
    return [f.image for f in read_frames(sample_clip, max_frames=N_FRAMES)]


def reference_loop(bundle: Path, frames: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    """The graphs run by hand, state carried: (labels, scores, logits) at the label stride."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    h, w = manifest["input"]["height"], manifest["input"]["width"]
    encode, step = (
        ort.InferenceSession(str(bundle / f"{g}.onnx"), providers=["CPUExecutionProvider"])
        for g in ("encode", "step")
    )
    state = {s["input"]: np.zeros([1, *s["shape"]], np.float32) for s in manifest["state"]}
    out = []
    for frame in frames:
        x = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)[None]
        feats = dict(zip([o.name for o in encode.get_outputs()], encode.run(None, {"frame": x})))
        names = [o.name for o in step.get_outputs()]
        values = dict(zip(names, step.run(names, {**feats, **state})))
        state = {s["input"]: values[s["output"]] for s in manifest["state"]}
        logits = values["logits"][0] if "logits" in values else None
        out.append((values["labels"][0], values["scores"][0], logits))
    return out


def test_added_logits_are_what_the_labels_arg_max(
    stride4_bundle: Path, with_logits: Path, clip: list[np.ndarray]
) -> None:
    manifest = load_bundle(with_logits).manifest
    assert [o.role for o in manifest.outputs] == ["labels", "scores", "logits"]
    assert manifest.output_name("logits") == "logits"
    before, after = reference_loop(stride4_bundle, clip), reference_loop(with_logits, clip)
    for (labels, scores, _), (labels2, scores2, logits) in zip(before, after):
        assert logits.shape == (11, 16, 24) and logits.dtype == np.float32
        np.testing.assert_array_equal(labels2, labels)  # the graph computes what it did
        np.testing.assert_array_equal(scores2, scores)
        np.testing.assert_array_equal(logits.argmax(0), labels)


def test_engine_upsamples_crisply_with_state_carried(
    with_logits: Path, stride4_bundle: Path, clip: list[np.ndarray]
) -> None:
    """Segmenter.step (frame size) and the pipeline's prepare/step/at_size both equal the
    reference loop's outputs through ``upsample``, frame after frame, and differ from the
    nearest-neighbour labels of the same bundle without logits."""
    direct, ahead, blocky = (
        Segmenter(with_logits),
        Segmenter(with_logits),
        Segmenter(stride4_bundle),
    )
    height, width = clip[0].shape[:2]
    differs = 0
    for i, (frame, (labels, scores, logits)) in enumerate(
        zip(clip, reference_loop(with_logits, clip))
    ):
        want, want_scores = upsample(GraphOutputs(labels, scores, logits), height, width)
        got = direct.step(frame)
        early = ahead.step(ahead.prepare(frame)).at_size(height, width)
        old = blocky.step(frame)
        for result in (got, early):
            np.testing.assert_array_equal(result.labels, want, err_msg=f"frame {i}")
            np.testing.assert_array_equal(result.scores, want_scores, err_msg=f"frame {i}")
        np.testing.assert_array_equal(
            old.labels, cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        )
        differs += int((old.labels != got.labels).sum())
    assert differs > 0


def test_add_logits_refusals(
    with_logits: Path, stride4_bundle: Path, tmp_path: Path, capsys
) -> None:
    assert cli.main([str(with_logits), "--add-logits"]) == 3
    assert "already outputs logits" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main([str(with_logits), "--add-logits", "--out", str(tmp_path / "x.vidseg")])
    assert exc.value.code == 2
    # labels that are not an arg-max over the class axis: refused, nothing changed
    bad = tmp_path / "bad.vidseg"
    shutil.copytree(stride4_bundle, bad)
    model = onnx.load(str(bad / "step.onnx"))
    argmax = next(n for n in model.graph.node if n.op_type == "ArgMax")
    next(a for a in argmax.attribute if a.name == "axis").i = 2
    onnx.save(model, str(bad / "step.onnx"))
    before = (bad / "manifest.json").read_text()
    with pytest.raises(BundleError, match="not the ArgMax over axis 1"):
        add_logits(bad)
    assert (bad / "manifest.json").read_text() == before


def test_manifest_logits_must_match_the_labels(with_logits: Path, tmp_path: Path) -> None:
    raw = json.loads((with_logits / "manifest.json").read_text())
    for edit in ({"stride": 2}, {"dtype": "uint8"}):
        bad = json.loads(json.dumps(raw))
        bad["outputs"][2].update(edit)
        with pytest.raises(BundleError, match="logits must be float32 at the labels' stride"):
            Manifest.from_dict(bad)
    # a graph whose logits are not [classes, labels size] is refused at load
    bundle = tmp_path / "b.vidseg"
    shutil.copytree(with_logits, bundle)
    raw["classes"], raw["palette"] = raw["classes"][:10], raw["palette"][:10]
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="logits output 'logits' should be"):
        Segmenter(bundle)


def test_export_logits_flag_and_every_family(
    tiny_checkpoint: Path,
    tiny_keyframe_bundle: Path,
    tiny_netwarp_bundle: Path,
    tmp_path: Path,
    clip: list[np.ndarray],
    capsys,
) -> None:
    out = tmp_path / "new.vidseg"
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
                "--logits",
            ]
        )
        == 0
    )
    assert "added logits [11, 16, 24] to step" in capsys.readouterr().out
    assert load_bundle(out).manifest.output_name("logits") == "logits"
    for src in (tiny_keyframe_bundle, tiny_netwarp_bundle):
        bundle = tmp_path / src.name
        shutil.copytree(src, bundle)
        summary = add_logits(bundle)
        seg = Segmenter(bundle)
        roles = {"keyframe": "key, current", "netwarp": "step"}[seg.manifest.family]
        assert summary.endswith(f"to {roles}")
        for frame in clip[:4]:  # key and current frames both carry logits
            result = seg.step(frame)
            assert result.outputs is not None and result.outputs.logits is not None
            np.testing.assert_array_equal(result.outputs.logits.argmax(0), result.outputs.labels)
