"""A new family with a new engine-computed input, from this file alone: no edit to the engine,
the export or the model package.

The ``motion`` family's one variant blends per-frame logits into a recurrent state and labels
``MOVING`` wherever a new aux input, ``frame_motion`` (the change of each cell since the
stream's previous frame), says the frame moved. This file registers the provider
(``register_aux_input``) and the model (``register_model``), exports the model with the export
code (parity checked) and runs the bundle through ``Segmenter``, ``MultiStreamSegmenter`` and
``vidseg-run``: the moving cells come out as ``MOVING`` exactly where a square moved, and the
streams carry their state and their provider's past as one stream each would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from vidseg.engine.aux_inputs import is_kind, provider_class, register_aux_input
from vidseg.engine.bundle import AuxSpec
from vidseg.models import registry
from vidseg.models.protocol import GraphSpec, TemporalModule
from vidseg.models.registry import ModelCfg, StateCfg

SIZE = (64, 96)  # (height, width) of the model input and of the test frames
STRIDE = 4  # of the logits, the labels and the motion grid
CELLS = (SIZE[0] // STRIDE, SIZE[1] // STRIDE)
KIND = "frame_motion"  # the new aux input's kind
MOVING = 1  # the class of a moving cell
GAIN, THRESHOLD = 1000.0, 0.01  # MOVING's logit: GAIN * (motion - THRESHOLD)
SQUARE = 16  # side of the moving square, in pixels (whole cells)


class FrameMotionProvider:
    """The ``frame_motion`` aux input of one stream: for shape ``(1, h, w)``, each cell's mean
    absolute change of the grey frame (0..1) since the stream's previous frame, (1, 1, h, w)
    float32; zeros on a stream's first frame."""

    replaces_frame = False  # read beside the frame

    def __init__(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"frame_motion shape must be (1, h, w), got {shape}")
        self.size = shape[1:]
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        grey = frame.astype(np.float32).mean(2) / 255
        h, w = self.size
        if self._previous is None:
            motion = np.zeros((h, w), np.float32)
        else:
            change = np.abs(grey - self._previous)
            motion = change.reshape(h, grey.shape[0] // h, w, grey.shape[1] // w).mean((1, 3))
        self._previous = grey
        return motion[None, None].astype(np.float32)


register_aux_input(KIND, FrameMotionProvider)


class MotionNet(TemporalModule):
    """``forward(x, motion, h) -> (logits, h')``: ``h' = (h + conv(x)) / 2`` carried frame to
    frame; the logits are ``h'`` with the ``MOVING`` channel replaced by ``GAIN * (motion -
    THRESHOLD)``, so a cell is ``MOVING`` exactly where the frame moved."""

    def __init__(self, cfg: ModelCfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv = nn.Conv2d(3, cfg.num_classes, 3, stride=STRIDE, padding=1)

    def forward(
        self, x: torch.Tensor, motion: torch.Tensor, *state: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        (h,) = state or self.initial_state(x.shape[0], *x.shape[-2:], device=x.device)
        h = 0.5 * (h + self.conv(x))
        moving = GAIN * (motion - THRESHOLD)
        return torch.cat([h[:, :MOVING], moving, h[:, MOVING + 1 :]], 1), h

    def export_graphs(self) -> dict[str, GraphSpec]:
        motion = AuxSpec("motion", KIND, (1, *CELLS))
        return {"step": GraphSpec(self, self.cfg.state, self.cfg.state, aux=(motion,))}


def motion_tiny(pretrained: bool = False, input_size: tuple[int, int] = SIZE) -> MotionNet:
    cfg = ModelCfg(
        name="motion-tiny",
        family="motion",
        input_size=tuple(input_size),  # type: ignore[arg-type]
        stride=STRIDE,
        state=(StateCfg("ema", 11, STRIDE),),
    )
    return MotionNet(cfg)


def square_clip(positions: list[int], seed: int) -> list[np.ndarray]:
    """Frames of a fixed noise background (grey below 128) with a bright square at row 16 and
    each column of ``positions`` (multiples of ``STRIDE``: the square covers whole cells)."""
    background = np.random.default_rng(seed).integers(0, 128, (*SIZE, 3), dtype=np.uint8)
    frames = []
    for x in positions:
        frame = background.copy()
        frame[16 : 16 + SQUARE, x : x + SQUARE] = 230
        frames.append(frame)
    return frames


def covered(x: int | None) -> np.ndarray:
    """(h, w) bool: the cells the square at column ``x`` covers (none for None)."""
    cells = np.zeros(CELLS, bool)
    if x is not None:
        cells[16 // STRIDE : (16 + SQUARE) // STRIDE, x // STRIDE : (x + SQUARE) // STRIDE] = True
    return cells


def moved(previous: int | None, current: int) -> np.ndarray:
    """The cells that change from the square at ``previous`` (None: a stream's first frame,
    nothing moved) to the square at ``current``."""
    return np.zeros(CELLS, bool) if previous is None else covered(previous) ^ covered(current)


@pytest.fixture(scope="module")
def motion_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``motion-tiny`` model, created by name and exported with the export code."""
    from vidseg.export.cli import CAMVID
    from vidseg.export.onnx import model_manifest
    from vidseg.export.parity import export_bundle

    registry.list_models()  # the package's families first, then this one, in a copy
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        registry.register_model(motion_tiny)
        torch.manual_seed(0)
        model = registry.create_model("motion-tiny").eval()
    out = tmp_path_factory.mktemp("motion") / "motion.vidseg"
    manifest = model_manifest(model, CAMVID, {"dataset": "none"}, label_stride=STRIDE)
    summary = export_bundle(model, out, manifest, square_clip([0, 4, 8, 8, 12, 20, 20, 24], 0))
    assert summary.startswith("parity over 8 frames")  # ONNX Runtime against torch
    return out


def test_the_segmenter_feeds_the_new_input_and_carries_the_state(motion_bundle: Path) -> None:
    from vidseg.engine import Segmenter

    seg = Segmenter(motion_bundle)
    assert seg.manifest.family == "motion" and seg.manifest.aux_inputs[0].provider == KIND
    positions = [0, 4, 4, 12, 40, 40, 36, 0, 8, 8]
    frames = square_clip(positions, 1)
    previous = None
    states = []
    for i, (x, frame) in enumerate(zip(positions, frames)):
        if i == 6:
            seg.reset()  # the provider forgets the past too: nothing moves on the next frame
            previous = None
        result = seg.step(frame)
        assert result.labels.shape == SIZE
        np.testing.assert_array_equal(
            result.outputs.labels == MOVING, moved(previous, x), err_msg=f"frame {i}"
        )
        previous = x
        states.append(seg.state.tensors["ema_in"].copy())
    assert any(moved(p, x).any() for p, x in zip(positions, positions[1:]))
    assert not np.array_equal(states[1], states[2])  # the same frame again: the state moved on


def test_multistream_runs_the_new_family_as_one_stream_each(motion_bundle: Path) -> None:
    from vidseg.engine import Segmenter
    from vidseg.engine.multistream import MultiStreamSegmenter

    ticks = 12
    tracks = [
        [(4 * t) % 80 for t in range(ticks)],
        [(76 - 8 * t) % 80 for t in range(ticks)],
        [40 if t % 3 else 44 for t in range(ticks)],
    ]
    clips = [square_clip(track, 10 + i) for i, track in enumerate(tracks)]
    idle = {(2, 4), (2, 5), (0, 9)}  # (stream, tick): no frame
    resets = {(1, 6)}
    multi = MultiStreamSegmenter(motion_bundle, streams=3)
    singles = [Segmenter(motion_bundle) for _ in tracks]
    previous: list[int | None] = [None] * 3
    for tick in range(ticks):
        for i in range(3):
            if (i, tick) in resets:
                multi.reset(i)
                singles[i].reset()
                previous[i] = None
        frames = [None if (i, tick) in idle else clips[i][tick] for i in range(3)]
        results = multi.step(frames)
        for i, (got, frame) in enumerate(zip(results, frames)):
            if frame is None:
                assert got is None
                continue
            want = singles[i].step(frame)
            # the new input was the stream's own: its motion since its own previous frame
            expected = moved(previous[i], tracks[i][tick])
            np.testing.assert_array_equal(got.outputs.labels == MOVING, expected, f"{i} @{tick}")
            assert (got.labels == want.labels).mean() >= 0.999, (i, tick)
            np.testing.assert_allclose(
                multi.state.tensors["ema_in"][i], singles[i].state.tensors["ema_in"][0], atol=1e-5
            )
            previous[i] = tracks[i][tick]


def test_vidseg_run_segments_a_folder_with_the_new_family(
    motion_bundle: Path, tmp_path: Path
) -> None:
    from vidseg.engine import Segmenter
    from vidseg.engine.cli import main

    positions = [0, 8, 8, 16, 24, 60, 60, 52]
    frames = square_clip(positions, 3)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), frame[..., ::-1])
    masks = tmp_path / "masks"
    assert (
        main([str(folder), "--model", str(motion_bundle), "--out", str(masks), "--mask", "-q"]) == 0
    )
    seg = Segmenter(motion_bundle)
    previous = None
    for i, (x, frame) in enumerate(zip(positions, frames)):
        got = cv2.imread(str(masks / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        want = seg.step(frame).labels
        assert got is not None and got.shape == SIZE
        # labels at the frame's size: each cell of the graph's grid is STRIDE x STRIDE pixels
        expected = np.kron(moved(previous, x), np.ones((STRIDE, STRIDE), bool))
        np.testing.assert_array_equal(got == MOVING, expected, err_msg=f"frame {i}")
        assert (got == want).mean() >= 0.999, i
        previous = x


def test_an_installed_package_adds_a_kind_by_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package's ``vidseg.aux_inputs`` entry point makes its kind known the first time a
    manifest names it, its module imported only when a provider is made."""
    kind = "test_entry_point_kind"
    (tmp_path / "ep_provider_pkg.py").write_text(
        "class Provider:\n"
        "    replaces_frame = False\n"
        "    def __init__(self, shape): self.shape = shape\n"
        "    def reset(self): pass\n"
        "    def __call__(self, frame): return frame[None]\n"
    )
    dist = tmp_path / "ep_provider_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-provider-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[vidseg.aux_inputs]\n{kind} = ep_provider_pkg:Provider\n"
    )
    assert not is_kind(kind)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert is_kind(kind) and "ep_provider_pkg" not in sys.modules
    assert provider_class(kind).__module__ == "ep_provider_pkg"
