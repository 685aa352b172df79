"""vidseg-train on real CamVid images, a few tiny steps: runs, checkpoints, resumes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg.models import train

ARGS = [
    "--model",
    "recurrent-lite0-gru",
    "--limit",
    "4",
    "--batch",
    "2",
    "--seq-len",
    "3",
    "--crop",
    "64",
    "96",
    "--input-size",
    "64",
    "96",
    "--eval-every",
    "2",
    "--scratch",
]


def test_train_checkpoint_and_resume(camvid: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main([*ARGS, "--data", str(camvid), "--out", str(out), "--max-steps", "2"]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["model_name"] == "recurrent-lite0-gru"
    assert ckpt["pretrained"] == ""  # --scratch
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["val_miou"] <= 100 and "val_miou_no_state" in metrics
    assert (
        train.main(
            [*ARGS, "--data", str(camvid), "--out", str(out), "--max-steps", "4", "--resume"]
        )
        == 0
    )
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["step"] == 4
    assert len(json.loads(resumed["history"])) == 2  # history kept across the resume
    changed = [k for k in ckpt["model"] if not torch.equal(ckpt["model"][k], resumed["model"][k])]
    assert changed, "resumed training did not update the weights"


def test_train_rejects_bad_args(camvid: Path, tmp_path: Path, capsys) -> None:
    import pytest

    with pytest.raises(SystemExit) as exc:
        train.main(["--model", "nope", "--data", str(camvid), "--out", str(tmp_path)])
    assert exc.value.code == 2 and "unknown --model" in capsys.readouterr().err
    assert (
        train.main(
            [
                "--model",
                "recurrent-lite0-gru",
                "--data",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "o"),
                "--max-steps",
                "1",
            ]
        )
        != 0
    )
    assert "CamVid split" in capsys.readouterr().err
    assert (
        train.main(
            [
                *ARGS,
                "--data",
                str(camvid),
                "--out",
                str(tmp_path / "r"),
                "--max-steps",
                "1",
                "--resume",
            ]
        )
        != 0
    )
    assert "--resume: checkpoint not found" in capsys.readouterr().err


def test_models_without_pretrained_weights_train_without_scratch(camvid: Path, tmp_path) -> None:
    """Each registry name trains with plain `vidseg-train --model NAME` (seed-001 UNets have no
    ImageNet weights: their default is from scratch, no --scratch needed)."""
    args = [
        "--model",
        "recurrent-unet-vanilla-shallow-crnn",
        "--limit",
        "2",
        "--batch",
        "1",
        "--seq-len",
        "2",
        "--crop",
        "32",
        "48",
        "--input-size",
        "32",
        "48",
        "--data",
        str(camvid),
        "--out",
        str(tmp_path / "u"),
        "--max-steps",
        "1",
    ]
    assert train.main(args) == 0


def test_train_workers_match_each_other_and_resume(
    camvid: Path, tmp_path: Path, monkeypatch
) -> None:
    """--workers N: batches are seeded per step, so 1 or 2 worker processes train the same
    weights, and a run interrupted after step 2 and resumed ends where an uninterrupted one
    does."""

    def run(out: Path, workers: int, *extra: str) -> int:
        return train.main(
            [
                *ARGS,
                "--data",
                str(camvid),
                "--out",
                str(out),
                "--max-steps",
                "3",
                "--workers",
                str(workers),
                *extra,
            ]
        )

    def same_weights(out: Path, reference: dict) -> bool:
        weights = torch.load(out / "last.pt", weights_only=True)["model"]
        return all(torch.equal(weights[k], v) for k, v in reference.items())

    assert run(tmp_path / "w2", 2) == 0
    two = torch.load(tmp_path / "w2" / "last.pt", weights_only=True)
    assert two["step"] == 3 and json.loads(two["train_args"])["workers"] == 2
    assert run(tmp_path / "w1", 1) == 0
    assert same_weights(tmp_path / "w1", two["model"])

    calls = []
    real_step = train.train_step

    def interrupt_at_step_3(*args):
        calls.append(1)
        if len(calls) == 3:  # after the step-2 checkpoint
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(train, "train_step", interrupt_at_step_3)
    assert run(tmp_path / "r", 2) == 130
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["step"] == 2
    monkeypatch.setattr(train, "train_step", real_step)
    assert run(tmp_path / "r", 2, "--resume") == 0
    assert same_weights(tmp_path / "r", two["model"])


def test_train_device_and_amp_errors(camvid: Path, tmp_path: Path, capsys) -> None:
    import pytest

    base = [*ARGS, "--data", str(camvid), "--out", str(tmp_path / "o"), "--max-steps", "1"]
    assert train.main([*base, "--amp"]) == 1  # bf16 autocast is CUDA-only
    err = capsys.readouterr().err.strip()
    assert "--amp" in err and "CUDA" in err and "\n" not in err
    assert train.main([*base, "--device", "tpu"]) == 1
    assert "use cpu, cuda, cuda:N or auto" in capsys.readouterr().err
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the no-CUDA error cannot be checked here")
    for device in ("cuda", "cuda:0"):
        assert train.main([*base, "--device", device]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"vidseg-train: error: --device {device}: CUDA is not available")
        assert "\n" not in err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_training_augment_follows_the_input_size() -> None:
    """A model that sees frames shrunk to its input trains on objects shrunk alike."""
    full = train.training_augment(None, (352, 480), source_height=360)
    small = train.training_augment(None, (256, 352), source_height=360)
    assert full.crop == (288, 384) and small.crop == (256, 352)  # input size, capped
    factor = 256 / 360
    assert small.scale_range == (0.8 * factor, 1.25 * factor)
    assert full.scale_range[0] < 0.8 < full.scale_range[1] < 1.25
    assert train.training_augment((64, 96), (256, 352), 360).crop == (64, 96)  # explicit wins
    wide = train.training_augment(None, (256, 352), 360, scale_range=(0.75, 1.75))
    assert wide.scale_range == (0.75 * factor, 1.75 * factor)  # --scale-range, same reference


@pytest.mark.parametrize("scale_range", [("0", "1"), ("2", "1"), ("-1", "1")])
def test_bad_scale_range_is_refused_in_one_line(tmp_path, capsys, scale_range) -> None:
    argv = [
        "--model",
        "perframe-lite0",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--scale-range",
        *scale_range,
    ]
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vidseg-train: error: --scale-range") and "0 < LO <= HI" in err
    assert not (tmp_path / "o").exists()


# -- seed 002 and the recurrent-memory options ------------------------------------------------

TINY = (64, 96)


def _clip(t: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (1, t, *TINY, 3), generator=g, dtype=torch.uint8)
    return frames, torch.randint(0, 11, (1, t, *TINY), generator=g)


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _run(model: torch.nn.Module, frames, labels, opts) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    loss = 0.0
    for term in train.supervised_losses(model, frames, labels, opts):
        term.backward()
        loss += term.item()
    return loss, _grads(model)


def test_tbptt_carries_the_state_and_cuts_the_gradient(tiny_model_factory) -> None:
    """--tbptt 2 on 4 frames: the loss is the whole clip's (state carried into chunk 2; a reset
    would change it), the gradient is that of chunk 1 plus chunk 2 fed the *detached* state."""
    model = tiny_model_factory("recurrent-lite0-gru")  # eval: BN per frame, comparable runs
    frames, labels = _clip()
    full_loss, full_grads = _run(model, frames, labels, train.ClipTraining())
    loss, grads = _run(model, frames, labels, train.ClipTraining(tbptt=2))
    assert abs(loss - full_loss) < 1e-5
    assert any(not torch.allclose(a, b) for a, b in zip(grads, full_grads))  # truncated

    criterion, x = train.SegLoss(), train.normalize(frames)
    count = (labels != 11).sum()
    model.zero_grad()
    first, *state = model(x[:, :2])
    (criterion.total(first, labels[:, :2])[0] / count).backward()
    second = model(x[:, 2:], *[s.detach() for s in state])[0]
    (criterion.total(second, labels[:, 2:])[0] / count).backward()
    for a, b in zip(grads, _grads(model)):
        torch.testing.assert_close(a, b)
    reset = model(x[:, 2:])[0]  # zero state: what a reset between chunks would give
    assert not torch.allclose(reset, second)


def test_warmup_frames_warm_the_state_and_carry_no_loss(tiny_model_factory) -> None:
    model = tiny_model_factory("recurrent-lite0-gru")
    frames, labels = _clip()
    opts = train.ClipTraining(warmup_frames=2, tbptt=1)
    chunks = list(train.clip_chunks(model, train.normalize(frames), opts))
    assert [start for start, _ in chunks] == [0, 2, 3]
    assert not chunks[0][1].requires_grad and chunks[1][1].requires_grad
    with torch.no_grad():
        full = model(train.normalize(frames))[0]
        cold = model(train.normalize(frames[:, 2:]))[0]
    torch.testing.assert_close(chunks[1][1].detach(), full[:, 2:3])  # from the warmed state
    assert not torch.allclose(chunks[1][1], cold[:, :1])  # not from a zero state
    loss, _ = _run(model, frames, labels, opts)
    assert abs(loss - train.SegLoss()(full[:, 2:], labels[:, 2:]).item()) < 1e-5
    relabelled = labels.clone()
    relabelled[:, :2] = (labels[:, :2] + 1) % 11  # warm-up labels do not matter
    assert abs(_run(model, frames, relabelled, opts)[0] - loss) < 1e-6


def test_propagation_length_voids_frames_before_the_labelled_one() -> None:
    labels = torch.zeros(1, 4, 2, 3, dtype=torch.long)
    off = train.supervised_frames(labels, 0)
    assert (off[:, :3] == 11).all() and (off[:, 3] == 0).all()
    one = train.supervised_frames(labels, 1)
    assert (one[:, :2] == 11).all() and (one[:, 2:] == 0).all()
    assert train.supervised_frames(labels, None) is labels
    assert train.supervised_frames(labels, 5) is labels


def test_training_clips_end_on_the_labelled_frame(camvid: Path) -> None:
    """--propagation-length counts back from the last frame: the training clips end on the
    labelled frame (at the drawn pose, never corrupted)."""
    import dataclasses

    import numpy as np

    from vidseg.models.data import load_split, make_clip

    data = load_split(camvid, "train", limit=1)
    aug = train.training_augment((64, 96), (256, 352), 360)
    assert aug.anchor == -1
    plain = dataclasses.replace(aug, corrupt_prob=0.0, blur_prob=0.0, photometric=False)
    last = make_clip(data.images[0], data.labels[0], 5, np.random.default_rng(3), plain)
    first = make_clip(
        data.images[0],
        data.labels[0],
        5,
        np.random.default_rng(3),
        dataclasses.replace(plain, anchor=0),
    )
    assert np.array_equal(last[0][-1], first[0][0]) and np.array_equal(last[1][-1], first[1][0])
    assert not np.array_equal(last[0][0], first[0][0])


def test_the_criterion_reaches_models_with_their_own_loss(tiny_model_factory) -> None:
    """--label-relaxation is one SegLoss handed to every family, including the key-frame and
    NetWarp models whose training_loss is their own."""
    frames, labels = _clip(t=2)
    for name in ("keyframe-lite0-c2", "netwarp-lite0", "recurrent-lite0-gru"):
        calls = []

        def spy(logits, target, calls=calls):
            calls.append(tuple(target.shape))
            return train.SegLoss(relax_border=1)(logits, target)

        loss = tiny_model_factory(name).training_loss(frames, labels, spy)
        assert calls and torch.isfinite(loss), name


def test_train_with_seed_002_and_memory_options(camvid: Path, tmp_path: Path) -> None:
    """Every new option together, two steps (one per-frame, one clip), then a resume; the
    checkpoint records them."""
    videos = camvid.parent / "videos"
    out = tmp_path / "run"
    extra = [
        "--seq-len",
        "4",
        "--label-relaxation",
        "--relax-border",
        "2",
        "--propagation-length",
        "0",
        "--tbptt",
        "2",
        "--warmup-frames",
        "1",
        "--consistency-weight",
        "0.5",
        "--consistency-videos",
        str(videos),
    ]
    common = [*ARGS, *extra, "--data", str(camvid), "--out", str(out)]
    assert train.main([*common, "--max-steps", "2"]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    recorded = json.loads(ckpt["train_args"])
    assert recorded["label_relaxation"] and recorded["relax_border"] == 2
    assert recorded["propagation_length"] == 0 and recorded["tbptt"] == 2
    assert recorded["warmup_frames"] == 1 and recorded["consistency_weight"] == 0.5
    assert recorded["consistency_videos"] == str(videos)
    history = json.loads(ckpt["history"])
    assert history and all(math.isfinite(h["loss"]) for h in history)
    assert train.main([*common, "--max-steps", "3", "--resume"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3


def test_clip_option_errors(camvid: Path, tmp_path: Path, capsys) -> None:
    import pytest

    base = [*ARGS, "--data", str(camvid), "--out", str(tmp_path / "o"), "--max-steps", "1"]
    for extra, message in (
        (["--warmup-frames", "3"], "leaves no frame with a loss"),
        (["--consistency-weight", "1"], "needs --consistency-videos"),
        (["--tbptt", "-1"], "--tbptt must be >= 0"),
        (["--propagation-length", "-2"], "--propagation-length must be >= 0"),
    ):
        with pytest.raises(SystemExit):
            train.main([*base, *extra])
        assert message in capsys.readouterr().err, extra
    keyframe = ["--model", "keyframe-lite0-c2", *base[2:], "--tbptt", "2"]
    assert train.main(keyframe) == 1
    assert "does not support --tbptt" in capsys.readouterr().err


def test_documented_training_flags_exist() -> None:
    """docs/training.md names the seed-002 and memory flags, and only flags the parser has."""
    import re

    repo = Path(__file__).resolve().parents[2]
    usage = set(re.findall(r"--[a-z][a-z-]*", train.build_parser().format_help()))
    # the lines of other commands (the export and scoring of the default) carry their own
    # flags: tests/test_docs.py checks those against their CLIs
    lines = (repo / "docs" / "training.md").read_text().splitlines()
    text = "\n".join(
        line for line in lines if not line.startswith(("vidseg-export", "vidseg-eval"))
    )
    flags = set(re.findall(r"--[a-z][a-z-]*", text))
    assert {"--label-relaxation", "--propagation-length", "--tbptt"} <= flags
    assert flags <= usage, flags - usage


def test_cuda_speedups_restore_the_process_flags() -> None:
    """cuDNN autotuning and TF32 hold inside training only; torch's flags come back after,
    on an error too."""
    flags = (
        (torch.backends.cudnn, "benchmark"),
        (torch.backends.cuda.matmul, "allow_tf32"),
        (torch.backends.cudnn, "allow_tf32"),
    )
    before = [getattr(owner, name) for owner, name in flags]
    torch.backends.cudnn.benchmark = False  # a value that differs from what training sets
    try:
        with train.cuda_speedups(True):
            assert all(getattr(owner, name) for owner, name in flags)
        assert torch.backends.cudnn.benchmark is False
        with train.cuda_speedups(False):
            assert torch.backends.cudnn.benchmark is False
        try:
            with train.cuda_speedups(True):
                raise RuntimeError("a failed step")
        except RuntimeError:
            pass
        assert [getattr(owner, name) for owner, name in flags][0] is False
        assert [getattr(o, n) for o, n in flags][1:] == before[1:]
    finally:
        for (owner, name), value in zip(flags, before):
            setattr(owner, name, value)


def test_class_balance_weights_from_label_frequencies(tmp_path, capsys) -> None:
    """(median frequency / frequency) ** P over the non-void pixels; void and ids past the
    classes never count; an absent class gets 1; P = 0 is off; P < 0 is refused."""
    labels = np.zeros((2, 4, 5), np.uint8)  # 40 pixels: class 0 x 20, 1 x 10, 2 x 5, void x 5
    labels[0, :2] = 1
    labels[1, :1] = 2
    labels[1, 3] = 11
    freq = np.array([20, 10, 5]) / 35
    for power in (1.0, 0.5):
        got = train.class_balance(labels, 4, power)
        np.testing.assert_allclose(got, [*(freq[1] / freq) ** power, 1.0])
    assert train.class_balance(labels, 4, 0.0) is None
    argv = [
        "--model",
        "perframe-lite0",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--class-balance",
        "-1",
    ]
    with pytest.raises(SystemExit):
        train.main(argv)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vidseg-train: error: --class-balance must be >= 0"
    )


# -- provenance and chunked runs -------------------------------------------------------------


def test_checkpoint_records_the_command_and_the_chain(camvid: Path, tmp_path: Path) -> None:
    """Each checkpoint holds its run's command line and source commit, after the runs of the
    --init-from checkpoint (one unknown run for a checkpoint from before the record)."""
    from vidseg.models.provenance import UNKNOWN, source_commit

    def run(name: str, *extra: str) -> tuple[str, list[dict]]:
        argv = [*ARGS, "--data", str(camvid), "--out", str(tmp_path / name), "--max-steps", "1"]
        assert train.main([*argv, *extra]) == 0
        chain = torch.load(tmp_path / name / "last.pt", weights_only=True)["provenance"]
        return "vidseg-train " + " ".join([*argv, *extra]), chain

    command, chain = run("a")
    assert chain == [{"command": command, "commit": source_commit(train.__file__)}]
    assert chain[0]["commit"] != UNKNOWN  # the tests run from the repository
    command, chained = run("b", "--init-from", str(tmp_path / "a" / "last.pt"))
    assert chained == [*chain, {"command": command, "commit": chain[0]["commit"]}]

    old = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    del old["provenance"]
    torch.save(old, tmp_path / "old.pt")
    _, unknown = run("c", "--init-from", str(tmp_path / "old.pt"))
    assert unknown[0] == {"command": UNKNOWN, "commit": UNKNOWN} and len(unknown) == 2


def test_stop_after_minutes_runs_in_resumable_chunks(camvid: Path, tmp_path: Path, capsys):
    """--stop-after-minutes ends the run with a checkpoint after the step that passes the time
    (a tiny limit: after every step); --resume continues it to --max-steps. A checkpoint
    between evaluations keeps the last one's metrics, and every chunk keeps the record of the
    command that started the run."""
    out = tmp_path / "run"
    base = [*ARGS, "--data", str(camvid), "--out", str(out), "--max-steps", "4"]
    chunk = [*base, "--stop-after-minutes", "1e-9"]
    steps, metrics = [], []
    for i in range(3):
        assert train.main(chunk + ["--resume"] * bool(i)) == 0
        assert "stopped after 1e-09 minutes of training" in capsys.readouterr().out
        ckpt = torch.load(out / "last.pt", weights_only=True)
        steps.append(ckpt["step"])
        metrics.append(json.loads(ckpt["metrics"]))
        assert ckpt["provenance"][0]["command"] == "vidseg-train " + " ".join(chunk)
        assert not (out / "metrics.json").exists()
    assert steps == [1, 2, 3]
    assert metrics[0] == {} and metrics[1] and metrics[2] == metrics[1]  # eval at step 2 kept
    assert train.main([*base, "--resume"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--eval-every", "0", "--eval-every must be >= 1"),
        ("--stop-after-minutes", "0", "--stop-after-minutes must be > 0"),
    ],
)
def test_bad_eval_every_and_stop_are_usage_errors(tmp_path, capsys, flag, value, message):
    argv = ["--model", "perframe-lite0", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        train.main([*argv, flag, value])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
