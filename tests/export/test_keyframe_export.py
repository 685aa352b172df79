"""Key-frame bundles: key/current graph contract, manifest, parity per key interval (and that
it can fail), atomic writes, and the CLI dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vidseg.engine.bundle import load_bundle
from vidseg.engine.errors import ParityError
from vidseg.engine.schedule import Schedule
from vidseg.export.cli import CAMVID, parity_frames
from vidseg.export.onnx import model_manifest
from vidseg.export.parity import check_stream_parity, export_bundle, require_parity

SIZE = (64, 96)
NAME = "keyframe-lite0-c2"


@pytest.fixture(scope="module")
def frames(sample_clip: Path) -> list[np.ndarray]:
    return parity_frames(sample_clip, SIZE, 10)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_factory, frames) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("kf") / "kf.vidseg"
    model = tiny_model_factory(NAME)
    manifest = model_manifest(model, CAMVID, {"dataset": "none"})
    summary = export_bundle(model, out, manifest, frames, intervals=(2, 5))
    return out, summary


def _graphs(bundle: Path) -> dict[str, Path]:
    return {role: bundle / f"{role}.onnx" for role in ("key", "current")}


def test_manifest_validates_with_cache_and_schedule(exported) -> None:
    bundle, _ = exported
    manifest = load_bundle(bundle).manifest
    assert manifest.family == "keyframe" and manifest.name == NAME
    assert manifest.graphs == {"key": "key.onnx", "current": "current.onnx"}
    assert manifest.state == ()
    assert [(c.input, c.output, c.shape, c.dtype, c.init) for c in manifest.cache] == [
        ("k16_in", "k16_out", (64, 4, 6), "float32", "zeros"),
        ("k32_in", "k32_out", (96, 2, 3), "float32", "zeros"),
    ]
    assert [(o.name, o.role, o.dtype) for o in manifest.outputs] == [("labels", "labels", "uint8")]
    raw = json.loads((bundle / "manifest.json").read_text())
    assert raw["schedule"] == {
        "policy": "fixed",
        "interval": 5,
        "threshold": 0.1,
        "budget_ms": None,
        "max_interval": 30,
    }
    assert manifest.schedule == Schedule("fixed", 5, 0.1, None, 30)
    assert not bundle.with_name(bundle.name + ".partial").exists()


def test_graph_contract(exported) -> None:
    bundle, _ = exported

    def spec(value: onnx.ValueInfoProto) -> tuple[int, list]:
        t = value.type.tensor_type
        return t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]

    io = {}
    for role, path in _graphs(bundle).items():
        graph = onnx.load(str(path)).graph
        io[role] = ({i.name: spec(i) for i in graph.input}, {o.name: spec(o) for o in graph.output})
    u8, f32 = onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT
    frame = (u8, ["batch", 64, 96, 3])
    labels = (u8, ["batch", 64, 96])
    k16, k32 = (f32, ["batch", 64, 4, 6]), (f32, ["batch", 96, 2, 3])
    assert io["key"] == ({"frame": frame}, {"labels": labels, "k16_out": k16, "k32_out": k32})
    assert io["current"] == ({"frame": frame, "k16_in": k16, "k32_in": k32}, {"labels": labels})
    assert list(io["key"][1]) == ["labels", "k16_out", "k32_out"]  # order as the manifest


def test_parity_per_interval_with_reset(exported, tiny_model_factory, frames) -> None:
    bundle, summary = exported
    lines = summary.splitlines()
    assert len(lines) == 2 and lines[0].startswith("key interval 2: parity over 10 frames")
    assert "resets at [5]" in lines[1]
    report = check_stream_parity(tiny_model_factory(NAME), _graphs(bundle), frames, (4,), 3)
    assert report.passed, report.summary()
    assert report.label_agreement >= 0.999
    assert report.max_logit_diff <= 1e-3 and report.max_state_diff <= 1e-3


def test_parity_catches_a_wrong_graph(exported, tiny_model_factory, frames) -> None:
    """Graphs from other weights must fail: the check can fail."""
    bundle, _ = exported
    report = check_stream_parity(
        tiny_model_factory(NAME, seed=1), _graphs(bundle), frames[:4], interval=2
    )
    assert not report.passed
    with pytest.raises(ParityError, match="parity failed"):
        require_parity(report)


def test_parity_failure_leaves_no_bundle(tiny_model_factory, frames, tmp_path, monkeypatch):
    monkeypatch.setattr("vidseg.export.parity.MAX_ABS_DIFF", -1.0)  # nothing can pass
    out = tmp_path / "x.vidseg"
    with pytest.raises(ParityError, match="key interval 2"):
        model = tiny_model_factory("keyframe-lite0-c1")
        export_bundle(model, out, model_manifest(model, CAMVID, {}), frames[:3], intervals=(2,))
    assert not out.exists() and not (tmp_path / "x.vidseg.partial").exists()


def test_export_cli_dispatches_keyframe(tiny_model_factory, tmp_path, capsys) -> None:
    from vidseg.export import cli

    model = tiny_model_factory("keyframe-lite0-c1")
    ckpt = tmp_path / "last.pt"
    torch.save(
        {
            "model_name": model.cfg.name,
            "model_kwargs": {"input_size": SIZE},
            "model": model.state_dict(),
            "step": 0,
            "metrics": json.dumps({}),
            "train_args": json.dumps({}),
        },
        ckpt,
    )
    out = tmp_path / "c1.vidseg"
    assert cli.main([str(ckpt), "--out", str(out), "--parity-frames", "6"]) == 0
    assert "key interval 5: parity over 6 frames" in capsys.readouterr().out
    manifest = load_bundle(out).manifest
    assert manifest.family == "keyframe" and [c.input for c in manifest.cache] == ["k32_in"]
