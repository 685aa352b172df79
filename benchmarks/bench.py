"""``vidseg-bench``: per-frame latency and throughput of a bundle, written as JSON (+ plots).

Measured in one process, one after another, on the same frames:

* ``step_ms`` -- ``Segmenter.step`` on frames already at the model's input size and the read
  of its labels (taken to the frame's size when first read): what a caller of ``step`` pays
  for them (total and per stage: ``pre``, ``infer``, ``post`` the upsampling), after
  ``--warmup`` frames that are reported separately. Every other step timing below reads the
  labels too, except the stages of ``stage_fps``, split as the pipeline splits them;
* ``bare_run_ms`` -- a plain ``InferenceSession.run`` on the same graph with the same session
  options and the state carried by hand, interleaved frame by frame with the steps:
  ``overhead_ratio = step p50 / bare p50`` is what the engine adds; with ``--device cuda``
  the steps run there (CUDA graphs where the graph allows them) against the same segmenter
  without CUDA graphs (``no_graph_step_ms``);
* ``first_frame`` -- a fresh segmenter's load and first step, with the warm-up at load and
  without (``first_frame_vs_p50``: the first frame over the step p50);
* ``transfer_bytes_per_frame`` -- host<->device bytes per step (up: the frame; down: labels,
  scores, logits; the state never moves), and ``run_split_ms_per_frame``: the backend runs'
  time split as trtexec splits it, inputs up / compute / outputs down (on the IO-binding and
  fixed-buffer paths: the GPU; a plain numpy run on the CPU counts as compute alone);
* ``batch`` (``--batch N ...``) -- frames/s with N streams batched in one
  ``MultiStreamSegmenter`` tick;
* ``upsample`` -- labels (and confidence) from the graph's label stride to each
  ``--upsample-sizes`` output size, per frame: ``crisp_ms`` (the arg-max of bilinear logits,
  :mod:`vidseg.engine.upsample`; bundles with logits) against ``nearest_ms`` (the labels
  upscaled by nearest neighbour) on the same outputs, interleaved;
* ``naive_fps`` -- decode, segment, blend and encode the clip in one sequential loop;
* ``pipeline_fps`` -- the same work through ``engine.pipeline`` (decode and encode threads);
* ``stage_fps`` -- decode, segment, and render+encode each alone on the same frames:
  ``pipeline_vs_slowest_stage`` is how close the pipeline comes to its ceiling;
  ``pipeline.cpu`` -- the pipeline run's CPU time per frame by stage, the ceiling the cores
  allow at that cost and the share of it reached (:mod:`vidseg.engine.cpuclock`);
  ``clip_flicker`` -- % of pixels whose label changes between consecutive frames of the clip;
* ``accuracy`` (``--accuracy CAMVID``) -- CamVid val mIoU through the engine, state carried
  and reset every frame (:mod:`vidseg.benchmarks.accuracy`);
* ``torch`` (``--torch``/``--torch-models``) -- the same architectures in torch eager on
  ``--torch-device`` (random weights; on CUDA with the GPU's peak memory).

Latency numbers are percentiles (p50/p90/p99/max) of ``perf_counter_ns`` deltas.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import IO, Callable

import numpy as np
import onnxruntime as ort

from vidseg.benchmarks.accuracy import FlickerMeter, accuracy_report
from vidseg.benchmarks.report import environment, plot
from vidseg.engine.backends.base import Transfers
from vidseg.engine.backends.ort import session_options
from vidseg.engine.bundle import default_bundle_path, load_bundle
from vidseg.engine.clihelp import CliParser, HelpFormatter
from vidseg.engine.cpuclock import cpu_line
from vidseg.engine.errors import VidsegError, run_for_cli, unwritable
from vidseg.engine.multistream import MultiStreamSegmenter
from vidseg.engine.outfile import lines_to_stderr, write_text
from vidseg.engine.overlay import blend, palette_lut
from vidseg.engine.pipeline import segment_video
from vidseg.engine.roles import ENCODE
from vidseg.engine.runargs import parse_size
from vidseg.engine.schedule import Schedule
from vidseg.engine.segmenter import Result, Segmenter
from vidseg.engine.stats import percentiles
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.engine.video import VideoInfo, read_frames
from vidseg.engine.writer import VideoWriter

logger = logging.getLogger(__name__)


def _timed(fn: Callable[[int], object], i: int) -> float:
    t0 = time.perf_counter_ns()
    fn(i)
    return (time.perf_counter_ns() - t0) / 1e6


def _loop(n: int, fn: Callable[[int], object]) -> list[float]:
    return [_timed(fn, i) for i in range(n)]


def _labelled(result: Result) -> Result:
    """``result`` with its labels read: taken to the frame's size, as a caller who uses them
    pays for (``Result``: a step alone leaves them at the graph's label stride)."""
    _ = result.labels
    return result


def _bare_runner(
    bundle: Path, frames: list[np.ndarray], threads: int | None
) -> Callable[[int], None]:
    """The same graph through a bare InferenceSession, state carried by hand (a split bundle:
    its encode graph, then its step graph on the features)."""
    manifest = load_bundle(bundle).manifest
    opts = session_options(threads)

    def session(role: str) -> ort.InferenceSession:
        return ort.InferenceSession(
            str(bundle / manifest.graphs[role]), opts, providers=["CPUExecutionProvider"]
        )

    sess = session("step")
    encode = session(ENCODE) if ENCODE in manifest.graphs else None
    names = [o.name for o in sess.get_outputs()]
    state = {s.input: np.zeros((1, *s.shape), s.dtype) for s in manifest.state}
    batches = [f[None] for f in frames]

    def one(i: int) -> None:
        nonlocal state
        feeds = {manifest.input.name: batches[i % len(batches)]}
        if encode is not None:
            feeds = dict(zip([f.name for f in manifest.features], encode.run(None, feeds)))
        out = dict(zip(names, sess.run(names, {**feeds, **state})))
        state = {s.input: out[s.output] for s in manifest.state}

    return one


def bench_latency(
    bundle: Path,
    frames: list[np.ndarray],
    warmup: int,
    n: int,
    threads: int | None,
    device: str = "cpu",
) -> dict[str, object]:
    """``Segmenter.step`` (its labels read) and a baseline on the same frames, interleaved
    frame by frame (step, baseline, step, ...) so that machine noise and clock drift hit both
    alike. On the CPU the baseline is a bare session (the graph alone: no upsampling); on a GPU
    it is the same segmenter without CUDA graphs (IO binding, state on the device; its labels
    read too), so ``step_ms`` is the CUDA-graph step where the graph allows it. Also the
    host<->device bytes of each timed frame."""
    seg = Segmenter(bundle, threads=threads, device=device)
    manifest = seg.manifest
    on_gpu = device.startswith("cuda")
    # the bare loop mirrors single-graph bundles only (no key-frame switching, no aux inputs)
    plain = "step" in manifest.graphs and not manifest.aux_inputs and not on_gpu
    bare = _bare_runner(bundle, frames, threads) if plain else None
    if on_gpu:
        other = Segmenter(bundle, threads=threads, device=device, cuda_graph=False)

        def bare(i: int) -> None:
            _labelled(other.step(frames[i % len(frames)]))

    timings = []

    def step(i: int) -> None:
        timings.append(_labelled(seg.step(frames[i % len(frames)])).timings)

    warm_step = _loop(warmup, step)
    warm_bare = _loop(warmup, bare) if bare else []
    timings.clear()
    step_ms, bare_ms = [], []
    before = seg.model.transfers()
    for i in range(n):
        step_ms.append(_timed(step, i))
        if bare:
            bare_ms.append(_timed(bare, i))
    after = seg.model.transfers()
    return {
        "family": manifest.family,
        "device": device,
        "cuda_graph": any(getattr(b, "capture", False) for b in seg.model.backends.values()),
        "warmup_ms": percentiles(warm_step) if warm_step else {},
        "step_ms": percentiles(step_ms),
        "bare_run_ms" if not on_gpu else "no_graph_step_ms": percentiles(bare_ms)
        if bare_ms
        else {},
        "bare_warmup_ms": percentiles(warm_bare) if warm_bare else {},
        "stages_ms": {
            s: percentiles([getattr(t, f"{s}_ms") for t in timings])
            for s in ("pre", "infer", "post")
        },
        "transfer_bytes_per_frame": {
            "up": (after.up_bytes - before.up_bytes) // n,
            "down": (after.down_bytes - before.down_bytes) // n,
        },
        "run_split_ms_per_frame": _run_split(before, after, n),
        "step_series_ms": [round(t, 3) for t in step_ms],
    }


def _run_split(before: Transfers, after: Transfers, n: int) -> dict[str, float]:
    """Mean ms per frame of the backend runs between two ``Transfers`` snapshots, split as
    trtexec splits it: inputs up, compute, outputs down (a plain numpy run on the CPU counts
    as compute alone)."""
    return {
        part: round((getattr(after, f"{part}_ns") - getattr(before, f"{part}_ns")) / n / 1e6, 3)
        for part in ("up", "compute", "down")
    }


def bench_first_frame(
    bundle: Path, frame: np.ndarray, threads: int | None, device: str = "cpu"
) -> dict[str, float]:
    """Load time and the first ``step`` (its labels read) of a fresh segmenter, with the
    warm-up at load (the default) and without it (all numbers in ms)."""
    out: dict[str, float] = {}
    for warm, suffix in ((True, ""), (False, "_no_warmup")):
        t0 = time.perf_counter_ns()
        seg = Segmenter(bundle, threads=threads, device=device, warmup=warm)
        t1 = time.perf_counter_ns()
        _labelled(seg.step(frame))
        t2 = time.perf_counter_ns()
        out[f"load_ms{suffix}"] = round((t1 - t0) / 1e6, 3)
        out[f"first_frame_ms{suffix}"] = round((t2 - t1) / 1e6, 3)
        if warm:
            out["warmup_ms"] = round(seg.warmup_ms, 3)
    return out


def bench_batch(
    bundle: Path,
    frames: list[np.ndarray],
    sizes: list[int],
    n: int,
    threads: int | None,
    device: str = "cpu",
) -> list[dict[str, object]]:
    """Throughput: ``N`` streams in one ``MultiStreamSegmenter`` tick (every stream a frame
    each tick, state carried on the device, every result's labels read), frames/s over ``n``
    ticks after 3 untimed."""
    rows = []
    for size in sizes:
        multi = MultiStreamSegmenter(bundle, streams=size, threads=threads, device=device)
        ticks = [[frames[(t + k) % len(frames)] for k in range(size)] for t in range(n + 3)]
        for tick in ticks[:3]:
            multi.step(tick)
        before = multi.model.transfers()
        t0 = time.perf_counter_ns()
        for tick in ticks[3:]:
            for result in multi.step(tick):
                if result is not None:
                    _labelled(result)
        wall_s = (time.perf_counter_ns() - t0) / 1e9
        after = multi.model.transfers()
        rows.append(
            {
                "batch": size,
                "ticks": n,
                "frames_per_s": round(size * n / wall_s, 1),
                "tick_ms": round(wall_s * 1e3 / n, 3),
                "transfer_bytes_per_frame": {
                    "up": (after.up_bytes - before.up_bytes) // (n * size),
                    "down": (after.down_bytes - before.down_bytes) // (n * size),
                },
            }
        )
    return rows


def bench_upsample(
    bundle: Path,
    frames: list[np.ndarray],
    sizes: list[tuple[int, int]],
    n: int,
    threads: int | None,
    device: str = "cpu",
) -> dict[str, dict[str, object]]:
    """Per output size ``(width, height)``: time to bring one frame's graph outputs to that
    size, crisp (with logits, when the bundle has them) and nearest neighbour, interleaved on
    the graph outputs of the clip's frames (state carried)."""
    seg = Segmenter(bundle, threads=threads, device=device)
    outputs = [seg.step(f).outputs for f in frames[: min(n, len(frames))]]
    report: dict[str, dict[str, object]] = {}
    for width, height in sizes:
        crisp_ms, nearest_ms = [], []
        for i in range(n):
            out = outputs[i % len(outputs)]
            assert out is not None  # Segmenter.step always records them
            plain = GraphOutputs(out.labels, out.scores)
            if out.logits is not None:
                crisp_ms.append(_timed(partial(upsample, out, height), width))
            nearest_ms.append(_timed(partial(upsample, plain, height), width))
        row: dict[str, object] = {"nearest_ms": percentiles(nearest_ms)}
        if crisp_ms:
            row["crisp_ms"] = percentiles(crisp_ms)
            row["added_ms_p50"] = round(
                row["crisp_ms"]["p50"] - row["nearest_ms"]["p50"],
                3,  # type: ignore[index]
            )
        report[f"{width}x{height}"] = row
    return report


def _overlay_job(
    bundle: Path, clip: Path, out: Path, threads: int | None, device: str = "cpu"
) -> tuple[Segmenter, Callable[..., np.ndarray], VideoWriter]:
    """What both video runs need: a segmenter, the overlay renderer and an unopened writer."""
    seg = Segmenter(bundle, threads=threads, device=device)
    lut = palette_lut(seg.manifest.palette)
    info = VideoInfo.from_path(clip)
    writer = VideoWriter(
        out, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base
    )
    return seg, lambda frame, result: blend(frame.image, result.labels, lut, 0.5), writer


def bench_naive(
    bundle: Path, clip: Path, out: Path, max_frames: int, threads: int | None, device: str = "cpu"
) -> dict[str, float]:
    """Decode -> step -> blend -> encode, one frame at a time on one thread."""
    seg, render, sink = _overlay_job(bundle, clip, out, threads, device)
    t0 = time.perf_counter()
    n = 0
    with sink as writer:
        for frame in read_frames(clip, max_frames=max_frames):
            writer.write(render(frame, seg.step(frame.image)), frame.pts)
            n += 1
    wall = time.perf_counter() - t0
    return {"frames": n, "wall_s": round(wall, 3), "fps": round(n / wall, 2)}


def bench_pipeline(
    bundle: Path, clip: Path, out: Path, max_frames: int, threads: int | None, device: str = "cpu"
) -> dict[str, float]:
    seg, render, sink = _overlay_job(bundle, clip, out, threads, device)
    t0 = time.perf_counter()
    with sink as writer:
        stats = segment_video(seg, read_frames(clip, max_frames=max_frames), writer, render)
    wall = time.perf_counter() - t0  # includes the final flush, like the naive loop
    fps = round(stats.frames / wall, 2)
    cpu = stats.cpu.as_json() if stats.cpu else None  # the frame loop's CPU per stage and frame
    return {"frames": stats.frames, "wall_s": round(wall, 3), "fps": fps, "cpu": cpu}


def bench_stages(
    bundle: Path, clip: Path, out: Path, max_frames: int, threads: int | None, device: str = "cpu"
) -> tuple[dict[str, float], float]:
    """Each stage of the video job alone, split as ``engine.pipeline`` splits it, on the same
    frames, in frames per second: decode + ``Segmenter.prepare`` (resize to the model input,
    and a split bundle's encode graph); segment (``Segmenter.step``); render (labels back to the
    frame's size, blend) + encode. The slowest of them is the ceiling the pipeline can reach.

    Also returns the clip's flicker: % of pixels whose label changes from one frame to the next
    (the segment stage's labels, state carried; no ground truth, so motion counts too)."""
    seg, render, sink = _overlay_job(bundle, clip, out, threads, device)
    seg.prepare(np.zeros((*seg.input_size, 3), np.uint8))  # first runs allocate: not a stage cost
    t0 = time.perf_counter()
    decoded = [(f, seg.prepare(f.image)) for f in read_frames(clip, max_frames=max_frames)]
    decode_s = time.perf_counter() - t0
    seg.step(decoded[0][1])  # the first run allocates; the other stages have no such cost
    seg.reset()
    t0 = time.perf_counter()
    results = [seg.step(x) for _, x in decoded]
    segment_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with sink as writer:
        for (frame, _), result in zip(decoded, results):
            writer.write(render(frame, result.at_size(*frame.image.shape[:2])), frame.pts)
    encode_s = time.perf_counter() - t0
    n = len(decoded)
    flicker = FlickerMeter(len(seg.manifest.classes))
    for result in results:
        flicker.add(result.labels)
    fps = {
        stage: round(n / s, 2)
        for stage, s in (("decode", decode_s), ("segment", segment_s), ("render_encode", encode_s))
    }
    return fps, round(flicker.result().pred, 3)


def bench_side_by_side(
    bundles: list[Path],
    frames: list[np.ndarray],
    warmup: int,
    n: int,
    threads: int | None,
    device: str = "cpu",
) -> list[dict[str, object]]:
    """``Segmenter.step`` (its labels read) of several bundles round-robin on the same frames
    (the order rotates every frame), so that machine noise and drift hit every model alike: the
    fair way to put one model's milliseconds next to another's on a shared, noisy machine."""
    segs = [Segmenter(b, threads=threads, device=device) for b in bundles]
    times: list[list[float]] = [[] for _ in segs]
    for i in range(warmup):
        for seg in segs:
            seg.step(frames[i % len(frames)])
    for i in range(n):
        for k in range(len(segs)):
            j = (i + k) % len(segs)
            t0 = time.perf_counter_ns()
            _labelled(segs[j].step(frames[i % len(frames)]))
            times[j].append((time.perf_counter_ns() - t0) / 1e6)
    return [
        {
            "model": seg.manifest.name,
            "family": seg.manifest.family,
            "key_frames": seg.manifest.has_key_frames,
            "bundle": str(b),
            "step_ms": percentiles(t),
        }
        for seg, b, t in zip(segs, bundles, times)
    ]


def bench_key_intervals(
    bundle: Path,
    frames: list[np.ndarray],
    intervals: list[int],
    warmup: int,
    n: int,
    threads: int | None,
    device: str = "cpu",
) -> list[dict[str, object]]:
    """A bundle with key frames at fixed key intervals: mean ms/frame, key and current frame
    ms, each a step with its labels read (the analogue of seed 003's Table 5.1)."""
    rows = []
    for interval in intervals:
        seg = Segmenter(
            bundle,
            threads=threads,
            device=device,
            schedule=Schedule("fixed", interval, max_interval=max(30, interval)),
        )
        for i in range(warmup):
            seg.step(frames[i % len(frames)])
        seg.reset()
        key_ms, current_ms = [], []
        for i in range(n):
            result = _labelled(seg.step(frames[i % len(frames)]))
            (key_ms if result.key_frame else current_ms).append(result.timings.total_ms)
        rows.append(
            {
                "interval": interval,
                "mean_ms": round(float(np.mean(key_ms + current_ms)), 3),
                "key_ms": percentiles(key_ms),
                "current_ms": percentiles(current_ms) if current_ms else {},
            }
        )
    return rows


def bench_torch(
    names: list[str], frames: list[np.ndarray], args: argparse.Namespace
) -> list[dict[str, object]]:
    """Registry models ``names`` in torch eager (random weights: speed only), state carried, on
    ``--torch-device`` (see ``torch_eager``); one entry per model with percentiles."""
    from vidseg.benchmarks.torch_eager import time_model

    rows = []
    for name in dict.fromkeys(names):  # each model once, in order
        logger.info("torch eager: %s on %s", name, args.torch_device)
        row = time_model(
            name,
            frames,
            args.warmup,
            args.frames,
            device=args.torch_device,
            half=args.torch_half,
            interval=args.torch_interval,
            threads=args.threads,
        )
        row["ms"] = percentiles(row["ms"])
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> dict:
    bundle = Path(args.model) if args.model else default_bundle_path()
    manifest = load_bundle(bundle).manifest
    clip = Path(args.input) if args.input else default_bundle_path().parent / "dashcam.mp4"
    size = (manifest.input.width, manifest.input.height)
    frames = [f.image for f in read_frames(clip, size=size, max_frames=min(args.frames, 100))]
    if not frames:
        raise VidsegError(f"no frames decoded from {clip}")
    report: dict = {
        "model": manifest.name,
        "bundle": str(bundle),
        "input": str(clip),
        "input_size": list(size[::-1]),
        "frames": args.frames,
        "environment": environment(args.threads),
    }
    logger.info("step latency over %d frames", args.frames)
    dev = args.device
    report["device"] = dev
    report["step"] = bench_latency(bundle, frames, args.warmup, args.frames, args.threads, dev)
    report["step_ms"] = report["step"]["step_ms"]
    report["bare_run_ms"] = report["step"].get("bare_run_ms", {})
    report["transfer_bytes_per_frame"] = report["step"]["transfer_bytes_per_frame"]
    report["first_frame"] = bench_first_frame(bundle, frames[0], args.threads, dev)
    report["first_frame_ms"] = report["first_frame"]["first_frame_ms"]
    report["first_frame_vs_p50"] = round(report["first_frame_ms"] / report["step_ms"]["p50"], 2)
    if args.batch:
        logger.info("throughput at batch %s", ", ".join(map(str, args.batch)))
        report["batch"] = bench_batch(
            bundle, frames, args.batch, args.batch_ticks, args.threads, dev
        )
    if report["bare_run_ms"]:
        report["overhead_ratio"] = round(report["step_ms"]["p50"] / report["bare_run_ms"]["p50"], 4)
    logger.info("upsampling to %s", ", ".join(f"{w}x{h}" for w, h in args.upsample_sizes))
    report["upsample"] = bench_upsample(
        bundle, frames, args.upsample_sizes, args.frames, args.threads, dev
    )
    report["comparisons"] = []
    if args.compare:
        others = [Path(b) for b in args.compare]
        side = bench_side_by_side(
            [bundle, *others], frames, args.warmup, args.frames, args.threads, dev
        )
        report["side_by_side"] = side
        for other, entry in zip(others, side[1:]):
            if entry["key_frames"] and args.intervals:
                entry["key_intervals"] = bench_key_intervals(
                    other, frames, args.intervals, args.warmup, args.frames, args.threads, dev
                )
            report["comparisons"].append(entry)
    if manifest.has_key_frames and args.intervals:
        report["key_intervals"] = bench_key_intervals(
            bundle, frames, args.intervals, args.warmup, args.frames, args.threads, dev
        )
    if args.torch or args.torch_models:
        bundles = [bundle, *map(Path, args.compare or [])] if args.torch else []
        names = [load_bundle(b).manifest.name for b in bundles] + (args.torch_models or [])
        report["torch"] = bench_torch(names, frames, args)
    if args.accuracy:
        for entry in [report, *report["comparisons"]]:
            logger.info("CamVid val accuracy of %s", entry["bundle"])
            seg = Segmenter(entry["bundle"], threads=args.threads, device=dev)
            entry["accuracy"] = accuracy_report(seg, args.accuracy)
    if not args.skip_video:
        with tempfile.TemporaryDirectory() as tmp:
            naive = bench_naive(
                bundle, clip, Path(tmp) / "n.mp4", args.video_frames, args.threads, dev
            )
            pipe = bench_pipeline(
                bundle, clip, Path(tmp) / "p.mp4", args.video_frames, args.threads, dev
            )
            stages, clip_flicker = bench_stages(
                bundle, clip, Path(tmp) / "s.mp4", args.video_frames, args.threads, dev
            )
        slowest = min(stages.values())
        report |= {
            "naive": naive,
            "pipeline": pipe,
            "naive_fps": naive["fps"],
            "pipeline_fps": pipe["fps"],
            "stage_fps": stages,
            "clip_flicker": clip_flicker,
            "pipeline_vs_naive": round(pipe["fps"] / naive["fps"], 3),
            "pipeline_vs_slowest_stage": round(pipe["fps"] / slowest, 3),
        }
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.plots:
        report["plots"] = plot(report, Path(args.plots))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="vidseg-bench", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    p.add_argument("--model", help="bundle directory (default: the bundled model)")
    p.add_argument("--input", help="clip to take frames from (default: the sample clip)")
    p.add_argument("--frames", type=int, default=200, help="timed frames per latency run")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames first (reported apart)")
    p.add_argument("--video-frames", type=int, default=100, help="frames for naive/pipeline runs")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda[:N] (needs onnxruntime-gpu): every engine part of the "
        "bench runs there, CUDA graphs where the graph allows them",
    )
    p.add_argument(
        "--batch",
        type=int,
        nargs="+",
        metavar="N",
        help="also measure throughput with N streams batched in one "
        "MultiStreamSegmenter tick (frames/s), for each N",
    )
    p.add_argument("--batch-ticks", type=int, default=50, help="timed ticks per --batch N")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="BUNDLE",
        help="also time these bundles on the same frames (e.g. the per-frame baseline)",
    )
    p.add_argument(
        "--intervals",
        type=int,
        nargs="+",
        default=[2, 5, 10, 15],
        metavar="K",
        help="key intervals swept for keyframe bundles",
    )
    p.add_argument(
        "--torch",
        action="store_true",
        help="also time the bundles' architectures in torch eager, random weights "
        "(needs the [export] extras)",
    )
    p.add_argument(
        "--torch-models",
        nargs="+",
        metavar="NAME",
        help="also time these registry models in torch eager (see vidseg-models)",
    )
    p.add_argument("--torch-device", default="cpu", help="torch device: cpu, cuda, cuda:1")
    p.add_argument(
        "--torch-half",
        action="store_true",
        help="torch under autocast (float16 on CUDA, bfloat16 on the CPU)",
    )
    p.add_argument(
        "--torch-interval",
        type=int,
        default=5,
        help="key interval of keyframe models in the torch timing",
    )
    p.add_argument(
        "--accuracy",
        metavar="CAMVID",
        help="also score the bundles on the CamVid val drive in this CamVid root "
        "through the engine (state carried, and reset every frame)",
    )
    p.add_argument(
        "--upsample-sizes",
        type=parse_size,
        nargs="+",
        metavar="WxH",
        default=[(1280, 720), (1920, 1080)],
        help="output sizes the labels are upsampled to in the upsample timing",
    )
    p.add_argument("--skip-video", action="store_true", help="latency only, no encode runs")
    p.add_argument(
        "--soak",
        type=int,
        metavar="N",
        help="instead of the rest: N frames through the threaded pipeline, RSS, "
        "threads and step p99 sampled every 500 frames, growth reported",
    )
    p.add_argument("--json", help="write the report here")
    p.add_argument("--plots", metavar="DIR", help="write latency plots (PNG) into DIR")
    p.add_argument("--debug", action="store_true")
    return p


def _soak_main(parser: argparse.ArgumentParser, args: argparse.Namespace, stdout: IO[str]) -> int:
    """``--soak N``: benchmarks/soak.py's report, printed (and written with --json)."""
    from vidseg.benchmarks.soak import soak, soak_lines

    if args.soak < 1:
        parser.error(f"--soak must be >= 1, got {args.soak}")
    clip = Path(args.input) if args.input else default_bundle_path().parent / "dashcam.mp4"

    def go() -> dict:
        segmenter = Segmenter(args.model, device=args.device, threads=args.threads)
        return soak(segmenter, clip, args.soak)

    code, report = run_for_cli("vidseg-bench", go, debug=args.debug)
    if report is None:
        return code
    print("\n".join(soak_lines(report)))
    if args.json:
        write_text(args.json, json.dumps({"soak": report}, indent=2) + "\n", stdout=stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with lines_to_stderr(args.json) as stdout:  # --json -: the report alone on stdout
        return _main(parser, args, stdout)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace, stdout: IO[str]) -> int:
    if args.frames < 1 or args.warmup < 0 or args.video_frames < 1:
        parser.error("--frames and --video-frames must be >= 1, --warmup >= 0")
    if any(n < 1 for n in args.batch or ()) or args.batch_ticks < 1:
        parser.error("--batch sizes and --batch-ticks must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    why = unwritable(args.json) if args.json else None
    if why:  # before the run, not after it (--plots DIR fails inside the run, in one line)
        parser.error(f"--json: {why}")
    if args.soak is not None:
        return _soak_main(parser, args, stdout)
    code, report = run_for_cli("vidseg-bench", lambda: run(args), debug=args.debug)
    if report is None:
        return code
    env = report["environment"]
    print(
        f"{report['model']} at {report['input_size'][0]}x{report['input_size'][1]} on "
        f"{env['cpu']} ({env['cpu_count']} cores), onnxruntime {env['onnxruntime']}, "
        f"device {report['device']}" + (f" ({env['gpu']})" if env.get("gpu") else "")
    )
    report["no_graph_step_ms"] = report["step"].get("no_graph_step_ms", {})
    for key in ("step_ms", "bare_run_ms", "no_graph_step_ms"):
        v = report[key]
        if v:
            print(
                f"  {key:12s} p50 {v['p50']:7.2f}  p90 {v['p90']:7.2f}  p99 {v['p99']:7.2f}  "
                f"max {v['max']:7.2f}"
            )
    first, moved = report["first_frame"], report["transfer_bytes_per_frame"]
    print(
        f"  first frame {first['first_frame_ms']:.2f} ms ({report['first_frame_vs_p50']:.1f}x "
        f"p50; {first['first_frame_ms_no_warmup']:.2f} ms without warm-up, which took "
        f"{first['warmup_ms']:.1f} ms at load)"
    )
    split = report["step"]["run_split_ms_per_frame"]
    print(
        f"  host<->device per frame: {moved['up']} B up, {moved['down']} B down; runs "
        f"{split['up']:.2f} ms up, {split['compute']:.2f} compute, {split['down']:.2f} down"
    )
    for row in report.get("batch", []):
        print(
            f"  batch {row['batch']:3d}: {row['frames_per_s']:9.1f} frames/s "
            f"({row['tick_ms']:.2f} ms per tick)"
        )
    if "overhead_ratio" in report:
        print(f"  engine overhead ratio (step p50 / bare p50): {report['overhead_ratio']:.3f}")
    for size, row in report["upsample"].items():
        crisp = row.get("crisp_ms")
        print(
            f"  labels to {size:9s} nearest p50 {row['nearest_ms']['p50']:6.2f} ms"
            + (
                f", crisp p50 {crisp['p50']:6.2f} ms (+{row['added_ms_p50']:.2f})"
                if crisp
                else " (no logits in the bundle: nearest only)"
            )
        )
    if report.get("side_by_side"):
        print("  side by side (round-robin on the same frames):")
    for c in report.get("side_by_side", []):
        print(
            f"  {Path(c['bundle']).name:34s} step p50 {c['step_ms']['p50']:7.2f}  p90 "
            f"{c['step_ms']['p90']:7.2f}  p99 {c['step_ms']['p99']:7.2f}"
        )
    for c in [report, *report["comparisons"]]:
        for row in c.get("key_intervals", []):
            cur = row["current_ms"].get("p50", float("nan"))
            print(
                f"  {Path(c['bundle']).name:28s} key interval {row['interval']:2d}: mean "
                f"{row['mean_ms']:7.2f} ms  key p50 {row['key_ms']['p50']:7.2f}  "
                f"current p50 {cur:7.2f}"
            )
    for row in report.get("torch", []):
        t, where = row["ms"], row.get("gpu", f"{row['torch_threads']} threads")
        mem = f"  GPU peak {row['gpu_peak_mb']} MB" if "gpu_peak_mb" in row else ""
        print(
            f"  torch eager {row['model']:32s} {row['dtype']:8s} on {where}: p50 "
            f"{t['p50']:7.2f}  p90 {t['p90']:7.2f}  p99 {t['p99']:7.2f}{mem}"
        )
    for c in [report, *report["comparisons"]]:
        if "accuracy" in c:
            a = c["accuracy"]
            print(
                f"  {Path(c['bundle']).name:28s} {a['split']}: mIoU {a['miou']:.2f} (reset "
                f"every frame {a['miou_reset_every_frame']:.2f}), pixel acc "
                f"{a['pixel_acc']:.2f}, flicker {a['flicker']:.2f}% (excess "
                f"{a['excess_flicker']:.2f}, truth {a['truth_flicker']:.2f}, reset every "
                f"frame {a['flicker_reset_every_frame']:.2f})"
            )
    if "pipeline_fps" in report:
        print(
            f"  naive loop {report['naive_fps']:.1f} fps, pipeline {report['pipeline_fps']:.1f}"
            f" fps ({report['pipeline_vs_naive']:.2f}x)"
        )
        stages = report["stage_fps"]
        print(
            "  stages alone: "
            + ", ".join(f"{k} {v:.1f} fps" for k, v in stages.items())
            + f"; pipeline / slowest stage {report['pipeline_vs_slowest_stage']:.2f}"
        )
        if report["pipeline"]["cpu"]:
            print(f"  pipeline {cpu_line(report['pipeline']['cpu'])}")
        print(
            f"  flicker on the clip: {report['clip_flicker']:.2f}% of pixels change label "
            "between consecutive frames"
        )
    print(f"  peak RSS {report['peak_rss_mb']} MB")
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n", stdout=stdout)
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
