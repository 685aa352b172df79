"""Split bundles: an encode graph (frame -> features, stateless) and a step graph (features +
state -> labels) that together give what the single step graph gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vidseg.engine import PreparedFrame, Segmenter
from vidseg.engine.bundle import load_bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.video import read_frames
from vidseg.export import cli


@pytest.fixture(scope="module")
def clip(sample_clip: Path) -> list[np.ndarray]:
    return [f.image for f in read_frames(sample_clip, max_frames=16)]


def test_split_bundle_equals_the_single_graph(
    tiny_bundle: Path, tiny_split_bundle: Path, clip: list[np.ndarray]
) -> None:
    manifest = load_bundle(tiny_split_bundle).manifest
    assert set(manifest.graphs) == {"encode", "step"} and len(manifest.features) == 4
    whole, split, ahead = (
        Segmenter(b) for b in (tiny_bundle, tiny_split_bundle, tiny_split_bundle)
    )
    for i, frame in enumerate(clip):
        if i == 8:  # a cut: all three forget
            for seg in (whole, split, ahead):
                seg.reset()
        want = whole.step(frame)
        got = split.step(frame)
        prepared = ahead.prepare(frame)  # the pipeline's way: encoder run before the step
        assert isinstance(prepared, PreparedFrame) and set(prepared.features) == {
            f.name for f in manifest.features
        }
        early = ahead.step(prepared).at_size(*frame.shape[:2])
        np.testing.assert_array_equal(got.labels, want.labels, err_msg=f"frame {i}")
        np.testing.assert_array_equal(early.labels, want.labels, err_msg=f"frame {i}")
        for name, value in whole.state.tensors.items():
            np.testing.assert_allclose(split.state.tensors[name], value, atol=1e-5)


def _edited(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    raw = json.loads((dst / "manifest.json").read_text())
    edit(raw)
    (dst / "manifest.json").write_text(json.dumps(raw))
    return dst


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["graphs"].pop("encode"), "field 'features'"),
        (lambda m: m.update(features=[]), "field 'features'"),
        (
            lambda m: m.update(
                aux_inputs=[
                    {
                        "name": "flow",
                        "provider": "dis_flow",
                        "shape": [2, 16, 24],
                        "dtype": "float32",
                    }
                ]
            ),
            "aux input 'flow'",
        ),  # declared, but the step graph has no such input
        (lambda m: m["features"][1].update(shape=[32, 16, 22]), "feature 'feat1'"),
    ],
)
def test_bad_split_manifests_are_refused(
    tiny_split_bundle: Path, tmp_path: Path, edit, message: str
) -> None:
    bundle = _edited(tiny_split_bundle, tmp_path / "b.vidseg", edit)
    with pytest.raises(BundleError, match=message):
        Segmenter(bundle)


def test_encode_role_refused_beside_key_frames(tiny_keyframe_bundle: Path, tmp_path: Path) -> None:
    def add_encode(m: dict) -> None:
        m["graphs"]["encode"] = "encode.onnx"
        m["features"] = [{"name": "feat0", "shape": [8, 4, 4], "dtype": "float32"}]

    bundle = _edited(tiny_keyframe_bundle, tmp_path / "k.vidseg", add_encode)
    with pytest.raises(
        BundleError, match="graphs.encode' splits a step graph; a bundle with key frames has none"
    ):
        Segmenter(bundle)


def test_export_cli_split(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.vidseg"
    assert (
        cli.main(
            [
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--parity-frames",
                "6",
                "--split",
                "--label-stride",
                "4",
                "--scores",
            ]
        )
        == 0
    )
    assert "parity over 6 frames" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.onnx")) == ["encode.onnx", "step.onnx"]
    result = Segmenter(out).step(np.zeros((90, 120, 3), np.uint8))
    assert result.labels.shape == (90, 120) and result.scores is not None
    # a model says whether it splits (``split()``): neither key frames nor NetWarp's warps do
    for name in ("keyframe-lite0-c2", "netwarp-lite0"):
        code = cli.main([f"untrained:{name}", "--out", str(tmp_path / "k.vidseg"), "--split"])
        assert code != 0 and "no stateless encoder part to split off" in capsys.readouterr().err
        assert not (tmp_path / "k.vidseg").exists()
