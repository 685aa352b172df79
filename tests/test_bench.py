"""vidseg-bench writes the documented JSON fields (numbers are not asserted: speed targets live
in benchmark runs, not in unit tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidseg.benchmarks import bench
from vidseg.engine import Segmenter
from vidseg.engine.video import read_frames


def test_bench_json(
    tiny_bundle: Path, tiny_perframe_bundle: Path, camvid: Path, sample_clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    code = bench.main(
        [
            "--model",
            str(tiny_bundle),
            "--frames",
            "12",
            "--warmup",
            "2",
            "--accuracy",
            str(camvid),
            "--video-frames",
            "8",
            "--json",
            str(out),
            "--plots",
            str(tmp_path),
            "--compare",
            str(tiny_perframe_bundle),
            "--torch",
            "--torch-models",
            "keyframe-lite0-c2",
            "netwarp-lite0",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    for key in ("step_ms", "bare_run_ms"):
        assert set(report[key]) >= {"p50", "p90", "p99", "max"}
        assert 0 < report[key]["p50"] <= report[key]["p99"] <= report[key]["max"]
    assert report["step_ms"]["n"] == 12
    assert report["pipeline_fps"] > 0 and report["naive_fps"] > 0
    assert report["naive"]["frames"] == report["pipeline"]["frames"] == 8
    cpu = report["pipeline"]["cpu"]  # engine.cpuclock's report of the pipeline run
    assert set(cpu["core_ms_per_frame"]) == {"decode", "step", "render", "encode", "other", "total"}
    assert min(cpu["core_ms_per_frame"].values()) >= 0 and cpu["ceiling_fps"] > 0
    assert {"cpu", "onnxruntime", "python"} <= set(report["environment"])
    assert (tmp_path / "latency.png").stat().st_size > 0
    (baseline,) = report["comparisons"]
    assert baseline["model"] == "perframe-lite0" and baseline["step_ms"]["n"] == 12
    assert baseline["key_frames"] is False and "key_intervals" not in baseline
    assert set(report["stage_fps"]) == {"decode", "segment", "render_encode"}
    # clip flicker: consecutive labels of the clip's first 8 frames, state carried
    seg = Segmenter(tiny_bundle)
    labels = [seg.step(seg.prepare(f.image)).labels for f in read_frames(sample_clip, max_frames=8)]
    changed = sum(int((a != b).sum()) for a, b in zip(labels, labels[1:]))
    expected = 100 * changed / sum(a.size for a in labels[1:])
    assert expected > 0 and report["clip_flicker"] == pytest.approx(expected, abs=1e-3)
    assert report["pipeline_vs_slowest_stage"] == pytest.approx(
        report["pipeline_fps"] / min(report["stage_fps"].values()), abs=1e-3
    )
    torch_rows = {r["model"]: r for r in report["torch"]}
    assert list(torch_rows) == [
        "recurrent-lite0-gru",
        "perframe-lite0",
        "keyframe-lite0-c2",
        "netwarp-lite0",
    ]
    assert all(r["ms"]["n"] == 12 and r["device"] == "cpu" for r in report["torch"])
    assert torch_rows["keyframe-lite0-c2"]["key_interval"] == 5
    for entry in (report, baseline):  # CamVid val through the engine, for both bundles
        assert entry["accuracy"]["split"] == "CamVid val (101 frames in order)"
        assert 0 <= entry["accuracy"]["miou"] <= 100


def test_bench_torch_cuda_refused_without_gpu(tiny_bundle: Path, capsys) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: nothing to refuse")
    code = bench.main(
        [
            "--model",
            str(tiny_bundle),
            "--frames",
            "2",
            "--warmup",
            "0",
            "--skip-video",
            "--torch",
            "--torch-device",
            "cuda",
        ]
    )
    assert code != 0
    assert "sees no GPU" in capsys.readouterr().err


def test_bench_keyframe_interval_sweep(tiny_keyframe_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "kf.json"
    code = bench.main(
        [
            "--model",
            str(tiny_keyframe_bundle),
            "--frames",
            "12",
            "--warmup",
            "1",
            "--skip-video",
            "--intervals",
            "2",
            "5",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert sorted(Path(p).name for p in report["plots"]) == ["key_intervals.png", "latency.png"]
    assert (tmp_path / "plots" / "key_intervals.png").stat().st_size > 0
    assert report["bare_run_ms"] == {} and "overhead_ratio" not in report  # two graphs: no bare
    rows = {r["interval"]: r for r in report["key_intervals"]}
    assert rows[2]["key_ms"]["n"] == 6 and rows[2]["current_ms"]["n"] == 6
    assert rows[5]["key_ms"]["n"] == 3 and rows[5]["current_ms"]["n"] == 9


def test_bench_bad_bundle(tmp_path: Path, capsys) -> None:
    assert bench.main(["--model", str(tmp_path / "nope"), "--skip-video"]) == 3
    assert "bundle not found" in capsys.readouterr().err


def test_bench_split_bundle(tiny_split_bundle: Path, tmp_path: Path) -> None:
    """A split bundle's bare run is its encode graph then its step graph, state carried."""
    out = tmp_path / "split.json"
    assert (
        bench.main(
            [
                "--model",
                str(tiny_split_bundle),
                "--frames",
                "6",
                "--warmup",
                "1",
                "--video-frames",
                "6",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["bare_run_ms"]["n"] == 6 and report["overhead_ratio"] > 0
    assert report["pipeline"]["frames"] == 6 and report["stage_fps"]["decode"] > 0


def test_bench_upsample_times_crisp_only_with_logits(tiny_bundle: Path, tmp_path: Path) -> None:
    """The upsample timing: both paths on a bundle with logits, nearest alone without."""
    import shutil

    from vidseg.export.logits import add_logits

    with_logits = tmp_path / "l.vidseg"
    shutil.copytree(tiny_bundle, with_logits)
    add_logits(with_logits)
    frames = [
        f.image
        for f in read_frames(
            Path(bench.default_bundle_path().parent / "dashcam.mp4"), size=(96, 64), max_frames=4
        )
    ]
    sizes = [(320, 180), (128, 96)]
    crisp = bench.bench_upsample(with_logits, frames, sizes, 6, None)
    plain = bench.bench_upsample(tiny_bundle, frames, sizes, 6, None)
    assert set(crisp) == set(plain) == {"320x180", "128x96"}
    for row in crisp.values():
        assert row["crisp_ms"]["n"] == row["nearest_ms"]["n"] == 6
        assert row["added_ms_p50"] == round(row["crisp_ms"]["p50"] - row["nearest_ms"]["p50"], 3)
    assert all(set(row) == {"nearest_ms"} for row in plain.values())


def test_bench_first_frame_transfers_and_batch(tiny_bundle: Path, tmp_path: Path) -> None:
    """The first frame with and without warm-up, the bytes each frame moves (the frame up, the
    graph's outputs down, no state), and batched throughput per --batch size."""
    out = tmp_path / "b.json"
    assert (
        bench.main(
            [
                "--model",
                str(tiny_bundle),
                "--frames",
                "4",
                "--warmup",
                "1",
                "--skip-video",
                "--upsample-sizes",
                "96x64",
                "--batch",
                "1",
                "3",
                "--batch-ticks",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    first = report["first_frame"]
    assert first["first_frame_ms"] > 0 and first["first_frame_ms_no_warmup"] > 0
    assert first["warmup_ms"] > 0 and report["first_frame_vs_p50"] > 0
    h, w = report["input_size"]
    labels_down = (h // 1) * (w // 1)  # the tiny bundle: labels at stride 1, no scores/logits
    assert report["transfer_bytes_per_frame"] == {"up": h * w * 3, "down": labels_down}
    assert [row["batch"] for row in report["batch"]] == [1, 3]
    for row in report["batch"]:
        assert row["frames_per_s"] > 0 and row["ticks"] == 2
        assert row["transfer_bytes_per_frame"] == {"up": h * w * 3, "down": labels_down}
    assert report["device"] == "cpu" and report["step"]["cuda_graph"] is False


def test_bench_cuda_refused_on_a_cpu_install(tiny_bundle: Path, capsys) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    code = bench.main(
        ["--model", str(tiny_bundle), "--frames", "2", "--skip-video", "--device", "cuda"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and "needs onnxruntime-gpu" in err[0]
