"""NetWarp export: the step graph with the flow aux input, parity with the provider's flow, the
manifest, the CLI branch, and the engine running the bundle as torch streams it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from vidseg.engine.bundle import load_bundle
from vidseg.engine.errors import ParityError
from vidseg.export.cli import CAMVID, parity_frames
from vidseg.export.onnx import model_manifest
from vidseg.export.parity import check_parity, export_bundle, require_parity, stream_aux

SIZE = (64, 96)
FRAMES = 10


def _tiny(factory, seed: int = 0):
    """The tiny untrained netwarp model with nonzero w2, so the warped path is exercised."""
    model = factory("netwarp-lite0", seed=seed)
    with torch.no_grad():
        for nw in model.netwarps:
            nw.w1.uniform_(0.5, 1.0)
            nw.w2.uniform_(0.3, 0.7)
    return model


@pytest.fixture(scope="module")
def frames(sample_clip: Path) -> list[np.ndarray]:
    return parity_frames(sample_clip, SIZE, FRAMES)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_model_factory, frames) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("netwarp") / "nw.vidseg"
    model = _tiny(tiny_model_factory)
    summary = export_bundle(model, out, model_manifest(model, CAMVID, {"dataset": "none"}), frames)
    return out, summary


def test_export_passes_parity_and_manifest_validates(bundle) -> None:
    out, summary = bundle
    assert f"parity over {FRAMES} frames (resets at [{FRAMES // 2}])" in summary
    assert not out.with_name(out.name + ".partial").exists()
    manifest = load_bundle(out).manifest
    assert manifest.family == "netwarp" and manifest.graphs == {"step": "step.onnx"}
    [aux] = manifest.aux_inputs
    assert (aux.name, aux.provider, aux.shape, aux.dtype) == (
        "flow",
        "dis_flow",
        (2, 16, 24),
        "float32",
    )
    assert [(s.input, s.output, s.shape) for s in manifest.state] == [
        ("image4_in", "image4_out", (3, 16, 24)),
        ("z8_in", "z8_out", (32, 8, 12)),
        ("z16_in", "z16_out", (64, 4, 6)),
    ]
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["aux_inputs"] == [
        {"name": "flow", "provider": "dis_flow", "shape": [2, 16, 24], "dtype": "float32"}
    ]


def test_graph_contract(bundle) -> None:
    graph = onnx.load(str(bundle[0] / "step.onnx"))
    dims = lambda t: [d.dim_param or d.dim_value for d in t.shape.dim]  # noqa: E731
    f32, u8 = onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8
    inputs = {
        i.name: (i.type.tensor_type.elem_type, dims(i.type.tensor_type)) for i in graph.graph.input
    }
    outputs = {
        o.name: (o.type.tensor_type.elem_type, dims(o.type.tensor_type)) for o in graph.graph.output
    }
    state = {"image4": [3, 16, 24], "z8": [32, 8, 12], "z16": [64, 4, 6]}
    assert inputs == {"frame": (u8, ["batch", 64, 96, 3]), "flow": (f32, ["batch", 2, 16, 24])} | {
        f"{k}_in": (f32, ["batch", *v]) for k, v in state.items()
    }
    assert list(inputs)[:2] == ["frame", "flow"]
    assert outputs == {"labels": (u8, ["batch", 64, 96])} | {
        f"{k}_out": (f32, ["batch", *v]) for k, v in state.items()
    }
    assert graph.opset_import[0].version == 17
    ops = {n.op_type for n in graph.graph.node}
    assert "Gather" in ops and "GridSample" not in ops  # the warp as row gathers


def test_parity_uses_real_flow_and_catches_a_wrong_graph(bundle, tiny_model_factory, frames):
    flows = stream_aux([_tiny(tiny_model_factory).flow_spec], frames, resets=(5,))
    assert [bool(f["flow"].any()) for f in flows] == [i not in (0, 5) for i in range(FRAMES)]
    report = check_parity(_tiny(tiny_model_factory), bundle[0] / "step.onnx", frames, resets=(5,))
    assert report.passed, report.summary()
    wrong = check_parity(_tiny(tiny_model_factory, seed=1), bundle[0] / "step.onnx", frames[:4])
    assert not wrong.passed
    with pytest.raises(ParityError, match="parity failed"):
        require_parity(wrong)


def test_failed_parity_leaves_no_bundle(tiny_model_factory, frames, tmp_path, monkeypatch):
    monkeypatch.setattr("vidseg.export.parity.MAX_ABS_DIFF", -1.0)  # nothing can pass
    out = tmp_path / "x.vidseg"
    with pytest.raises(ParityError):
        model = _tiny(tiny_model_factory)
        export_bundle(model, out, model_manifest(model, CAMVID, {}), frames[:4])
    assert not out.exists() and not (tmp_path / "x.vidseg.partial").exists()


def test_export_cli_dispatches_netwarp(tiny_model_factory, tmp_path) -> None:
    from vidseg.export import cli

    model = _tiny(tiny_model_factory)
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
    out = tmp_path / "cli.vidseg"
    assert cli.main([str(ckpt), "--out", str(out), "--parity-frames", "6"]) == 0
    manifest = load_bundle(out).manifest
    assert manifest.family == "netwarp" and manifest.aux_inputs[0].provider == "dis_flow"


def test_engine_runs_the_bundle_as_torch_streams_it(
    bundle, tiny_model_factory, frames, tmp_path, monkeypatch
) -> None:
    """The engine (DisFlowProvider as an aux input, state carried) and the model's own
    ``stream_logits`` give the same logits, reset included. The untrained net's labels hardly
    react to its state and its logits hardly to the flow, so the logits are compared (a fresh
    state moves them ten times the tolerance: the control below) and the flow the engine feeds
    each frame is checked against the provider run over the stream on its own."""
    import shutil

    from vidseg.engine.segmenter import Segmenter
    from vidseg.export.logits import add_logits

    with_logits = tmp_path / "nw.vidseg"
    shutil.copytree(bundle[0], with_logits)
    add_logits(with_logits)
    model = _tiny(tiny_model_factory)
    seg = Segmenter(with_logits, threads=1)
    backend, fed = seg.model.backends["step"], []
    run = backend.run
    monkeypatch.setattr(
        backend,
        "run",
        lambda feeds, host_outputs: (
            fed.append(feeds["flow"]) or run(feeds, host_outputs=host_outputs)
        ),
    )
    want_flows = stream_aux([model.flow_spec], frames, resets=(5,))
    memory = None
    for index, frame in enumerate(frames):
        if index == 5:
            seg.reset()
            memory = None
        result = seg.step(frame)
        np.testing.assert_array_equal(fed[index], want_flows[index]["flow"])
        assert fed[index].any() == (index not in (0, 5))
        x = torch.from_numpy(frame)[None]
        with torch.no_grad():
            logits, memory = model.stream_logits(x, memory)
            fresh, _ = model.stream_logits(x, None)
        full = lambda t: F.interpolate(t, size=SIZE, mode="bilinear")[0].numpy()  # noqa: E731
        got, expected = result.outputs.logits, full(logits)  # labels at stride 1: full size
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"frame {index}")
        assert (expected.argmax(0) == result.labels).mean() >= 0.999
        if index not in (0, 5):  # a lost or stale state would fail the comparison above
            assert np.abs(full(fresh) - got).max() > 10 * 1e-4, index
