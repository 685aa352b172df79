"""Issue 16's remaining faults: a poisoned recurrent state, an opset the runtime lacks, a variable
frame rate, image folders, huge frames, failing sinks, soak runs, fuzzed frames and clips."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vidseg.engine import Segmenter


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_nonfinite_state_is_reset_logged_and_counted(
    tiny_bundle: Path, poison: float, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 96, 3), np.uint8) for _ in range(3)]
    seg = Segmenter(tiny_bundle, warmup=False, threads=1)
    fresh = Segmenter(tiny_bundle, warmup=False, threads=1)
    seg.step(frames[0])
    name = seg.manifest.state[-1].input
    poisoned = np.array(seg.state.tensors[name])  # a copy: ORT's outputs may be read-only
    poisoned.flat[poisoned.size // 2] = poison
    seg.state.tensors[name] = poisoned
    with caplog.at_level(logging.WARNING, logger="vidseg.engine.segmenter"):
        result = seg.step(frames[1])
        seg.step(frames[2])
    # reset before the frame ran on it: the same labels as a fresh stream's first frame
    np.testing.assert_array_equal(result.labels, fresh.step(frames[1]).labels)
    assert seg.state.nonfinite() is None
    assert seg.stats().resets == 1 and seg.nonfinite_resets == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and name in lines[0] and "NaN or Inf" in lines[0], lines


def test_blown_up_state_counts_as_nonfinite(tiny_bundle: Path) -> None:
    seg = Segmenter(tiny_bundle, warmup=False, threads=1)
    assert seg.state.nonfinite() is None
    seg.state.tensors = {
        k: np.full(np.shape(v), 1e20, np.float32) for k, v in seg.state.tensors.items()
    }
    assert seg.state.nonfinite() is not None  # blown up: x . x overflows, treated the same


def _with_opset(bundle: Path, dst: Path, opset: int) -> Path:
    """A copy of ``bundle`` whose step graph claims ``opset`` of the default ONNX domain."""
    import shutil

    import onnx

    shutil.copytree(bundle, dst)
    model = onnx.load(dst / "step.onnx")
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    onnx.save(model, dst / "step.onnx")
    return dst


def test_opset_newer_than_the_runtime_is_one_line(
    tiny_bundle: Path, tmp_path: Path, sample_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime

    from vidseg.engine import cli
    from vidseg.engine.errors import BackendError, exit_code_for

    bundle = _with_opset(tiny_bundle, tmp_path / "new.vidseg", 99)
    with pytest.raises(BackendError) as caught:
        Segmenter(bundle, warmup=False)
    message = str(caught.value)
    assert "\n" not in message and "opset 99" in message, message
    assert f"onnxruntime {onnxruntime.__version__}" in message, message
    assert exit_code_for(caught.value) == 4
    code = cli.main(
        [
            str(sample_clip),
            "--model",
            str(bundle),
            "--jsonl",
            str(tmp_path / "f.jsonl"),
            "--max-frames",
            "1",
            "-q",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and "opset 99" in err[0], err


def test_ir_version_newer_than_the_runtime_is_one_line(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from vidseg.engine.backends import BackendOptions, create_backend
    from vidseg.engine.errors import BackendError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 99
    onnx.save(model, tmp_path / "ir99.onnx")
    with pytest.raises(BackendError, match=r"IR version 99; onnxruntime \S+ reads IR version"):
        create_backend("ort", str(tmp_path / "ir99.onnx"), BackendOptions("cpu", 1))


def test_image_folder_with_a_bad_image(
    tiny_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    import cv2

    from vidseg.engine import cli

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        cv2.imwrite(str(frames / f"f_{i:03d}.png"), rng.integers(0, 256, (48, 80, 3), np.uint8))
    (frames / "f_002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # one bad image
    (frames / "notes.txt").write_text("not a frame")  # ignored
    masks, log = tmp_path / "masks", tmp_path / "frames.jsonl"
    with caplog.at_level(logging.WARNING):
        code = cli.main(
            [
                str(frames),
                "--model",
                str(tiny_bundle),
                "--mask-out",
                str(masks),
                "--jsonl",
                str(log),
                "--out",
                str(tmp_path / "o.mp4"),
                "-q",
            ]
        )
    assert code == 0
    assert sorted(p.name for p in masks.iterdir()) == [f"{i:06d}.png" for i in range(4)]
    assert [json.loads(line)["pts"] for line in log.read_text().splitlines()] == [0, 1, 3, 4]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "f_002.png" in warnings[0], warnings


def test_folder_without_a_readable_image_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vidseg.engine import cli

    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "a.jpg").write_bytes(b"garbage")
    code = cli.main([str(tmp_path / "frames"), "--jsonl", str(tmp_path / "f.jsonl"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "none of its 1 images decodes" in err[-1], err


VFR_PTS = [0, 40, 50, 130, 140, 300, 333]  # ms: irregular gaps, as a phone or a webcam writes


def _vfr_clip(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.max_b_frames = 0
        for i, pts in enumerate(VFR_PTS):
            image = np.full((64, 96, 3), 30 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _pts_s(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(
            float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None
        )


def test_variable_frame_rate_keeps_its_timestamps(tiny_bundle: Path, tmp_path: Path) -> None:
    import json

    from vidseg.engine import cli

    clip = _vfr_clip(tmp_path / "vfr.mp4")
    expected = [p / 1000 for p in VFR_PTS]
    assert _pts_s(clip) == pytest.approx(expected)
    out, masks, log = tmp_path / "o.mp4", tmp_path / "m.mkv", tmp_path / "f.jsonl"
    code = cli.main(
        [
            str(clip),
            "--model",
            str(tiny_bundle),
            "--out",
            str(out),
            "--mask-out",
            str(masks),
            "--jsonl",
            str(log),
            "-q",
        ]
    )
    assert code == 0
    times = [json.loads(line)["time"] for line in log.read_text().splitlines()]
    assert times == pytest.approx(expected)  # in order: monotonic
    assert _pts_s(out) == pytest.approx(expected)
    assert _pts_s(masks) == pytest.approx(expected)


def test_frames_over_the_pixel_limit_are_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vidseg.engine import cli, video

    assert 7680 * 4320 <= video.MAX_FRAME_PIXELS < 2 * 7680 * 2 * 4320  # 8K in, 16K out
    clip = _vfr_clip(tmp_path / "small.mp4")  # 96x64
    decoded = []
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 96 * 64 - 1)
    monkeypatch.setattr(video, "decode_frames", lambda *a, **k: decoded.append(1))
    code = cli.main([str(clip), "--jsonl", str(tmp_path / "f.jsonl"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "96x64 frames are over the" in err[0], err
    assert not decoded


class _FailingSink:
    """Raises on frame ``fail_at``; ``block_s`` first stalls there as a wedged encoder would."""

    def __init__(self, fail_at: int, block_s: float = 0.0) -> None:
        self.fail_at, self.block_s, self.written = fail_at, block_s, 0

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        import time

        from vidseg.engine.errors import VideoIOError

        if self.written == self.fail_at:
            time.sleep(self.block_s)
            raise VideoIOError("cannot write out.mp4: encoder failed (test)")
        self.written += 1


def _frames(n: int, size: tuple[int, int] = (64, 96)):
    from vidseg.engine.frame import Frame

    rng = np.random.default_rng(2)
    for i in range(n):
        yield Frame(rng.integers(0, 256, (*size, 3), np.uint8), i, i, Fraction(1, 25))


@pytest.mark.parametrize("block_s", [0.0, 1.0])
def test_encoder_error_reaches_the_caller_without_deadlock(
    tiny_bundle: Path, block_s: float
) -> None:
    import threading
    import time

    from vidseg.engine.errors import VideoIOError
    from vidseg.engine.pipeline import segment_video

    before = set(threading.enumerate())
    seg = Segmenter(tiny_bundle, warmup=False, threads=1)
    sink = _FailingSink(3, block_s)
    started = time.monotonic()
    with pytest.raises(VideoIOError, match="encoder failed"):
        segment_video(seg, _frames(40), sink, lambda frame, result: result.labels)
    assert time.monotonic() - started < 30
    assert sink.written == 3
    assert set(threading.enumerate()) - before == set()  # decode and encode threads joined


def test_encoder_error_in_vidseg_run_is_one_line(
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import threading

    from vidseg.engine import cli, writer
    from vidseg.engine.errors import VideoIOError

    write = writer.VideoWriter.write
    calls = []

    def failing(self, image, pts=None):  # noqa: ANN001, ANN202
        calls.append(pts)
        if len(calls) == 3:
            raise VideoIOError(f"cannot write {self.path}: encoder failed (test)")
        write(self, image, pts)

    monkeypatch.setattr(writer.VideoWriter, "write", failing)
    before = set(threading.enumerate())
    clip, out = _vfr_clip(tmp_path / "in.mp4"), tmp_path / "o.mp4"
    code = cli.main([str(clip), "--model", str(tiny_bundle), "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "encoder failed" in err[0], err
    assert list(tmp_path.iterdir()) == [clip]  # no output, no temporary file
    left = {t for t in set(threading.enumerate()) - before if t.name != "tqdm_monitor"}
    assert left == set()  # (tqdm keeps one monitor thread per process, by design)


def test_short_soak_leaks_no_thread_and_rss_stays_flat(
    tiny_bundle: Path, sample_clip: Path
) -> None:
    import threading

    from vidseg.benchmarks.soak import soak, soak_lines

    before = threading.active_count()
    report = soak(Segmenter(tiny_bundle, threads=1), sample_clip, 500, every=50, clip_frames=8)
    assert report["frames"] == 500 and len(report["samples"]) == 10
    assert report["thread_leak"] == 0 and threading.active_count() == before
    # during the run: decode + encode threads, never more (the decoder may be gone at the end)
    assert max(s["threads"] for s in report["samples"]) == report["samples"][0]["threads"]
    assert report["rss_growth_pct"] < 5, soak_lines(report)
    assert "RSS growth" in soak_lines(report)[-1]
