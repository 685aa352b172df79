"""Seed-001 temporal UNets: registry, Table 3 sizes, shapes, state through time, cells, export."""

from __future__ import annotations

import importlib.metadata
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg.engine.errors import VidsegError
from vidseg.models import cli
from vidseg.models.registry import create_model, list_models
from vidseg.models.unet001 import (
    PAPER_NUM_CLASSES,
    PAPER_TABLE3_PARAMS,
    ConvRNNCell,
    seed001_gru,
)

SIZE = (64, 96)
SMALL = (32, 48)  # the time-stepping tests: every level still >= 4x6
# Table 3 has every (block, size) pair except ConvNeXt shallow.
PAIRS = [
    (b, s)
    for b, s in itertools.product(
        ("vanilla", "resnet", "convnext"), ("shallow", "deep", "original")
    )
    if (b, s) != ("convnext", "shallow")
]
RECURRENT = [
    f"recurrent-unet-{b}-{s}-{c}" for (b, s), c in itertools.product(PAIRS, ("crnn", "cgru"))
]
PERFRAME = [f"perframe-unet-{b}-{s}" for b, s in PAIRS]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_every_variant() -> None:
    names = set(list_models())
    assert set(RECURRENT) | set(PERFRAME) <= names
    assert not any("unet-convnext-shallow" in n for n in names)
    assert set(PAPER_TABLE3_PARAMS) <= names and len(PAPER_TABLE3_PARAMS) == 19


@pytest.mark.parametrize("name", sorted(PAPER_TABLE3_PARAMS))
def test_parameter_count_matches_table3(name: str) -> None:
    """Exact (0 % tolerance): with the paper's 20 labels every Table 3 entry is reproduced
    digit for digit, so any drift is a real architecture change. Built on the meta device:
    no memory, no init time."""
    with torch.device("meta"):
        model = create_model(name, num_classes=PAPER_NUM_CLASSES)
    assert _params(model) == PAPER_TABLE3_PARAMS[name]


def test_perframe_is_recurrent_without_cells() -> None:
    with torch.device("meta"):
        for block, size in PAIRS:
            base = _params(create_model(f"perframe-unet-{block}-{size}"))
            for cell in ("crnn", "cgru"):
                model = create_model(f"recurrent-unet-{block}-{size}-{cell}")
                assert _params(model) - base == _params(model.cells)


@pytest.mark.parametrize(
    "name, states",
    [
        ("recurrent-unet-vanilla-shallow-cgru", [(16, 64, 96), (32, 32, 48), (64, 16, 24)]),
        (
            "recurrent-unet-resnet-deep-crnn",
            [(16, 64, 96), (32, 32, 48), (64, 16, 24), (128, 8, 12)],
        ),
    ],
)
def test_shapes_and_cfg(name: str, states: list[tuple[int, int, int]]) -> None:
    model = create_model(name, input_size=SIZE).eval()
    assert model.cfg.family == "recurrent" and model.cfg.input_size == SIZE
    assert model.cfg.stride == 2 ** (len(states) - 1) and model.cfg.num_classes == 11
    assert [(s.channels, *(d // s.stride for d in SIZE)) for s in model.cfg.state] == states
    assert [s.name for s in model.cfg.state] == [f"h{2**i}" for i in range(len(states))]
    with torch.no_grad():
        logits, *state = model(torch.randn(2, 3, *SIZE))
        assert logits.shape == (2, 11, *SIZE)
        assert [tuple(s.shape[1:]) for s in state] == states
        assert all(tuple(z.shape) == (2, *s) for z, s in zip(model.initial_state(2, *SIZE), states))
        clip_logits, *clip_state = model(torch.randn(2, 3, 3, *SIZE))
    assert clip_logits.shape == (2, 3, 11, *SIZE)
    assert [tuple(s.shape[1:]) for s in clip_state] == states


@pytest.mark.parametrize(
    "name", ["recurrent-unet-vanilla-shallow-crnn", "recurrent-unet-convnext-deep-cgru"]
)
def test_clip_forward_equals_frame_by_frame(name: str) -> None:
    """Training (whole clip, zero state) and streaming (one frame, state carried) agree."""
    torch.manual_seed(0)
    model = create_model(name, input_size=SMALL).eval()
    clip = torch.randn(1, 3, 3, *SMALL)
    with torch.no_grad():
        clip_logits, *clip_state = model(clip)
        state = model.initial_state(1, *SMALL)
        for t in range(3):
            logits, *state = model(clip[:, t], *state)
            torch.testing.assert_close(logits, clip_logits[:, t], atol=1e-5, rtol=1e-4)
    for a, b in zip(state, clip_state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _first_frame_grad(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """Loss on the last frame of a 3-frame clip; returns the model and d loss / d frame 0.

    Eval mode, so BatchNorm does not couple the frames: any gradient on frame 0 travelled
    through the cells' state."""
    torch.manual_seed(0)
    model = create_model(name, input_size=SMALL).eval()
    clip = torch.randn(1, 3, 3, *SMALL, requires_grad=True)
    logits, *_ = model(clip)
    logits[:, -1].logsumexp(1).mean().backward()
    return model, clip.grad[:, 0]


def test_gradients_reach_cells_through_time() -> None:
    model, grad0 = _first_frame_grad("recurrent-unet-resnet-shallow-cgru")
    assert grad0.abs().sum() > 0
    dead = [n for n, p in model.cells.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead, dead
    _, grad0 = _first_frame_grad("perframe-unet-resnet-shallow")  # no memory, no gradient
    assert not grad0.any()


def test_perframe_has_no_state() -> None:
    model = create_model("perframe-unet-vanilla-shallow", input_size=SIZE).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *SIZE))
    assert len(out) == 1 and out[0].shape == (1, 11, *SIZE)
    assert model.cfg.state == () and model.cfg.family == "perframe" and model.cells is None


def test_crnn_equation() -> None:
    torch.manual_seed(0)
    cell = ConvRNNCell(4)
    x, h = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(cell(x, h), torch.tanh(cell.conv_x(x) + cell.conv_h(h)))
    assert _params(cell) == 2 * (9 * 4 * 4 + 4)  # C_x, C_h: 3x3, C -> C, with bias


def test_cgru_equations() -> None:
    torch.manual_seed(0)
    cell = seed001_gru(4)
    x, h = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    r, z = torch.sigmoid(cell.gates(torch.cat([x, h], 1))).chunk(2, 1)
    n = torch.tanh(cell.candidate(torch.cat([x, r * h], 1)))
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h)  # paper eq. 11
    assert _params(cell) == (9 * 8 * 8 + 8) + (9 * 8 * 4 + 4)  # one C_rz, one C_n
    with torch.no_grad():  # z -> 1: the state is kept
        cell.gates.bias[4:] = 1e4
    torch.testing.assert_close(cell(x, h), h)
    with torch.no_grad():  # z -> 0: the state is replaced by the candidate
        cell.gates.bias[4:] = -1e4
    torch.testing.assert_close(cell(x, h), n)


class _PreMergeConvGRUCell(torch.nn.Module):
    """The seed-001 cGRU as it stood before the two ConvGRUs became one class (verbatim)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_rz = torch.nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.conv_n = torch.nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r, z = torch.sigmoid(self.conv_rz(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.conv_n(torch.cat([x, r * h], dim=1)))
        return (1 - z) * n + z * h


@pytest.mark.parametrize(
    "name", ["recurrent-unet-vanilla-shallow-cgru", "recurrent-unet-convnext-deep-cgru"]
)
def test_checkpoints_from_before_the_one_convgru_give_identical_logits(name: str) -> None:
    """A model built with the old cells, its state dict (``conv_rz``/``conv_n`` keys) loaded
    into today's model: the same logits and state, bit for bit, over a clip."""
    torch.manual_seed(0)
    old = create_model(name, input_size=SMALL).eval()
    old.cells = torch.nn.ModuleList(
        _PreMergeConvGRUCell(c.gates.in_channels // 2) for c in old.cells
    )
    state_dict = old.state_dict()
    assert any(".conv_rz." in k for k in state_dict)
    new = create_model(name, input_size=SMALL).eval()
    new.load_state_dict(state_dict)
    clip = torch.randn(1, 3, 3, *SMALL)
    with torch.no_grad():
        for a, b in zip(old(clip), new(clip)):
            assert torch.equal(a, b)


def test_bad_arguments_raise_vidseg_error() -> None:
    with pytest.raises(VidsegError, match="no pretrained weights"):
        create_model("recurrent-unet-vanilla-shallow-crnn", pretrained=True)
    with pytest.raises(VidsegError, match="multiples of 8"):
        create_model("recurrent-unet-vanilla-deep-crnn", input_size=(60, 96))
    model = create_model("recurrent-unet-vanilla-shallow-crnn", input_size=SIZE)
    with pytest.raises(VidsegError, match="3 state tensors"):
        model(torch.zeros(1, 3, *SIZE), torch.zeros(1, 16, *SIZE))
    with pytest.raises(VidsegError, match="multiples of 4"):
        model(torch.zeros(1, 3, 62, 96))


def test_vidseg_models_cli(capsys: pytest.CaptureFixture[str]) -> None:
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("vidseg-models") == "vidseg.models.entry:models"  # runs cli.main
    assert cli.main(["--num-classes", str(PAPER_NUM_CLASSES)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert set(rows) == set(list_models())
    for name in RECURRENT + PERFRAME:
        family, params, stride, paper = rows[name]
        assert family == name.split("-")[0] and stride == ("8" if "-deep" in name else "4")
        expected = f"{PAPER_TABLE3_PARAMS[name] / 1e6:.3f}" if name in PAPER_TABLE3_PARAMS else "-"
        assert paper == expected and (paper == "-" or params == paper)


def test_export_parity_with_reset(tmp_path: Path, tiny_model_factory) -> None:
    """Export a tiny shallow cGRU model and run it in ONNX Runtime next to torch."""
    onnx = pytest.importorskip("onnx")
    from vidseg.export.onnx import export_graph
    from vidseg.export.parity import check_parity

    model = tiny_model_factory("recurrent-unet-vanilla-shallow-cgru")
    path = tmp_path / "step.onnx"
    export_graph(model, path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["frame", "h1_in", "h2_in", "h4_in"]
    assert [o.name for o in graph.output] == ["labels", "h1_out", "h2_out", "h4_out"]
    frames = list(np.random.default_rng(0).integers(0, 256, (6, *SIZE, 3), dtype=np.uint8))
    report = check_parity(model, path, frames, resets=(3,))
    assert report.frames == 6 and report.resets == (3,)
    assert report.passed, report.summary()
