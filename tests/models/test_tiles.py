"""Tile memory: the engine's tile cycle and views, what a key view and a tile write into the
memory, the flow moving it, and the exported bundle through the engine against the torch
stream."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg.engine.aux_inputs.tile_cycle import TileCycleProvider
from vidseg.engine.aux_inputs.tile_view import TileViewProvider
from vidseg.engine.errors import VidsegError
from vidseg.models.layers import normalize
from vidseg.models.tiles import TileMemory

GRID, SCALE = (2, 2), 1.5  # 64x96 views of a 96x128 frame (not the default scale)


def test_tile_cycle_starts_with_the_key_view_after_every_reset() -> None:
    cycle = TileCycleProvider((4,))  # 3 tiles + the key view
    frame = np.zeros((8, 8, 3), np.uint8)
    views = [int(cycle(frame).argmax()) for _ in range(5)]
    assert views == [3, 0, 1, 2, 0]
    cycle.reset()
    out = cycle(frame)
    assert out.shape == (1, 4) and out.dtype == np.float32 and out.sum() == 1 and out[0, 3] == 1
    with pytest.raises(ValueError, match="tiles >= 1"):
        TileCycleProvider((1,))


def test_tile_view_cuts_the_cycles_views_from_the_frame() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    views = TileViewProvider((64, 96, 3), offsets=[[0, 0], [0, 32], [32, 32]])
    key = views(frame)  # after construction: the key view, the frame resized
    assert key.shape == (1, 64, 96, 3) and key.dtype == np.uint8
    np.testing.assert_array_equal(
        key[0], cv2.resize(frame, (96, 64), interpolation=cv2.INTER_LINEAR)
    )
    for y, x in [(0, 0), (0, 32), (32, 32), (0, 0)]:
        np.testing.assert_array_equal(views(frame)[0], frame[y : y + 64, x : x + 96])
    views.reset()
    np.testing.assert_array_equal(views(frame), key)
    low = TileViewProvider((64, 96, 3), offsets=[[40, 0]])
    low(frame)  # the key view fits any frame
    with pytest.raises(ValueError, match="does not fit"):
        low(frame)
    with pytest.raises(ValueError, match="offsets must list"):
        TileViewProvider((64, 96, 3), offsets=[[0, -1]])
    with pytest.raises(ValueError, match="shape must be"):
        TileViewProvider((64, 96), offsets=[[0, 0]])


@pytest.fixture(scope="module")
def inner(tiny_model_factory):
    return tiny_model_factory("perframe-lite0-sep")


def _frame(seed: int, size: tuple[int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, *size, 3), generator=g, dtype=torch.uint8)


def _one_hot(index: int, n: int) -> torch.Tensor:
    return F.one_hot(torch.tensor([index]), n).float()


@torch.no_grad()
def test_key_view_fills_the_memory_with_the_downscaled_frames_probabilities(inner) -> None:
    model = TileMemory(inner, GRID, SCALE).eval()
    assert model.cfg.input_size == (96, 128) and model.memory_size == (24, 32)
    view = _frame(0, (64, 96))  # the engine's key view: the whole frame, resized
    n = len(model.offsets) + 1
    flow = torch.zeros(1, *model.aux_specs[0].shape)
    memory = torch.rand(1, 11, 24, 32)  # whatever came before a reset is overwritten
    logits, new = model(flow, _one_hot(n - 1, n), view, memory)
    expected = F.interpolate(
        inner(normalize(view))[0].softmax(1), size=(24, 32), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(new, expected)
    torch.testing.assert_close(logits, torch.log(expected.clamp_min(1e-6)))


@torch.no_grad()
def test_a_tile_writes_only_inside_itself_and_flow_moves_the_rest(inner) -> None:
    model = TileMemory(inner, GRID, SCALE, blend=1.0, ramp=0).eval()
    view = _frame(1, (64, 96))  # the engine's crop of the second tile
    n = len(model.offsets) + 1
    memory = torch.rand(1, 11, 24, 32)
    zero = torch.zeros(1, *model.aux_specs[0].shape)
    y, x0 = model.offsets[1]  # the second tile: top right
    assert (y, x0) == (0, 32)
    _, new = model(zero, _one_hot(1, n), view, memory)
    crop = inner(normalize(view))[0].softmax(1)  # (1, 11, 16, 24)
    torch.testing.assert_close(new[:, :, :16, 8:], crop)
    torch.testing.assert_close(new[:, :, :, :8], memory[:, :, :, :8])  # left of the tile
    torch.testing.assert_close(new[:, :, 16:], memory[:, :, 16:])  # below it
    # flow of one memory cell to the right (flow_factor pixels of the flow's finer grid):
    # outside the tile the memory is the previous one sampled one cell further right
    shift = torch.zeros_like(zero)
    shift[:, 0] = float(model.flow_factor)
    _, moved = model(shift, _one_hot(1, n), view, memory)
    torch.testing.assert_close(moved[:, :, 16:, :-1], memory[:, :, 16:, 1:])


def test_bad_wrappings_are_refused_in_one_line(inner, tiny_model_factory) -> None:
    with pytest.raises(VidsegError, match="do not cover the frame"):
        TileMemory(inner, (1, 2), 2.0)
    with pytest.raises(VidsegError, match="tiles would repeat"):
        TileMemory(inner, (3, 3), 1.2)
    with pytest.raises(VidsegError, match="carries state"):
        TileMemory(tiny_model_factory("recurrent-lite0-gru"), GRID, SCALE)
    with pytest.raises(VidsegError, match="--tile-blend"):
        TileMemory(inner, GRID, SCALE, blend=0.0)


def test_engine_runs_the_tile_bundle_as_torch_streams_it(tile_bundle, sample_clip) -> None:
    """Twelve clip frames with a reset after six: the engine's labels (at their stride) against
    the torch wrapper streaming the same frames with its own providers."""
    from vidseg.engine.bundle import load_bundle
    from vidseg.engine.segmenter import Segmenter
    from vidseg.export.cli import parity_frames
    from vidseg.models.train import model_from_checkpoint

    manifest = load_bundle(tile_bundle).manifest
    assert manifest.family == "recurrent"
    assert [(a.name, a.provider) for a in manifest.aux_inputs] == [
        ("flow", "dis_flow"),
        ("tile", "tile_cycle"),
        ("view", "tile_view"),
    ]
    view = manifest.aux_inputs[2]
    assert view.dtype == "uint8" and view.shape == (64, 96, 3)
    # 64x96 tiles of the 96x128 frame, in snake order: consecutive tiles are neighbours
    assert view.args == {"offsets": [[0, 0], [0, 32], [32, 32], [32, 0]]}
    assert manifest.train["tiles"]["grid"] == [2, 2]
    # the graph never sees the whole frame: the engine cuts the view
    import onnx

    graph = onnx.load(str(tile_bundle / manifest.graphs["step"])).graph
    assert "frame" not in {i.name for i in graph.input}
    frames = parity_frames(sample_clip, (96, 128), 12)
    seg = Segmenter(tile_bundle, warmup=False)
    inner, _ = model_from_checkpoint(tile_bundle.parent / "pf.pt")
    model = TileMemory(inner.eval(), GRID, manifest.train["tiles"]["scale"]).eval()
    memory = None
    agree = []
    with torch.no_grad():
        for i, frame in enumerate(frames):
            if i == 6:
                seg.reset()
                memory = None
            got = seg.step(frame).outputs.labels
            logits, memory = model.stream_logits(torch.from_numpy(frame)[None], memory)
            agree.append((got == logits[0].argmax(0).numpy()).mean())
    assert min(agree) > 0.999


def test_cli_refuses_tiles_with_split(tiny_perframe_checkpoint, tmp_path, capsys) -> None:
    from vidseg.export.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            [
                str(tiny_perframe_checkpoint),
                "--out",
                str(tmp_path / "x.vidseg"),
                "--tiles",
                "2x2",
                "--split",
            ]
        )
    assert exc.value.code == 2
    assert "--tiles wraps a per-frame CHECKPOINT" in capsys.readouterr().err


def test_batched_tile_streams_out_of_phase_match_single_segmenters(
    tile_bundle, sample_clip
) -> None:
    """Three streams in one MultiStreamSegmenter, their tile cycles put out of step by cuts at
    different ticks: each row runs its own view and gives what its own Segmenter gives."""
    from vidseg.engine.multistream import MultiStreamSegmenter
    from vidseg.engine.segmenter import Segmenter
    from vidseg.engine.video import read_frames

    clip = [f.image for f in read_frames(sample_clip, max_frames=24)]
    streams = [clip[0:8], clip[8:16], clip[16:24]]
    multi = MultiStreamSegmenter(tile_bundle, streams=3)
    singles = [Segmenter(tile_bundle) for _ in streams]
    resets = {(1, 2), (2, 3)}
    for tick in range(8):
        for i in range(3):
            if (i, tick) in resets:
                multi.reset(i)
                singles[i].reset()
        results = multi.step([s[tick] for s in streams])
        for i, got in enumerate(results):
            want = singles[i].step(streams[i][tick])
            assert (got.labels == want.labels).mean() >= 0.999, (tick, i)
    # 8, 6 and 5 frames since each stream's last reset: the next views are tiles 3, 1 and 0
    for name in ("tile", "view"):
        assert [dict(aux)[name]._clock._next for aux in multi.aux] == [3, 1, 0]


def test_bad_view_args_in_a_manifest_are_refused_in_one_line(tile_bundle, tmp_path) -> None:
    """The manifest's check names the kind only; opening the bundle makes each provider, and
    one that cannot take its args fails the load in one line."""
    import json
    import shutil

    from vidseg.engine import Segmenter
    from vidseg.engine.errors import BundleError

    for field, value, message in [
        (
            "args",
            {"offsets": [[0, -4]]},
            r"'aux_inputs\[2\]' tile_view cannot take .*offsets must list",
        ),
        (
            "args",
            {"offset": [[0, 0]]},
            r"'aux_inputs\[2\]' tile_view cannot take .*unexpected keyword",
        ),
        ("args", [[0, 0]], r"'aux_inputs\[2\]\.args' must be dict"),
    ]:
        bundle = tmp_path / f"b{len(list(tmp_path.iterdir()))}.vidseg"
        shutil.copytree(tile_bundle, bundle)
        raw = json.loads((bundle / "manifest.json").read_text())
        raw["aux_inputs"][2][field] = value
        (bundle / "manifest.json").write_text(json.dumps(raw))
        with pytest.raises(BundleError, match=message):
            Segmenter(bundle, warmup=False)
