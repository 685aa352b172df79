"""The engine on a keyframe bundle: scheduler choices and labels match a plain reference loop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from vidseg.engine import Segmenter
from vidseg.engine.schedule import Schedule
from vidseg.engine.video import read_frames


@pytest.fixture(scope="module")
def frames(sample_clip: Path) -> list[np.ndarray]:
    return [f.image for f in read_frames(sample_clip, max_frames=16)]


def reference(bundle: Path, frames: list[np.ndarray], interval: int, reset_at: int):
    """key.onnx every ``interval`` frames (and after the reset), current.onnx in between."""
    m = json.loads((bundle / "manifest.json").read_text())
    h, w = m["input"]["height"], m["input"]["width"]
    key = ort.InferenceSession(str(bundle / m["graphs"]["key"]), providers=["CPUExecutionProvider"])
    cur = ort.InferenceSession(
        str(bundle / m["graphs"]["current"]), providers=["CPUExecutionProvider"]
    )
    key_names = [o.name for o in key.get_outputs()]
    labels, keys, cache, since = [], [], {}, None
    for i, frame in enumerate(frames):
        if i == reset_at:
            since = None
        x = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)[None]
        is_key = since is None or since >= interval
        if is_key:
            out = dict(zip(key_names, key.run(None, {"frame": x})))
            cache = {c["input"]: out[c["output"]] for c in m["cache"]}
            since = 1
        else:
            out = {"labels": cur.run(["labels"], {"frame": x, **cache})[0]}
            since += 1
        keys.append(is_key)
        labels.append(
            cv2.resize(out["labels"][0], frame.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        )
    return labels, keys


@pytest.mark.parametrize("interval", [2, 5])
def test_fixed_schedule_matches_reference(tiny_keyframe_bundle: Path, frames, interval) -> None:
    want_labels, want_keys = reference(tiny_keyframe_bundle, frames, interval, reset_at=9)
    seg = Segmenter(tiny_keyframe_bundle, schedule=Schedule("fixed", interval))
    got_keys = []
    for i, frame in enumerate(frames):
        if i == 9:
            seg.reset()
        result = seg.step(frame)
        got_keys.append(result.key_frame)
        np.testing.assert_array_equal(result.labels, want_labels[i], err_msg=f"frame {i}")
    assert got_keys == want_keys
    assert got_keys[9] and sum(got_keys) > 2


def test_adaptive_schedule_keys_on_a_cut(tiny_keyframe_bundle: Path, frames) -> None:
    still = [frames[0]] * 6 + [255 - frames[0]] * 6  # a hard cut at frame 6
    seg = Segmenter(
        tiny_keyframe_bundle,
        schedule=Schedule("adaptive", interval=5, threshold=0.1, max_interval=30),
    )
    keys = [seg.step(f).key_frame for f in still]
    assert [i for i, k in enumerate(keys) if k] == [0, 6]


def test_manifest_schedule_is_the_default(
    tiny_keyframe_bundle: Path, frames, tmp_path: Path
) -> None:
    """The manifest's interval (3 here, not Schedule()'s default) is what the engine keys on."""
    bundle = tmp_path / "every3.vidseg"
    shutil.copytree(tiny_keyframe_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["schedule"]["interval"] != 3
    manifest["schedule"] = {**manifest["schedule"], "policy": "fixed", "interval": 3}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    seg = Segmenter(bundle)
    keys = [seg.step(f).key_frame for f in frames[:7]]
    assert [i for i, k in enumerate(keys) if k] == [0, 3, 6]


def test_cli_key_interval(tiny_keyframe_bundle: Path, sample_clip: Path, tmp_path: Path) -> None:
    from vidseg.engine import cli

    summary = tmp_path / "s.json"
    code = cli.main(
        [
            str(sample_clip),
            "--out",
            str(tmp_path / "o.mp4"),
            "--model",
            str(tiny_keyframe_bundle),
            "--max-frames",
            "9",
            "--key-interval",
            "3",
            "-q",
            "--json",
            str(summary),
        ]
    )
    assert code == 0 and json.loads(summary.read_text())["key_frames"] == 3
