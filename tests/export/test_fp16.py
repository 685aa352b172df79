"""fp16 bundles: float16 inside, the manifest's I/O types kept, labels agreeing with fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.video import read_frames
from vidseg.export import fp16


@pytest.mark.parametrize("name", ["tiny_bundle", "tiny_split_bundle"])
def test_fp16_bundle_keeps_io_and_agrees_with_fp32(name: str, request, sample_clip: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    src = request.getfixturevalue(name)
    out = tmp_path / "half.vidseg"
    assert fp16.main([str(src), "--out", str(out), "--frames", "8"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train"]["fp16"]["label_agreement"] >= 0.98
    for graph in manifest["graphs"].values():
        before, after = onnx.load(str(src / graph)), onnx.load(str(out / graph))
        halves = [t for t in after.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
        assert len(halves) > 10, f"{graph}: weights not converted"

        def io(m):
            return [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input,
                                                                    *m.graph.output)]  # fmt: skip

        assert io(before) == io(after)  # uint8 frame/labels, float32 state and features
    # through the engine: state carried, labels agree with the fp32 bundle frame by frame
    frames = [f.image for f in read_frames(sample_clip, max_frames=12)]
    a, b = Segmenter(src), Segmenter(out)
    agree = [float((a.step(f).labels == b.step(f).labels).mean()) for f in frames]
    assert min(agree) >= 0.95 and np.mean(agree) >= 0.98, agree
    assert b.state.tensors and all(v.dtype == np.float32 for v in b.state.tensors.values())


def test_fp16_refuses_an_existing_output(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "x").mkdir()
    assert fp16.main([str(tiny_bundle), "--out", str(tmp_path / "x")]) == 3
    assert capsys.readouterr().err.count("\n") == 1
