"""The shipped samples: the example scripts run as users would run them, and the default
bundle is the one the docs describe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vidseg.engine.bundle import default_bundle_path, load_bundle
from vidseg.models.data import CAMVID_CLASSES, CAMVID_IGNORE

REPO = Path(__file__).resolve().parents[1]
MAX_BUNDLE_BYTES = 20 * 2**20  # what the repository and the wheel carry


def test_perception_loop_example(tiny_bundle: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "samples" / "perception_loop.py"),
            "--model",
            str(tiny_bundle),
            "--frames",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "processed" in lines[-1] and "of 20 camera frames" in lines[-1]
    assert sum(line.startswith("t=") for line in lines) >= 1


def test_default_bundle_is_the_tile_memory() -> None:
    """The shipped default (README, "The default model"): perframe-lite0-sep at 320x448 in a
    2x2 tile memory of the frame at 448x640, labels, scores and logits at stride 4, the 11
    CamVid classes, the record of how it was built, and at most 20 MB."""
    path = default_bundle_path()
    assert path == REPO / "samples" / "tiles-lite0-camvid.vidseg"
    manifest = load_bundle(path).manifest
    assert manifest.family == "recurrent" and manifest.graphs == {"step": "step.onnx"}
    assert (manifest.input.height, manifest.input.width) == (448, 640)
    assert [(o.role, o.stride) for o in manifest.outputs] == [
        ("labels", 4),
        ("scores", 4),
        ("logits", 4),
    ]
    assert manifest.classes == CAMVID_CLASSES and manifest.ignore_index == CAMVID_IGNORE
    assert [(s.input, s.shape) for s in manifest.state] == [("memory_in", (11, 112, 160))]
    aux = {a.provider: a for a in manifest.aux_inputs}
    assert set(aux) == {"dis_flow", "tile_cycle", "tile_view"}
    assert aux["tile_view"].shape == (320, 448, 3) and aux["tile_cycle"].shape == (5,)
    train = manifest.train
    assert train["tiles"]["grid"] == [2, 2] and train["tiles"]["view"] == [320, 448]
    assert "CC BY-NC 4.0" in train["dataset"]
    runs = train["provenance"]["train"]
    assert runs and all(
        r["command"].startswith("vidseg-train --model perframe-lite0-sep ") for r in runs
    )
    export = train["provenance"]["export"]["command"]
    assert export.startswith("vidseg-export ") and "--tiles 2x2" in export
    assert sum(f.stat().st_size for f in path.iterdir()) <= MAX_BUNDLE_BYTES
