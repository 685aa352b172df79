"""Shared fixtures: the sample clip, tiny untrained bundles and checkpoints, CamVid path.

Tiny models are the real Lite0 UNet at a 64x96 input with random weights (no ImageNet load):
fast on two CPU cores and exercising every export/engine path the shipped model uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CLIP = REPO / "samples" / "dashcam.mp4"
CAMVID = REPO.parent / "shared" / "data" / "camvid"
TINY_SIZE = (64, 96)  # (height, width)


@pytest.fixture(scope="session")
def sample_clip() -> Path:
    return SAMPLE_CLIP


@pytest.fixture(scope="session")
def camvid() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (expected ../shared beside the repo)")
    return CAMVID


def make_tiny_model(name: str = "recurrent-lite0-gru", seed: int = 0):
    import torch

    from vidseg.models.registry import create_model

    torch.manual_seed(seed)
    model = create_model(name, pretrained=False, input_size=TINY_SIZE)
    # randomise BN statistics so the untrained net is not near-constant
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
        if isinstance(module, torch.nn.Conv2d) and not module.weight.any():
            module.weight.data.normal_(0, 0.1)  # zero-initialised branches (MemoryAdd) take part
        if isinstance(getattr(module, "w2", None), torch.nn.Parameter):
            module.w2.data.fill_(0.5)  # NetWarp: use the warped features (0 at init = unused)
    return model.eval()


def export_tiny_bundle(out: Path, name: str = "recurrent-lite0-gru", split: bool = False) -> Path:
    """``split``: encode + step graphs instead of one step graph (same weights)."""
    from vidseg.export.cli import CAMVID as CAMVID_CLASSES
    from vidseg.export.onnx import build_manifest, feature_specs, write_bundle

    model = make_tiny_model(name)
    features = feature_specs(model) if split else ()
    write_bundle(
        model,
        out,
        build_manifest(model.cfg, CAMVID_CLASSES, {"dataset": "none"}, features=features),
    )
    return out


@pytest.fixture(scope="session")
def tiny_model_factory():
    """``make_tiny_model`` as a fixture (test modules cannot import conftest by name)."""
    return make_tiny_model


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recurrent bundle (untrained, 64x96 input) exported by the real export path."""
    return export_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny.vidseg")


@pytest.fixture(scope="session")
def tiny_split_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_bundle``'s model split into an encode graph and a step graph."""
    return export_tiny_bundle(tmp_path_factory.mktemp("bundles") / "split.vidseg", split=True)


@pytest.fixture(scope="session")
def tiny_perframe_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_bundle(tmp_path_factory.mktemp("bundles") / "pf.vidseg", "perframe-lite0")


@pytest.fixture(scope="session")
def tiny_keyframe_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained keyframe-lite0-c2 bundle (64x96) from the real two-graph export."""
    from vidseg.export.cli import CAMVID as CAMVID_CLASSES
    from vidseg.export.cli import parity_frames
    from vidseg.export.onnx import model_manifest
    from vidseg.export.parity import export_bundle

    model = make_tiny_model("keyframe-lite0-c2")
    out = tmp_path_factory.mktemp("bundles") / "kf.vidseg"
    frames = parity_frames(SAMPLE_CLIP, TINY_SIZE, 6)
    manifest = model_manifest(model, CAMVID_CLASSES, {"dataset": "none"})
    export_bundle(model, out, manifest, frames, (2,))
    return out


@pytest.fixture(scope="session")
def tiny_netwarp_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained netwarp-lite0 bundle (64x96) with its flow aux input and the confidence
    output, from the real export path (parity checked)."""
    from vidseg.export.cli import CAMVID as CAMVID_CLASSES
    from vidseg.export.cli import parity_frames
    from vidseg.export.onnx import model_manifest
    from vidseg.export.parity import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "nw.vidseg"
    frames = parity_frames(SAMPLE_CLIP, TINY_SIZE, 6)
    model = make_tiny_model("netwarp-lite0")
    manifest = model_manifest(model, CAMVID_CLASSES, {"dataset": "none"}, scores=True)
    export_bundle(model, out, manifest, frames)
    return out


def save_tiny_checkpoint(path: Path, name: str = "recurrent-lite0-gru") -> Path:
    """A checkpoint in vidseg-train's format holding the tiny ``name`` model."""
    import torch

    model = make_tiny_model(name)
    torch.save(
        {
            "model_name": model.cfg.name,
            "model_kwargs": {"input_size": TINY_SIZE},
            "model": model.state_dict(),
            "step": 0,
            "pretrained": "ImageNet (test)",
            "metrics": json.dumps({}),
            "train_args": json.dumps({}),
        },
        path,
    )
    return path


@pytest.fixture(scope="session")
def tile_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tile-memory bundle: an untrained perframe-lite0-sep checkpoint (``pf.pt`` beside it)
    exported with ``--tiles 2x2 --tile-scale 1.5``: 64x96 views of a 96x128 frame."""
    from vidseg.export.cli import main

    root = tmp_path_factory.mktemp("tiles")
    ckpt = save_tiny_checkpoint(root / "pf.pt", "perframe-lite0-sep")
    out = root / "tiles.vidseg"
    assert (
        main(
            [
                str(ckpt),
                "--out",
                str(out),
                "--tiles",
                "2x2",
                "--tile-scale",
                "1.5",
                "--label-stride",
                "4",
                "--logits",
                "--parity-frames",
                "8",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in vidseg-train's format holding the tiny recurrent model."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.pt")


@pytest.fixture(scope="session")
def tiny_perframe_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny per-frame model as a vidseg-train checkpoint."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "pf.pt", "perframe-lite0")


def copy_bundle(src: Path, dst: Path) -> Path:
    """A writable copy of a bundle, for tests that break it."""
    import shutil

    shutil.copytree(src, dst)
    return dst
