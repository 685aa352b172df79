"""Tests for ``vidseg-run`` (vidseg.engine.cli), run as a real subprocess on samples/dashcam.mp4.

The sample is 100 frames, 960x540, 25 fps, written with faststart (moov before mdat). Tests that
only need *a* model use the shipped default bundle when it exists and the tiny untrained bundle
(``tiny_bundle``) otherwise; the README's own command needs the default bundle and skips without
it. Error and Ctrl-C tests always use the tiny bundle: they are about the CLI, not the model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vidseg.engine import default_bundle_path, load_bundle
from vidseg.engine.overlay import blend, palette_lut
from vidseg.engine.video import VideoInfo, read_frames, read_label_frames

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "dashcam.mp4"
SAMPLE_FRAMES = 100
MAX_FRAMES = 12  # frames per end-to-end run: enough for state to be carried, cheap on 2 cores
TIMEOUT_S = 300  # per subprocess; a hung run fails instead of blocking the suite


def default_bundle_exists() -> bool:
    return (default_bundle_path() / "manifest.json").is_file()


NO_DEFAULT_BUNDLE = (
    f"the default bundle {default_bundle_path()} does not exist yet (train and export it, "
    "see README 'The default model')"
)


@dataclass(frozen=True)
class Model:
    """The bundle a test runs: ``args`` is ``()`` for the shipped default (no --model)."""

    path: Path
    args: tuple[str, ...]


@pytest.fixture(scope="module")
def model(request: pytest.FixtureRequest) -> Model:
    """The default bundle when it has landed, else the tiny untrained stand-in."""
    if default_bundle_exists():
        return Model(default_bundle_path(), ())
    tiny = request.getfixturevalue("tiny_bundle")
    return Model(tiny, ("--model", str(tiny)))


def vidseg_run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m vidseg.engine ARGS`` (= vidseg-run), output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "vidseg.engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd,
    )


def console_script() -> list[str]:
    """The installed ``vidseg-run`` entry point (the README's command), else ``python -m``."""
    script = Path(sys.executable).with_name("vidseg-run")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vidseg.engine"]


def timestamps(path: Path, max_frames: int | None = None) -> list[Fraction]:
    """Exact presentation times (``pts * time_base``) of every decoded frame."""
    stamps = []
    for frame in read_frames(path, max_frames=max_frames):
        assert frame.pts is not None
        stamps.append(frame.pts * frame.time_base)
    return stamps


def assert_same_video_shape(out: Path, expected_frames: int) -> None:
    """``out`` matches the sample's size and fps, holds ``expected_frames`` frames decoded,
    and each frame's timestamp equals the sample frame's at the same index."""
    src, dst = VideoInfo.from_path(SAMPLE), VideoInfo.from_path(out)
    assert (dst.width, dst.height, dst.fps) == (src.width, src.height, src.fps)
    stamps = timestamps(out)
    assert len(stamps) == expected_frames
    assert dst.frame_count in (None, expected_frames)
    assert stamps == timestamps(SAMPLE, max_frames=expected_frames)


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Exit ``code``, no traceback, stderr is one line (runs use -q) naming every needle."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vidseg-run: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def moov_before_mdat(path: Path) -> bool:
    data = path.read_bytes()
    return data.find(b"moov") < data.find(b"mdat")


# --------------------------------------------------------------------------- end to end


@dataclass(frozen=True)
class OverlayRun:
    proc: subprocess.CompletedProcess[str]
    out: Path
    summary: Path


@pytest.fixture(scope="module")
def overlay_run(model: Model, tmp_path_factory: pytest.TempPathFactory) -> OverlayRun:
    """One overlay run on the first MAX_FRAMES frames, with a JSON summary."""
    tmp = tmp_path_factory.mktemp("overlay")
    out, summary = tmp / "seg.mp4", tmp / "run.json"
    proc = vidseg_run(
        SAMPLE, "--out", out, "--max-frames", MAX_FRAMES, "--json", summary, *model.args
    )
    return OverlayRun(proc, out, summary)


@pytest.fixture(scope="module")
def mask_video(model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lossless label video (FFV1 .mkv) of the first MAX_FRAMES frames."""
    out = tmp_path_factory.mktemp("masks") / "m.mkv"
    proc = vidseg_run(SAMPLE, "--out", out, "--mask", "--max-frames", MAX_FRAMES, "-q", *model.args)
    assert proc.returncode == 0, proc.stderr
    return out


def test_sample_precondition() -> None:
    info = VideoInfo.from_path(SAMPLE)
    assert (info.width, info.height, info.fps, info.frame_count) == (960, 540, Fraction(25), 100)
    assert moov_before_mdat(SAMPLE)  # faststart: the truncation test below relies on it


def test_overlay_end_to_end(overlay_run: OverlayRun) -> None:
    proc = overlay_run.proc
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{MAX_FRAMES} frames, 960x540" in proc.stderr
    assert_same_video_shape(overlay_run.out, MAX_FRAMES)
    assert sorted(p.name for p in overlay_run.out.parent.iterdir()) == ["run.json", "seg.mp4"]


def test_json_summary(overlay_run: OverlayRun) -> None:
    assert overlay_run.proc.returncode == 0, overlay_run.proc.stderr
    summary = json.loads(overlay_run.summary.read_text())
    assert summary["frames"] == MAX_FRAMES
    assert summary["fps"] > 0 and summary["wall_s"] > 0
    assert summary["interrupted"] is False and summary["truncated"] is None
    assert summary["output"] == str(overlay_run.out)
    assert set(summary["step_ms"]) == {"min", "p50", "p90", "p95", "p99", "max", "mean", "n"}
    assert 0 < summary["step_ms"]["p50"] <= summary["step_ms"]["max"]
    cpu = summary["cpu"]
    ms = cpu["core_ms_per_frame"]
    assert list(ms) == ["decode", "step", "render", "encode", "other", "total"]
    assert min(ms.values()) >= 0 and ms["step"] > 0
    assert ms["total"] == pytest.approx(sum(ms.values()) - ms["total"], abs=0.01)
    assert cpu["cores"] >= 1 and cpu["fps"] == pytest.approx(summary["fps"], abs=0.02)
    assert cpu["ceiling_fps"] == pytest.approx(cpu["cores"] * 1000 / ms["total"], rel=1e-3)
    assert cpu["of_ceiling_pct"] == pytest.approx(
        100 * cpu["fps"] / cpu["ceiling_fps"], abs=0.1 + 0.01 * cpu["of_ceiling_pct"]
    )


def test_readme_default_command(tmp_path: Path) -> None:
    """README quick start, verbatim but for the output path: the whole clip, default model."""
    if not default_bundle_exists():
        pytest.skip(NO_DEFAULT_BUNDLE)
    out = tmp_path / "seg.mp4"
    command = [*console_script(), "samples/dashcam.mp4", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_same_video_shape(out, SAMPLE_FRAMES)


# --------------------------------------------------------------------------- masks and overlay


def test_overlay_pixels_match_the_mask(model: Model, mask_video: Path, tmp_path: Path) -> None:
    """Decoded overlay == blend(decoded input, mask, palette, alpha) up to H.264 loss, and far
    from the blend of a wrong mask (other class ids, or the right mask shifted)."""
    alpha = 0.7  # not the default: the flag must reach the renderer
    out = tmp_path / "overlay.mp4"
    n = 4
    proc = vidseg_run(SAMPLE, "--out", out, "--max-frames", n, "--alpha", alpha, "-q", *model.args)
    assert proc.returncode == 0, proc.stderr
    manifest = load_bundle(model.path).manifest
    lut = palette_lut(manifest.palette)
    k = len(manifest.classes)
    inputs = [f.image for f in read_frames(SAMPLE, max_frames=n)]
    overlays = [f.image.astype(np.int16) for f in read_frames(out)]
    masks = list(read_label_frames(mask_video))[:n]
    assert len(overlays) == len(masks) == n

    def err(labels: np.ndarray, i: int, where: np.ndarray | None = None) -> float:
        diff = np.abs(blend(inputs[i], labels, lut, alpha).astype(np.int16) - overlays[i])
        return float(diff.mean() if where is None else diff[where].mean())

    for i in (0, n - 1):
        mask = masks[i]
        assert mask.shape == (540, 960) and mask.dtype == np.uint8
        assert mask.max() < k
        right = err(mask, i)
        assert right < 4.0, f"frame {i}: overlay differs from the blend by {right:.2f} levels"
        # every pixel a different class: a wrong render differs everywhere
        assert err((mask + 1) % k, i) > 4 * right
        # the mask shifted by a quarter frame: judged on the pixels whose class it changes
        shifted = np.roll(mask, (135, 240), axis=(0, 1))
        changed = shifted != mask
        if changed.sum() >= 1000:
            assert err(shifted, i, changed) > 3 * err(mask, i, changed)
        # half the opacity would be visibly wrong too
        wrong_alpha = blend(inputs[i], mask, lut, alpha / 2).astype(np.int16)
        assert np.abs(wrong_alpha - overlays[i]).mean() > right


def test_mask_video_is_exact_and_timed(model: Model, mask_video: Path) -> None:
    """The label video holds exactly what a plain Segmenter loop gives for the same decoded
    frames, state carried over all MAX_FRAMES, at the sample's timestamps."""
    from vidseg.engine import Segmenter

    assert_same_video_shape(mask_video, MAX_FRAMES)
    assert VideoInfo.from_path(mask_video).codec == "ffv1"  # .mkv: lossless ids (FFV1)
    seg = Segmenter(model.path)
    written = list(read_label_frames(mask_video))
    for i, (frame, labels) in enumerate(
        zip(read_frames(SAMPLE, max_frames=MAX_FRAMES), written, strict=True)
    ):
        np.testing.assert_array_equal(labels, seg.step(frame.image).labels, err_msg=f"frame {i}")


def test_mask_directory_equals_mask_video(model: Model, mask_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "masks"
    proc = vidseg_run(SAMPLE, "--out", out, "--mask", "--max-frames", MAX_FRAMES, "-q", *model.args)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.iterdir())
    assert [p.name for p in files] == [f"{i:06d}.png" for i in range(MAX_FRAMES)]
    assert not (tmp_path / "masks.partial").exists()
    video = list(read_label_frames(mask_video))
    for file, expected in zip(files, video, strict=True):
        png = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == (540, 960)
        np.testing.assert_array_equal(png, expected, err_msg=file.name)


def test_out_size_scales_masks_and_overlay(model: Model, mask_video: Path, tmp_path: Path) -> None:
    """--out-size 320x0: the masks are the full-size masks taken by nearest neighbour, the
    overlay is 320x180 (aspect kept) with the same frames and timestamps."""
    masks = tmp_path / "masks"
    proc = vidseg_run(
        SAMPLE,
        "--out",
        masks,
        "--mask",
        "--max-frames",
        4,
        "-q",
        "--out-size",
        "320x0",
        *model.args,
    )
    assert proc.returncode == 0, proc.stderr
    for file, full in zip(sorted(masks.iterdir()), read_label_frames(mask_video)):
        png = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        assert png.shape == (180, 320)
        want = cv2.resize(full, (320, 180), interpolation=cv2.INTER_NEAREST)
        assert (png == want).mean() > 0.97, file.name  # nearest of nearest: borders may shift
    out = tmp_path / "small.mp4"
    proc = vidseg_run(SAMPLE, "--out", out, "--max-frames", 4, "--out-size", "320x180", *model.args)
    assert proc.returncode == 0, proc.stderr
    info = VideoInfo.from_path(out)
    assert (info.width, info.height, info.fps) == (320, 180, Fraction(25))
    assert timestamps(out) == timestamps(SAMPLE, max_frames=4)
    assert "320x180" in proc.stderr


@pytest.mark.parametrize(
    "codec, suffix, decoder",
    [("libx265", ".mp4", "hevc"), ("libvpx-vp9", ".webm", "vp9"), ("mpeg4", ".mp4", "mpeg4")],
)
def test_codec_option(
    codec: str, suffix: str, decoder: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / f"o{suffix}"
    proc = vidseg_run(
        SAMPLE,
        "--out",
        out,
        "--max-frames",
        3,
        "--codec",
        codec,
        "--model",
        tiny_bundle,
        "--no-audio",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"wrote {out}")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # no encoder chatter
    assert VideoInfo.from_path(out).codec == decoder
    assert len(timestamps(out)) == 3


@pytest.mark.parametrize("value", ["640", "0x0", "axb", "-5x10"])
def test_bad_out_size_rejected(value: str, tmp_path: Path) -> None:
    proc = vidseg_run(SAMPLE, "--out", tmp_path / "o.mp4", f"--out-size={value}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--out-size" in proc.stderr


# --------------------------------------------------------------------------- errors


def write_remux_without_faststart(src: Path, dst: Path) -> Path:
    """Copy ``src``'s video packets into an mp4 whose moov atom is written last."""
    with av.open(str(src)) as source, av.open(str(dst), "w") as target:
        stream = source.streams.video[0]
        copy = target.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = copy
            target.mux(packet)
    return dst


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def broken_bundle(tiny: Path, dst: Path, text: str | None = None, **changes: object) -> Path:
    """A copy of ``tiny`` whose manifest is ``text``, or the original with ``changes``."""
    shutil.copytree(tiny, dst)
    manifest = dst / "manifest.json"
    if text is None:
        raw = json.loads(manifest.read_text())
        raw.update(changes)
        text = json.dumps(raw)
    manifest.write_text(text)
    return dst


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty directory for --out: after a failed run it must still be empty."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def test_missing_input(tiny_bundle: Path, out_dir: Path, tmp_path: Path) -> None:
    proc = vidseg_run(
        tmp_path / "nope.mp4", "--out", out_dir / "o.mp4", "--model", tiny_bundle, "-q"
    )
    assert_clean_error(proc, 5, "nope.mp4", "no such file")
    assert list(out_dir.iterdir()) == []


def test_text_file_named_mp4(tiny_bundle: Path, out_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n" * 20)
    proc = vidseg_run(fake, "--out", out_dir / "o.mp4", "--model", tiny_bundle, "-q")
    assert_clean_error(proc, 5, "notes.mp4", "not a readable video")
    assert list(out_dir.iterdir()) == []


def test_truncated_faststart_writes_decoded_frames(
    tiny_bundle: Path, out_dir: Path, tmp_path: Path
) -> None:
    cut = truncated_copy(SAMPLE, tmp_path / "cut.mp4")
    out, summary = out_dir / "o.mp4", tmp_path / "run.json"
    proc = vidseg_run(cut, "--out", out, "--model", tiny_bundle, "--json", summary, "-q")
    assert_clean_error(proc, 6, "cut.mp4", "truncated")
    written = re.search(r"wrote the (\d+) decoded frames to (\S+)$", proc.stderr.strip())
    assert written, proc.stderr
    frames = int(written.group(1))
    assert 0 < frames < SAMPLE_FRAMES
    assert written.group(2) == str(out)
    assert [p.name for p in out_dir.iterdir()] == ["o.mp4"]  # no partial file left beside it
    assert_same_video_shape(out, frames)
    assert VideoInfo.from_path(out).frame_count in (None, frames)
    result = json.loads(summary.read_text())
    assert result["frames"] == frames and result["truncated"] and not result["interrupted"]


def test_truncated_without_faststart_fails_to_open(
    tiny_bundle: Path, out_dir: Path, tmp_path: Path
) -> None:
    remuxed = write_remux_without_faststart(SAMPLE, tmp_path / "slow.mp4")
    assert not moov_before_mdat(remuxed)
    cut = truncated_copy(remuxed, tmp_path / "cut.mp4")
    proc = vidseg_run(cut, "--out", out_dir / "o.mp4", "--model", tiny_bundle, "-q")
    assert_clean_error(proc, 5, "cut.mp4")
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        pytest.param("invalid-json", ("manifest.json",), id="invalid-json"),
        pytest.param("family", ("manifest.json", "'family'"), id="family"),
        pytest.param("missing-classes", ("'classes'", "missing"), id="missing-classes"),
        pytest.param("state-shape", ("h8_in", "[batch, 33, 8, 12]"), id="state-shape"),
        pytest.param("missing", ("not found",), id="missing"),
    ],
)
def test_bad_bundle(
    case: str, needles: tuple[str, ...], tiny_bundle: Path, out_dir: Path, tmp_path: Path
) -> None:
    raw = json.loads((tiny_bundle / "manifest.json").read_text())
    bundle = tmp_path / f"{case}.vidseg"
    if case == "invalid-json":
        broken_bundle(tiny_bundle, bundle, text='{"name": "tiny", "family":')
    elif case == "family":
        broken_bundle(tiny_bundle, bundle, family="")  # a label, but not an empty one
    elif case == "missing-classes":
        del raw["classes"]
        broken_bundle(tiny_bundle, bundle, text=json.dumps(raw))
    elif case == "state-shape":
        state = [dict(s) for s in raw["state"]]
        assert state[0]["input"] == "h8_in" and state[0]["shape"][0] == 32
        state[0]["shape"] = [33, *state[0]["shape"][1:]]
        broken_bundle(tiny_bundle, bundle, state=state)
    proc = vidseg_run(SAMPLE, "--out", out_dir / "o.mp4", "--model", bundle, "-q")
    assert_clean_error(proc, 3, *needles)
    assert list(out_dir.iterdir()) == []


def test_out_in_missing_directory(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "o.mp4"
    proc = vidseg_run(SAMPLE, "--out", out, "--model", tiny_bundle, "-q")
    assert_clean_error(proc, 5, "output directory does not exist", str(out.parent))
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--bogus",), "unrecognized arguments: --bogus"),
        (("--alpha", "2"), "--alpha"),
        (("--max-frames", "0"), "--max-frames"),
    ],
)
def test_usage_errors(flags: tuple[str, ...], needle: str, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    proc = vidseg_run(SAMPLE, "--out", out, *flags)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("vidseg-run: error: ") and needle in last, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_show_default_model() -> None:
    proc = vidseg_run("--show-default-model")
    assert proc.returncode == 0, proc.stderr
    printed = Path(proc.stdout.strip())
    assert printed == default_bundle_path()
    assert printed.name == "tiles-lite0-camvid.vidseg"
    if default_bundle_exists():
        assert (printed / "manifest.json").is_file()
        load_bundle(printed)


# --------------------------------------------------------------------------- Ctrl-C


class StderrTail:
    """Collects a child's stderr in a thread, so the test can poll the progress bar."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self._stream = proc.stderr
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := os.read(self._stream.fileno(), 4096):
            self._chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def join(self) -> str:
        self._thread.join(timeout=TIMEOUT_S)
        return self.text()


def frames_done(progress: str) -> int:
    """Highest ``N/100`` tqdm shows (0 before the first update)."""
    counts = re.findall(rf"(\d+)/{SAMPLE_FRAMES} \[", progress)
    return max(map(int, counts), default=0)


def as_from_a_terminal() -> None:
    """The child's SIGINT as a terminal gives it. A shell starts background jobs (``cmd &``, CI
    runners) with SIGINT ignored, children inherit that, and Python then installs no Ctrl-C
    handler: the signal the test sends would be dropped."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_run(
    args: list[str], when_frames: int, sig: signal.Signals = signal.SIGINT
) -> tuple[int, str]:
    """Start vidseg-run with ``args`` and ``--live`` (the file plays at its own frame rate, so
    the run lasts seconds however fast the machine), send ``sig`` once the progress bar shows
    ``when_frames`` frames done (0: as soon as it appears), return (exit code, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidseg.engine", *args, "--live"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=as_from_a_terminal,
    )
    tail = StderrTail(proc)
    try:
        deadline = time.monotonic() + TIMEOUT_S

        def ready() -> bool:
            progress = tail.text()
            return f"/{SAMPLE_FRAMES} [" in progress and frames_done(progress) >= when_frames

        while not ready() and proc.poll() is None:
            assert time.monotonic() < deadline, f"no progress: {tail.text()}"
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, tail.join()


def test_ctrl_c_writes_a_valid_shorter_video(
    tiny_bundle: Path, out_dir: Path, tmp_path: Path
) -> None:
    out, summary = out_dir / "o.mp4", tmp_path / "run.json"
    code, stderr = interrupt_run(
        [str(SAMPLE), "--out", str(out), "--model", str(tiny_bundle), "--json", str(summary)],
        when_frames=3,
    )
    assert code == 130, stderr
    assert "Traceback" not in stderr
    message = re.search(r"vidseg-run: interrupted after (\d+) frames; wrote (\S+)", stderr)
    assert message, stderr
    frames = int(message.group(1))
    assert 0 < frames < SAMPLE_FRAMES
    assert message.group(2) == str(out)
    assert [p.name for p in out_dir.iterdir()] == ["o.mp4"]  # no partial file left
    assert_same_video_shape(out, frames)
    result = json.loads(summary.read_text())
    assert result["interrupted"] is True and result["frames"] == frames


def test_ctrl_c_on_the_first_frame(tiny_bundle: Path, out_dir: Path) -> None:
    """SIGINT as the progress bar appears: 130 and a clean message either way; no file when no
    frame was done (was: exit 5 'no frames were written')."""
    out = out_dir / "o.mp4"
    code, stderr = interrupt_run(
        [str(SAMPLE), "--out", str(out), "--model", str(tiny_bundle)], when_frames=0
    )
    assert code == 130, stderr
    assert "Traceback" not in stderr and "error" not in stderr, stderr
    done = re.search(r"interrupted after (\d+) frames", stderr)
    if done is None:
        assert "vidseg-run: interrupted before any frame was written" in stderr, stderr
        assert list(out_dir.iterdir()) == []
    else:
        assert_same_video_shape(out, int(done.group(1)))


def test_sigterm_is_handled_like_ctrl_c(tiny_bundle: Path, out_dir: Path, tmp_path: Path) -> None:
    """SIGTERM (docker stop, systemd) mid-video: the frames done are written to a valid, shorter
    file and the exit code is 143 (was: killed at once, no file, only a stale temp file)."""
    out, summary = out_dir / "o.mp4", tmp_path / "run.json"
    code, stderr = interrupt_run(
        [str(SAMPLE), "--out", str(out), "--model", str(tiny_bundle), "--json", str(summary)],
        when_frames=3,
        sig=signal.SIGTERM,
    )
    assert code == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    message = re.search(r"vidseg-run: terminated after (\d+) frames; wrote (\S+)", stderr)
    assert message, stderr
    frames = int(message.group(1))
    assert 0 < frames < SAMPLE_FRAMES and message.group(2) == str(out)
    assert [p.name for p in out_dir.iterdir()] == ["o.mp4"]  # no partial file left
    assert_same_video_shape(out, frames)
    assert json.loads(summary.read_text())["interrupted"] is True


# --------------------------------------------------------------------------- output


@pytest.mark.parametrize("mask", [False, True], ids=["video", "mask-directory"])
def test_existing_output_needs_overwrite(mask: bool, tiny_bundle: Path, tmp_path: Path) -> None:
    """An existing output is refused in one line (exit 2) and left as it was (was: replaced
    without a word); --overwrite replaces it."""
    out = tmp_path / ("masks" if mask else "o.mp4")
    if mask:
        out.mkdir()
        (out / "000000.png").write_bytes(b"keep me")
    else:
        out.write_bytes(b"keep me")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    flags = ("--mask",) if mask else ()
    proc = vidseg_run(SAMPLE, "--out", out, "--model", tiny_bundle, "--max-frames", 2, "-q", *flags)
    assert proc.returncode == 2, proc.stderr
    why = (
        "holds masks (000000.png, ...); pass --overwrite to replace them"
        if mask
        else "exists; pass --overwrite to replace it"
    )
    assert proc.stderr.strip() == f"vidseg-run: error: {out} {why}"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (out / "000000.png" if mask else out).read_bytes() == b"keep me"
    proc = vidseg_run(
        SAMPLE, "--out", out, "--model", tiny_bundle, "--max-frames", 2, "-q", "--overwrite", *flags
    )
    assert proc.returncode == 0, proc.stderr
    if mask:
        assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"]
        assert cv2.imread(str(out / "000000.png"), cv2.IMREAD_UNCHANGED).shape == (540, 960)
    else:
        assert_same_video_shape(out, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # nothing left beside it


DISK_FULL = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from vidseg.engine.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("out_name", "flags", "limit"),
    [("o.mp4", (), 20_000), ("o.mkv", ("--mask",), 2_000), ("masks", ("--mask",), 300)],
)
def test_disk_full(
    out_name: str, flags: tuple[str, ...], limit: int, tiny_bundle: Path, out_dir: Path
) -> None:
    """Writes fail part-way (a file size limit stands in for a full disk): one line, exit 5,
    no output and nothing under a temporary name (was, for PNG masks: files cut at the limit
    published as the result, exit 0)."""
    out = out_dir / out_name
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            DISK_FULL,
            str(limit),
            str(SAMPLE),
            "--out",
            str(out),
            "--model",
            str(tiny_bundle),
            "--max-frames",
            str(MAX_FRAMES),
            "-q",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert_clean_error(proc, 5, str(out), "File too large")
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- unusual inputs


def make_clip(
    path: Path,
    codec: str,
    pix_fmt: str,
    width: int,
    height: int,
    frames: int = 4,
    rotation: int | None = None,
) -> list[np.ndarray]:
    """Encode the sample's first ``frames`` frames, resized to width x height, as ``pix_fmt``
    with ``codec`` (and a display rotation); return the RGB frames written."""
    images = [cv2.resize(f.image, (width, height)) for f in read_frames(SAMPLE, max_frames=frames)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return images


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "size"),
    [
        ("odd.mkv", "ffv1", "yuv420p", (641, 479)),
        ("gray.mkv", "ffv1", "gray", (320, 180)),
        ("ten-bit.mkv", "ffv1", "yuv420p10le", (320, 180)),
        ("yuv444.mp4", "libx264", "yuv444p", (320, 180)),
    ],
)
def test_unusual_pixel_formats_and_sizes(
    name: str, codec: str, pix_fmt: str, size: tuple[int, int], tiny_bundle: Path, tmp_path: Path
) -> None:
    """Odd sizes, grayscale, 10-bit and 4:4:4 sources run end to end: the label masks have the
    source's exact size, the overlay its size padded to even (yuv420p)."""
    clip = tmp_path / name
    make_clip(clip, codec, pix_fmt, *size)
    with av.open(str(clip)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == pix_fmt
    masks = tmp_path / "m.mkv"
    proc = vidseg_run(clip, "--out", masks, "--mask", "--model", tiny_bundle, "-q")
    assert proc.returncode == 0, proc.stderr
    labels = list(read_label_frames(masks))
    assert len(labels) == 4 and labels[0].shape == size[::-1]
    overlay = tmp_path / "o.mp4"
    proc = vidseg_run(clip, "--out", overlay, "--model", tiny_bundle, "-q")
    assert proc.returncode == 0, proc.stderr
    info = VideoInfo.from_path(overlay)
    assert (info.width, info.height) == (size[0] + size[0] % 2, size[1] + size[1] % 2)


def test_rotated_source_is_segmented_upright(tiny_bundle: Path, tmp_path: Path) -> None:
    """A clip with a display rotation (a phone held upright) is decoded, segmented and written
    upright, as players show it (was: segmented lying on its side, written without the
    rotation, so the output played sideways)."""
    clip = tmp_path / "phone.mp4"
    images = make_clip(clip, "libx264", "yuv444p", 320, 180, rotation=90)
    info = VideoInfo.from_path(clip)
    assert (info.width, info.height, info.rotation) == (180, 320, 90)
    decoded = [f.image for f in read_frames(clip)]
    upright = np.rot90(images[0], 1)  # +90: a quarter turn counterclockwise
    assert decoded[0].shape == (320, 180, 3)
    assert np.abs(decoded[0].astype(int) - upright).mean() < 3  # lossy, but the right way up
    assert np.abs(decoded[0].astype(int) - np.rot90(images[0], -1)).mean() > 10
    masks, overlay = tmp_path / "m.mkv", tmp_path / "o.mp4"
    for out, flags in ((masks, ("--mask",)), (overlay, ())):
        proc = vidseg_run(clip, "--out", out, "--model", tiny_bundle, "-q", *flags)
        assert proc.returncode == 0, proc.stderr
    assert list(read_label_frames(masks))[0].shape == (320, 180)
    written = VideoInfo.from_path(overlay)
    assert (written.width, written.height, written.rotation) == (180, 320, 0)


def test_audio_only_file(tiny_bundle: Path, out_dir: Path, tmp_path: Path) -> None:
    """A file with sound and no picture: one line, exit 5, no output."""
    sound = tmp_path / "sound.m4a"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    proc = vidseg_run(sound, "--out", out_dir / "o.mp4", "--model", tiny_bundle, "-q")
    assert_clean_error(proc, 5, "sound.m4a", "no video stream")
    assert list(out_dir.iterdir()) == []
