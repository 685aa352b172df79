"""``vidseg-export --wrap``: foreign ONNX segmenters (export/wrap.py) as bundles, through the
engine, against each model's own reference pipeline."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidseg.benchmarks import evaluate
from vidseg.engine import Segmenter
from vidseg.engine.bundle import load_bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.engine.video import read_frames
from vidseg.export import cli
from vidseg.models.data import CAMVID_CLASSES

SIZE = (64, 96)  # (height, width) the wrapped bundles take
N_FRAMES = 12
RESET_AT = 6
# the per-frame net's training normalisation: BGR, 0-1 pixels, these (m, s) per BGR channel
BGR_MEAN = np.array([0.406, 0.456, 0.485], np.float32)
BGR_STD = np.array([0.225, 0.224, 0.229], np.float32)
# the recurrent net's: RGB, ImageNet statistics on 0-255 values
RGB_MEAN = (123.675, 116.28, 103.53)
RGB_STD = (58.395, 57.12, 57.375)
REC_CLASSES = "road,car,person,sky,other"


class PerFrameNet(nn.Module):
    """A tiny foreign segmenter: (N, 3, H, W) float BGR in, (N, K, H/4, W/4) logits out. The
    1/8 branch is upsampled and added to the 1/4 one, so H and W must be multiples of 8."""

    def __init__(self, classes: int = len(CAMVID_CLASSES)) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1)
        self.c3, self.head = nn.Conv2d(16, 16, 3, 2, 1), nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.c1(x))
        b = F.relu(self.c2(a))
        c = F.relu(self.c3(b))
        return self.head(b + F.interpolate(c, scale_factor=2.0, mode="nearest"))


class RecurrentNet(nn.Module):
    """A tiny foreign recurrent segmenter with two state tensors, RVM style:
    (img, h1, h2) -> (seg at 1/4, h1', h2', feat) with h1 (8, H/2, W/2), h2 (16, H/4, W/4)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.e1, self.g1 = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(16, 8, 3, 1, 1)
        self.e2, self.g2 = nn.Conv2d(8, 16, 3, 2, 1), nn.Conv2d(32, 16, 3, 1, 1)
        self.head = nn.Conv2d(16, classes, 1)

    def forward(
        self, img: torch.Tensor, h1: torch.Tensor, h2: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        a = F.relu(self.e1(img))
        h1 = torch.tanh(self.g1(torch.cat([a, h1], 1)))
        b = F.relu(self.e2(h1))
        h2 = torch.tanh(self.g2(torch.cat([b, h2], 1)))
        return self.head(h2), h1, h2, b


def _spread(net: nn.Module) -> nn.Module:
    """Weights drawn wider than PyTorch's default, so the untrained net's labels vary over
    the frame and its state matters (the default init predicts one or two classes)."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            nn.init.normal_(module.weight, std=2.0 / fan_in**0.5)
            nn.init.zeros_(module.bias)
    return net


def _export(
    net: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict | None,
    opset: int,
) -> Path:
    torch.manual_seed(0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def perframe_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PerFrameNet with a dynamic batch and input size, opset 17."""
    torch.manual_seed(0)
    net = _spread(PerFrameNet())
    return _export(
        net,
        (torch.zeros(1, 3, *SIZE),),
        tmp_path_factory.mktemp("wrap") / "pf.onnx",
        ["image"],
        ["out"],
        {"image": {0: "n", 2: "h", 3: "w"}, "out": {0: "n", 2: "h4", 3: "w4"}},
        17,
    )


@pytest.fixture(scope="module")
def recurrent_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RecurrentNet with every shape static (batch 1 too), opset 11 (converted when wrapped)."""
    torch.manual_seed(1)
    net = _spread(RecurrentNet())
    h, w = SIZE
    args = (
        torch.zeros(1, 3, h, w),
        torch.zeros(1, 8, h // 2, w // 2),
        torch.zeros(1, 16, h // 4, w // 4),
    )
    return _export(
        net,
        args,
        tmp_path_factory.mktemp("wrap") / "rec.onnx",
        ["img", "h1", "h2"],
        ["seg", "h1_next", "h2_next", "feat"],
        None,
        11,
    )


def perframe_flags(model: Path, out: Path) -> list[str]:
    """The documented wrap of PerFrameNet: BGR, its 0-1 (m, s) times 255."""
    mean, std = (",".join(f"{v:.6g}" for v in 255 * a) for a in (BGR_MEAN, BGR_STD))
    return [
        "--wrap",
        str(model),
        "--out",
        str(out),
        "--classes",
        ",".join(CAMVID_CLASSES),
        "--ignore-index",
        "11",
        "--input-size",
        f"{SIZE[0]}x{SIZE[1]}",
        "--channel-order",
        "bgr",
        "--mean",
        mean,
        "--std",
        std,
    ]


@pytest.fixture(scope="module")
def perframe_bundle(perframe_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wrap") / "pf.vidseg"
    assert cli.main(perframe_flags(perframe_onnx, out)) == 0
    return out


@pytest.fixture(scope="module")
def recurrent_bundle(recurrent_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wrap") / "rec.vidseg"
    mean, std = (",".join(map(str, v)) for v in (RGB_MEAN, RGB_STD))
    assert (
        cli.main(
            [
                "--wrap",
                str(recurrent_onnx),
                "--out",
                str(out),
                "--classes",
                REC_CLASSES,
                "--palette",
                "128,64,128;64,0,128;64,64,0;128,128,128;0,0,0",
                "--state",
                "h1:h1_next",
                "--state",
                "h2:h2_next",
                "--logits-output",
                "seg",
                "--mean",
                mean,
                "--std",
                std,
                "--label-stride",
                "1",
                "--scores",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def clip(sample_clip: Path) -> list[np.ndarray]:
    """Frames at the clip's own size: the engine resizes them to the model input."""
    return [f.image for f in read_frames(sample_clip, max_frames=N_FRAMES)]


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _to_input(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_LINEAR)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def test_perframe_manifest_keeps_the_models_stride(perframe_bundle: Path) -> None:
    manifest = load_bundle(perframe_bundle).manifest
    assert manifest.family == "perframe" and manifest.classes == CAMVID_CLASSES
    assert manifest.ignore_index == 11 and manifest.state == ()
    assert [(o.name, o.role, o.stride) for o in manifest.outputs] == [
        ("labels", "labels", 4),
        ("logits", "logits", 4),
    ]
    assert manifest.train["wrapped"]["channel_order"] == "bgr"
    graph = onnx.load(str(perframe_bundle / "step.onnx")).graph
    assert [i.name for i in graph.input] == ["frame"]
    added = [n.op_type for n in graph.node if not n.output[0].startswith("model/")]
    assert "Resize" not in added and "ArgMax" in added  # the logits are left at 1/4


def test_perframe_matches_its_own_pipeline(
    perframe_bundle: Path, perframe_onnx: Path, clip: list[np.ndarray]
) -> None:
    """Segmenter on the wrapped bundle == the model's own pipeline (BGR, /255, (x - m) / s,
    NCHW, ORT on the original graph, arg-max) upsampled to the frame as the engine does."""
    original = _session(perframe_onnx)
    segmenter = Segmenter(perframe_bundle)
    worst = 1.0
    for frame in clip:
        bgr = _to_input(frame)[..., ::-1].astype(np.float32) / 255
        x = ((bgr - BGR_MEAN) / BGR_STD).transpose(2, 0, 1)[None]
        (logits,) = original.run(None, {"image": np.ascontiguousarray(x)})
        assert logits.shape == (1, 11, SIZE[0] // 4, SIZE[1] // 4)
        ref = GraphOutputs(logits[0].argmax(0).astype(np.uint8), None, logits[0])
        expected, _ = upsample(ref, *frame.shape[:2])
        result = segmenter.step(frame)
        assert result.labels.shape == frame.shape[:2]
        np.testing.assert_allclose(result.outputs.logits, logits[0], atol=1e-4)
        worst = min(worst, _agreement(result.labels, expected))
    assert worst >= 0.9999, worst  # (x/255 - m)/s vs (x - 255m)/(255s): float rounding only


def reference_loop(
    model: Path, frames: list[np.ndarray], reset_at: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """RecurrentNet's own loop: ImageNet-normalised RGB, state carried from zeros and reset
    before frame ``reset_at``, logits resized to the input (cv2, bilinear): (labels, scores)."""
    session = _session(model)
    zeros = {
        "h1": np.zeros((1, 8, 32, 48), np.float32),
        "h2": np.zeros((1, 16, 16, 24), np.float32),
    }
    state, out = dict(zeros), []
    mean, std = np.array(RGB_MEAN, np.float32), np.array(RGB_STD, np.float32)
    for index, frame in enumerate(frames):
        if index == reset_at:
            state = dict(zeros)
        x = ((_to_input(frame).astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
        seg, h1, h2 = session.run(["seg", "h1_next", "h2_next"], {"img": x, **state})
        state = {"h1": h1, "h2": h2}
        logits = cv2.resize(
            seg[0].transpose(1, 2, 0), (SIZE[1], SIZE[0]), interpolation=cv2.INTER_LINEAR
        ).transpose(2, 0, 1)
        p = np.exp(logits - logits.max(0))
        scores = np.round(255 * (p / p.sum(0)).max(0)).astype(np.uint8)
        labels, _ = upsample(
            GraphOutputs(logits.argmax(0).astype(np.uint8), None, logits), *frame.shape[:2]
        )
        out.append((labels, scores))
    return out


def test_recurrent_manifest_and_graph(recurrent_bundle: Path) -> None:
    manifest = load_bundle(recurrent_bundle).manifest
    assert manifest.family == "recurrent"
    assert [(s.input, s.output, s.shape) for s in manifest.state] == [
        ("h1", "h1_next", (8, 32, 48)),
        ("h2", "h2_next", (16, 16, 24)),
    ]
    assert [(o.role, o.stride) for o in manifest.outputs] == [
        ("labels", 1),
        ("scores", 1),
        ("logits", 1),
    ]
    assert manifest.palette[0] == (128, 64, 128)
    assert manifest.train["wrapped"]["opset"] == [11, 13]
    model = onnx.load(str(recurrent_bundle / "step.onnx"))
    assert [o.name for o in model.graph.output] == [
        "labels",
        "h1_next",
        "h2_next",
        "scores",
        "logits",
    ]  # "feat" pruned
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]


def test_recurrent_matches_a_plain_loop(
    recurrent_bundle: Path, recurrent_onnx: Path, clip: list[np.ndarray]
) -> None:
    """State carried over 12 frames with a reset: the engine == the model's own loop."""
    expected = reference_loop(recurrent_onnx, clip, RESET_AT)
    segmenter = Segmenter(recurrent_bundle)
    worst_labels, worst_scores = 1.0, 0
    for index, (frame, (labels, scores)) in enumerate(zip(clip, expected)):
        if index == RESET_AT:
            segmenter.reset()
        result = segmenter.step(frame)
        worst_labels = min(worst_labels, _agreement(result.labels, labels))
        got = result.outputs.scores.astype(int)
        worst_scores = max(worst_scores, int(np.abs(got - scores).max()))
    assert worst_labels >= 0.9999, worst_labels
    assert worst_scores <= 1
    # without the reset the state would differ: the reset is real
    carried = reference_loop(recurrent_onnx, clip, reset_at=-1)
    assert not np.array_equal(carried[RESET_AT][0], expected[RESET_AT][0])


def test_wrapped_bundle_through_vidseg_eval(
    perframe_bundle: Path, camvid: Path, tmp_path: Path
) -> None:
    report = tmp_path / "eval.json"
    assert (
        evaluate.main(
            [
                "--model",
                str(perframe_bundle),
                "--frames",
                str(camvid / "val"),
                "--labels",
                str(camvid / "valannot"),
                "--max-frames",
                "3",
                "-q",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    result = json.loads(report.read_text())
    assert result["frames"] == 3 and result["model"] == "wrapped-pf"
    assert set(result["per_class"]) == set(CAMVID_CLASSES)


def _fails(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI expecting exit 3: one line on stderr, nothing under ``out``."""
    assert cli.main(argv) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vidseg-export: error: "), err
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    return err


def test_missing_and_non_onnx_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.vidseg"
    assert "model not found" in _fails(perframe_flags(tmp_path / "nope.onnx", out), out, capsys)
    text = tmp_path / "model.onnx"
    text.write_text("this is not a protobuf\n" * 20)
    assert "not a valid ONNX model" in _fails(perframe_flags(text, out), out, capsys)


def test_state_naming_no_input(
    perframe_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.vidseg"
    err = _fails(perframe_flags(perframe_onnx, out) + ["--state", "hidden:out"], out, capsys)
    assert "'hidden' is not a graph input" in err


def test_size_the_graph_rejects(
    perframe_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """36x52: the 1/8 branch comes back 10x14 against the 1/4 branch's 9x13."""
    out = tmp_path / "x.vidseg"
    argv = perframe_flags(perframe_onnx, out)
    argv[argv.index("--input-size") + 1] = "36x52"
    assert "the graph fails on a 36x52 input" in _fails(argv, out, capsys)


def test_dynamic_state_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h, w = SIZE
    model = _export(
        RecurrentNet(),
        (
            torch.zeros(1, 3, h, w),
            torch.zeros(1, 8, h // 2, w // 2),
            torch.zeros(1, 16, h // 4, w // 4),
        ),
        tmp_path / "dyn.onnx",
        ["img", "h1", "h2"],
        ["seg", "h1_next", "h2_next", "feat"],
        {"h1": {0: "n", 2: "y", 3: "x"}},
        17,
    )
    out = tmp_path / "x.vidseg"
    err = _fails(
        [
            "--wrap",
            str(model),
            "--out",
            str(out),
            "--classes",
            REC_CLASSES,
            "--state",
            "h1:h1_next",
            "--state",
            "h2:h2_next",
            "--logits-output",
            "seg",
        ],
        out,
        capsys,
    )
    assert "state input 'h1'" in err and "static" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mean", "0.5,0.5"], "--mean: expected 3 comma-separated numbers"),
        (["--std", "1,0,1"], "--std: values must be non-zero"),
        (["--state", "h1"], "expected IN:OUT"),
        (["--palette", "1,2,3"], "--palette: expected 11 colours"),
        (["--split"], "--wrap takes no"),
    ],
)
def test_usage_mistakes_exit_2(
    perframe_onnx: Path,
    tmp_path: Path,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "x.vidseg"
    with pytest.raises(SystemExit) as exc:
        cli.main(perframe_flags(perframe_onnx, out) + extra)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_wrap_flags_need_wrap(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tiny_checkpoint), "--out", str(tmp_path / "x.vidseg"), "--mean", "1,2,3"])
    assert exc.value.code == 2 and "--mean only go with --wrap" in capsys.readouterr().err


def test_documented_wrap_flags_exist() -> None:
    """The commands of docs/wrap.md name the wrap flags, and only flags vidseg-export has."""
    repo = Path(__file__).resolve().parents[2]
    doc = (repo / "docs" / "wrap.md").read_text()
    commands = re.findall(r"^```text\n(vidseg-export .*?)^```", doc, flags=re.DOTALL | re.MULTILINE)
    assert len(commands) == 3  # the synopsis and the two worked examples
    flags = set(re.findall(r"--[a-z][a-z-]*", "".join(commands)))
    assert {"--wrap", "--classes", "--mean", "--std", "--state", "--input-size"} <= flags
    usage = set(re.findall(r"--[a-z][a-z-]*", cli.build_parser().format_help()))
    assert flags <= usage, flags - usage


def test_static_batch_refuses_several_streams(recurrent_bundle: Path) -> None:
    """A graph with a static batch of 1 runs one stream per Segmenter: asking a
    MultiStreamSegmenter for more is a clear error, not an ONNX Runtime failure at warm-up."""
    from vidseg.engine.multistream import MultiStreamSegmenter

    with pytest.raises(BundleError, match="fixed batch of 1.*one Segmenter per stream"):
        MultiStreamSegmenter(recurrent_bundle, streams=2)
    assert MultiStreamSegmenter(recurrent_bundle, streams=1).streams == 1
