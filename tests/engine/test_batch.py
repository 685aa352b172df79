"""``vidseg-batch`` on a local Ray instance (2 CPUs): several clips, a corrupt one reported
after its retries, a re-run skipping finished videos, chunks joined, a killed worker replaced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs the [ray] extra (pip install 'vidseg[ray]')")

from vidseg.engine import Segmenter  # noqa: E402
from vidseg.engine.batch import run_batch  # noqa: E402
from vidseg.engine.batchcli import main  # noqa: E402
from vidseg.engine.batchjobs import (  # noqa: E402
    RUN_MANIFEST,
    BatchOptions,
    expand_inputs,
    plan_chunks,
)
from vidseg.engine.video import VideoInfo, read_frames, read_label_frames  # noqa: E402
from vidseg.engine.writer import VideoWriter  # noqa: E402

FRAMES = 12


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(sample_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three short clips (different stretches of the sample clip) and a corrupt file."""
    root = tmp_path_factory.mktemp("clips")
    frames = list(read_frames(sample_clip, size=(160, 96), max_frames=3 * FRAMES))
    paths = {}
    for i, name in enumerate("abc"):
        paths[name] = root / f"{name}.mp4"
        with VideoWriter(paths[name], width=160, height=96, fps=25) as writer:
            for frame in frames[i * FRAMES : (i + 1) * FRAMES]:
                writer.write(frame.image)
    paths["bad"] = root / "bad.mp4"
    paths["bad"].write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 50)
    return paths


def local_labels(bundle: Path, clip: Path) -> list[np.ndarray]:
    segmenter = Segmenter(bundle, warmup=False)
    return [r.labels for r in segmenter.stream(read_frames(clip))]


def test_clips_processed_corrupt_reported_rerun_skips(
    local_ray, clips, tiny_bundle: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    inputs = [str(clips[k]) for k in ("a", "b", "c", "bad")]
    summary_path = tmp_path / "summary.json"
    argv = [
        *inputs,
        "--out",
        str(out),
        "--model",
        str(tiny_bundle),
        "--workers",
        "2",
        "--json",
        str(summary_path),
    ]
    assert main(argv) == 1  # one video failed
    printed = capsys.readouterr()
    assert "3 done, 1 failed, 0 skipped" in printed.out
    assert "failed: " in printed.err and "bad.mp4" in printed.err
    for name in "abc":
        ours = list(read_label_frames(out / f"{name}.mkv"))
        assert len(ours) == FRAMES
        for a, b in zip(ours, local_labels(tiny_bundle, clips[name])):
            np.testing.assert_array_equal(a, b)
    records = [json.loads(line) for line in (out / RUN_MANIFEST).read_text().splitlines()]
    by_input = {r["input"]: r for r in records}
    assert len(records) == 4
    bad = by_input[str(clips["bad"])]
    assert bad["error"] and bad["attempts"] == 2 and bad["frames"] == 0
    assert all(by_input[str(clips[k])]["error"] is None for k in "abc")
    assert all(by_input[str(clips[k])]["frames"] == FRAMES for k in "abc")
    summary = json.loads(summary_path.read_text())
    assert summary["failures"] == 1 and summary["frames"] == 3 * FRAMES
    assert summary["throughput_fps"] > 0 and len(summary["videos"]) == 4
    assert not list(out.glob(".*partial*"))  # nothing half-written left
    # re-run: the three finished videos are skipped, the failed one is tried again
    assert main(argv) == 1
    assert "0 done, 1 failed, 3 skipped" in capsys.readouterr().out
    assert len((out / RUN_MANIFEST).read_text().splitlines()) == 5


def test_chunks_with_enough_warmup_equal_one_pass(
    local_ray, clips, tiny_bundle: Path, tmp_path: Path
) -> None:
    """Chunks of 5 frames run in parallel and joined without re-encoding; with a warm-up that
    reaches back to frame 0 every chunk's labels are the sequential pass's exactly."""
    assert plan_chunks(FRAMES, 5) == [(0, 5), (5, 10), (10, 12)]
    options = BatchOptions(tmp_path, str(tiny_bundle), chunk_frames=5, warmup_frames=FRAMES)
    summary = run_batch([str(clips["a"])], options, workers=2)
    [record] = summary.records
    assert record.error is None and record.chunks == 3 and record.frames == FRAMES
    ours = list(read_label_frames(tmp_path / "a.mkv"))
    assert len(ours) == FRAMES
    for a, b in zip(ours, local_labels(tiny_bundle, clips["a"])):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / ".parts" / "a").exists()  # parts removed after the join


def test_killed_worker_is_replaced(local_ray, clips, tiny_bundle: Path, tmp_path: Path) -> None:
    killed = []

    def kill_first(event: str, job, actor) -> None:
        if event == "start" and not killed:
            killed.append(job.input)
            ray.kill(actor)

    inputs = [str(clips[k]) for k in "abc"]
    options = BatchOptions(tmp_path, str(tiny_bundle))
    summary = run_batch(inputs, options, workers=2, observer=kill_first)
    assert summary.worker_restarts == 1
    assert [r.error for r in summary.records] == [None] * 3
    assert [r.frames for r in summary.records] == [FRAMES] * 3
    assert {r.input: r.attempts for r in summary.records}[killed[0]] == 2


@pytest.fixture(scope="module")
def gappy(sample_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``short.avi``: an AVI that declares 91 frames and holds 88 (three frames dropped from a
    25 fps stream: AVI keeps an empty slot for each, counted in its frame count, with nothing
    to decode); ``truncated.avi``: its first 70 % (declares 91, 59 decode, then the error)."""
    from fractions import Fraction

    import av

    root = tmp_path_factory.mktemp("gappy")
    frames = list(read_frames(sample_clip, size=(160, 96), max_frames=91))
    short = root / "short.avi"
    with av.open(str(short), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for pts, frame in enumerate(frames):
            if pts in (20, 45, 70):
                continue
            image = av.VideoFrame.from_ndarray(frame.image, format="rgb24").reformat(
                format="yuv420p"
            )
            image.pts, image.time_base = pts, Fraction(1, 25)
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    truncated = root / "truncated.avi"
    data = short.read_bytes()
    truncated.write_bytes(data[: len(data) * 7 // 10])
    return {"short": short, "truncated": truncated}


def test_a_video_holding_fewer_frames_than_it_declares_is_chunked_whole(
    local_ray, gappy, tiny_bundle: Path, tmp_path: Path
) -> None:
    """91 declared, 88 held: chunks of 30 plan a fourth chunk from frame 90, past the end. It
    writes nothing and is left out (it failed the whole video: 'no frames were written to
    .../00003.mkv', the parts left behind); the output is the 88 frames of one sequential
    pass, and no part is left."""
    assert VideoInfo.from_path(gappy["short"]).frame_count == 91
    held = local_labels(tiny_bundle, gappy["short"])
    assert len(held) == 88
    options = BatchOptions(tmp_path, str(tiny_bundle), chunk_frames=30, warmup_frames=91)
    [record] = run_batch([str(gappy["short"])], options, workers=2).records
    assert record.error is None and record.chunks == 4 and record.frames == 88
    ours = list(read_label_frames(tmp_path / "short.mkv"))
    assert len(ours) == 88
    for a, b in zip(ours, held):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / ".parts").exists()


def test_a_failed_chunked_video_leaves_no_parts_and_names_the_cause(
    local_ray, gappy, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A truncated file: its first chunk is written, the later ones hit the damage. The
    manifest stores the cause's own line; the written parts are deleted."""
    from vidseg.engine.errors import TruncatedVideoError

    with pytest.raises(TruncatedVideoError) as caught:
        for _ in read_frames(gappy["truncated"]):
            pass
    decodable = caught.value.frames_decoded
    assert 30 < decodable < 60  # chunk 0 is written, chunk 1 hits the damage
    options = BatchOptions(tmp_path, str(tiny_bundle), chunk_frames=30, retries=0)
    [record] = run_batch([str(gappy["truncated"])], options, workers=2).records
    assert record.error == str(caught.value)
    assert record.frames == 0 and not (tmp_path / "truncated.mkv").exists()
    assert not (tmp_path / ".parts").exists(), sorted(tmp_path.rglob("*"))
    [line] = (tmp_path / RUN_MANIFEST).read_text().splitlines()
    assert json.loads(line)["error"] == record.error


def test_a_worker_that_cannot_start_reports_the_cause(local_ray, clips, tmp_path: Path) -> None:
    """The model fails to load in the worker: the manifest says why in one line (it stored
    Ray's coloured 'The actor died ... \\x1b[36mray::Worker.__init__()' header)."""
    options = BatchOptions(tmp_path / "out", str(tmp_path / "missing.vidseg"), retries=0)
    [record] = run_batch([str(clips["a"])], options, workers=1).records
    assert record.error.startswith("cannot load the model: "), record.error
    assert "missing.vidseg" in record.error and "\n" not in record.error
    assert "\x1b" not in record.error and "ray::" not in record.error


def test_failure_reason_is_the_workers_own_error() -> None:
    from vidseg.engine.batchjobs import failure_reason
    from vidseg.engine.errors import VideoIOError

    error = ray.exceptions.RayTaskError(
        "Worker.run", "Traceback ...\nValueError: boom", ValueError("boom\nmore"), pid=5
    )
    assert "\x1b[" in str(error)  # what was stored
    assert failure_reason(error) == "ValueError: boom"
    assert failure_reason(VideoIOError("cannot read x\ndetail")) == "cannot read x"


def test_inputs_and_usage(clips, tmp_path: Path, capsys) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"# clips\n{clips['a']}\n\n{clips['b']}\n")
    folder = expand_inputs([str(clips["a"].parent)])
    assert [Path(p).name for p in folder] == ["a.mp4", "b.mp4", "bad.mp4", "c.mp4"]
    assert expand_inputs([str(listing), str(clips["a"])]) == [str(clips["a"]), str(clips["b"])]
    with pytest.raises(SystemExit) as usage:
        main([str(clips["a"]), "--out", str(tmp_path), "--chunk-frames", "5", "--overlay"])
    assert usage.value.code == 2
    assert main([str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 5
    assert "input not found" in capsys.readouterr().err
