"""vidseg-run's per-frame outputs, frame-rate control, geometry, telemetry and usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.engine import default_bundle_path, load_bundle
from vidseg.engine.avinput import camera_source
from vidseg.engine.overlay import colorize, palette_lut
from vidseg.engine.video import VideoInfo, read_frames, read_label_frames

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "dashcam.mp4"  # 960x540, 25 FPS


def vidseg_run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidseg.engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and needle in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def all_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of the shipped bundle (it has confidence) writing every output at once."""
    tmp = tmp_path_factory.mktemp("outputs")
    proc = vidseg_run(
        SAMPLE,
        "--out",
        tmp / "o.mp4",
        "--mask-out",
        tmp / "ids.mkv",
        "--scores",
        tmp / "scores",
        "--jsonl",
        tmp / "f.jsonl",
        "--polygons",
        "--max-frames",
        6,
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stderr and "6 frames" in proc.stderr
    return tmp


def test_overlay_masks_scores_and_jsonl_in_one_run(all_outputs: Path, tmp_path: Path) -> None:
    manifest = load_bundle(default_bundle_path()).manifest
    assert len(list(read_frames(all_outputs / "o.mp4"))) == 6
    assert VideoInfo.from_path(all_outputs / "ids.mkv").codec == "ffv1"
    ids = list(read_label_frames(all_outputs / "ids.mkv"))
    # the same ids as a masks-only run to PNGs (exact: both lossless)
    proc = vidseg_run(SAMPLE, "--out", tmp_path / "png", "--mask", "--max-frames", 6, "-q")
    assert proc.returncode == 0, proc.stderr
    for i, labels in enumerate(ids):
        png = cv2.imread(str(tmp_path / "png" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(labels, png)
    records = [json.loads(line) for line in (all_outputs / "f.jsonl").read_text().splitlines()]
    pts = [f.pts for f in read_frames(SAMPLE, max_frames=6)]
    assert [r["index"] for r in records] == list(range(6)) and [r["pts"] for r in records] == pts
    scores = sorted((all_outputs / "scores").iterdir())
    assert [p.name for p in scores] == [f"{i:06d}.png" for i in range(6)]
    for rec, labels, score_png in zip(records, ids, scores, strict=True):
        assert rec["time"] == pytest.approx(rec["pts"] / 12800) and rec["key_frame"] is True
        assert set(rec["ms"]) == {"pre", "infer", "post", "step"} and rec["age_ms"] > 0
        counts = np.bincount(labels.ravel(), minlength=len(manifest.classes))
        for k, name in enumerate(manifest.classes):
            assert rec["classes"][name] == pytest.approx(counts[k] / labels.size, abs=1e-5)
        conf = cv2.imread(str(score_png), cv2.IMREAD_UNCHANGED)
        assert conf.shape == labels.shape
        assert rec["confidence"] == pytest.approx(conf.mean() / 255, abs=1e-4)
        present = {manifest.classes[k] for k in np.flatnonzero(counts)}
        assert set(rec["polygons"]) <= present and rec["polygons"]
        # the largest class's polygons cover most of its pixels
        big = int(counts.argmax())
        filled = np.zeros_like(labels)
        polys = rec["polygons"][manifest.classes[big]]
        cv2.fillPoly(filled, [np.asarray(p, np.int32) for p in polys], 1)
        assert (filled[labels == big] == 1).mean() > 0.95


def test_colour_mask_video_plays_and_shows_the_ids(all_outputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.mp4"
    proc = vidseg_run(SAMPLE, "--mask-out", out, "--max-frames", 3, "-q")
    assert proc.returncode == 0, proc.stderr
    info = VideoInfo.from_path(out)
    assert info.codec == "h264"
    import av

    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"  # plays anywhere
    lut = palette_lut(load_bundle(default_bundle_path()).manifest.palette)
    ids = list(read_label_frames(all_outputs / "ids.mkv"))[:3]
    for decoded, labels in zip(read_frames(out), ids, strict=True):
        right = np.abs(decoded.image.astype(int) - colorize(labels, lut)).mean()
        wrong = np.abs(decoded.image.astype(int) - colorize((labels + 1) % 11, lut)).mean()
        assert right < 6 and wrong > 5 * right


def jsonl_indices(path: Path) -> list[int]:
    return [json.loads(line)["index"] for line in path.read_text().splitlines()]


def test_vid_stride_and_max_fps(tiny_bundle: Path, tmp_path: Path) -> None:
    proc = vidseg_run(
        SAMPLE,
        "--jsonl",
        tmp_path / "s.jsonl",
        "--vid-stride",
        3,
        "--max-frames",
        10,
        "--model",
        tiny_bundle,
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    assert jsonl_indices(tmp_path / "s.jsonl") == [0, 3, 6, 9]
    # 10 of 25 frames per second, on a 0.1 s grid of the source's time (not every 3rd: 8.3)
    out = tmp_path / "f.mp4"
    proc = vidseg_run(
        SAMPLE,
        "--out",
        out,
        "--jsonl",
        tmp_path / "f.jsonl",
        "--max-fps",
        10,
        "--max-frames",
        25,
        "--model",
        tiny_bundle,
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    kept = [0, 3, 5, 8, 10, 13, 15, 18, 20, 23]
    assert jsonl_indices(tmp_path / "f.jsonl") == kept
    source = [f.pts for f in read_frames(SAMPLE, max_frames=25)]
    assert [f.pts for f in read_frames(out)] == [source[i] for i in kept]  # timing kept


def test_letterbox_through_the_cli(tiny_bundle: Path, tmp_path: Path) -> None:
    for mode in ("letterbox", "crop"):
        proc = vidseg_run(
            SAMPLE,
            "--mask-out",
            tmp_path / mode,
            "--resize",
            mode,
            "--max-frames",
            2,
            "--model",
            tiny_bundle,
            "-q",
        )
        assert proc.returncode == 0, proc.stderr
    box = cv2.imread(str(tmp_path / "letterbox" / "000000.png"), cv2.IMREAD_UNCHANGED)
    crop = cv2.imread(str(tmp_path / "crop" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert box.shape == crop.shape == (540, 960)
    assert (crop[:, :10] == 255).all() and (box != 255).all()  # crop's cut edges are unseen


def test_stats_every(tiny_bundle: Path, tmp_path: Path) -> None:
    proc = vidseg_run(
        SAMPLE,
        "--jsonl",
        tmp_path / "f.jsonl",
        "--stats-every",
        2,
        "--max-frames",
        5,
        "--model",
        tiny_bundle,
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vidseg-run: frames")]
    assert len(lines) == 2, proc.stderr
    assert all("fps | step p50" in line and "dropped 0 | resets 0" in line for line in lines)
    cpu = [line for line in proc.stderr.splitlines() if line.startswith("vidseg-run: cpu")]
    assert len(cpu) == 1 and " core-ms; ceiling " in cpu[0], proc.stderr  # once, at the end
    assert proc.stderr.strip().splitlines()[-1].startswith("wrote ")


def test_camera_index_maps_to_v4l2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert camera_source("0") == "/dev/video0" and camera_source("12") == "/dev/video12"
    assert camera_source("clip.mp4") == "clip.mp4" and camera_source("640") == "640"
    (tmp_path / "3").write_bytes(b"")
    assert camera_source("3") == "3"  # a file of that name wins


def test_camera_index_on_the_command_line(tiny_bundle: Path, tmp_path: Path) -> None:
    """``vidseg-run 7``: no camera here, so the V4L2 device's open fails in one line, naming it."""
    proc = vidseg_run("7", "--out", tmp_path / "o.mp4", "--model", tiny_bundle, "--timeout", 2)
    one_line_error(proc, 5, "/dev/video7")


@pytest.mark.parametrize(
    "flags, needle",
    [
        (("--key-interval", "5"), "bundle with key frames"),
        (("--scores", "{tmp}/sc"), "--scores needs a bundle"),
        (("--polygons",), "--polygons"),
        (("--vid-stride", "0"), "--vid-stride"),
        (("--max-fps", "0"), "--max-fps"),
        (("--stats-every", "0"), "--stats-every"),
        (("--encoder-threads", "0"), "--encoder-threads must be >= 1, got 0"),
        (("--mask-out", "{tmp}/o.mp4"), "different paths"),
        (("--preset", "turbo"), "invalid choice: 'turbo' (choose from 'ultrafast', 'superfast'"),
        (("--mask-out", "{tmp}/m.png"), "--mask-out {tmp}/m.png: masks go to a folder"),
        (("--mask-out", "{tmp}/m.txt"), "not a .txt file"),
        (("--mask-out", "."), "--mask-out .: give the output a folder of its own"),
        (("--mask-out", ".."), "--mask-out ..: give the output a folder of its own"),
        (("--mask-out", "/"), "--mask-out /: give the output a folder of its own"),
        (("--scores", "{tmp}/s.png"), "confidence maps are a folder of PNGs"),
        (("--scores", "-"), "confidence maps are a folder of PNGs"),
        (("--jsonl", "{tmp}"), "is a folder: give a file name"),
    ],
)
def test_usage_errors_exit_2(
    flags: tuple[str, ...], needle: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    """Checked before the model loads; one line, no usage block (``--help`` shows it)."""
    flags = tuple(f.format(tmp=tmp_path) for f in flags)
    proc = vidseg_run(SAMPLE, "--out", tmp_path / "o.mp4", "--model", tiny_bundle, *flags)
    one_line_error(proc, 2, needle.format(tmp=tmp_path))
    assert proc.stderr.startswith("vidseg-run: error: ") and proc.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_mask_out_webm_is_a_video(tiny_bundle: Path, tmp_path: Path) -> None:
    """A video suffix gets a mask video (colours; VP9 for .webm), not a folder of that name."""
    out = tmp_path / "m.webm"
    proc = vidseg_run(SAMPLE, "--mask-out", out, "--max-frames", 3, "--model", tiny_bundle, "-q")
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and VideoInfo.from_path(out).codec == "vp9"
    assert len(list(read_frames(out))) == 3


def test_show_without_gui_is_one_line(tiny_bundle: Path, tmp_path: Path) -> None:
    gui = "NONE" not in next(
        line for line in cv2.getBuildInformation().splitlines() if "GUI:" in line
    )
    if gui:
        pytest.skip("this OpenCV has a GUI")
    proc = vidseg_run(SAMPLE, "--out", tmp_path / "o.mp4", "--show", "--model", tiny_bundle)
    one_line_error(proc, 2, "--show needs OpenCV with GUI support")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_existing_jsonl_needs_overwrite(tiny_bundle: Path, tmp_path: Path) -> None:
    log = tmp_path / "f.jsonl"
    log.write_text("keep\n")
    proc = vidseg_run(SAMPLE, "--jsonl", log, "--max-frames", 2, "--model", tiny_bundle)
    one_line_error(proc, 2, "exists")
    assert log.read_text() == "keep\n"
    proc = vidseg_run(
        SAMPLE, "--jsonl", log, "--max-frames", 2, "--model", tiny_bundle, "--overwrite", "-q"
    )
    assert proc.returncode == 0 and len(log.read_text().splitlines()) == 2
