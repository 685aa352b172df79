#!/bin/bash
# Usage, on a lent GPU machine, in the project's root, in ONE call after the transfers of
# ../shared/tools/gpu-wheels (its chunks copied to /tmp/w, joined and installed into /tmp/site):
#
#   bash benchmarks/gpu_check.sh            # writes JSON and logs under $OUT (or ./gpu-out)
#
# Measures issue 21's closing table with this checkout's code, in under 10 minutes:
# The default bundle is the tile memory (samples/tiles-lite0-camvid.vidseg: a 320x448 network
# in a 2x2 tile memory of the frame at 448x640, one step graph fed the engine's DIS flow, tile
# one-hot and view cut, all three computed on the CPU even with --device cuda).
#   parity.json      CUDA-graph step vs the plain CUDA path vs the CPU over 24 frames with a
#                    reset (default bundle), which paths were captured
#   bench_cuda.json  vidseg-bench --device cuda: step p50/p99 (CUDA graphs) and without them,
#                    first frame vs p50, host<->device bytes per frame, batch 1/8/32 frames/s,
#                    stages alone and the pipeline at 720p
#   bench_cpu.json   the same machine's CPU, latency only, side by side
#   run_*.json       vidseg-run --device cuda on a 400-frame 720p clip: overlay and --mask FPS
#   cpu_work.json    the default with --device cuda on the 720p clip: pre_ms (the resize, the
#                    DIS flow, the view cut, the refresh check: CPU work per frame and stream),
#                    infer_ms, post_ms p50, beside the same on the CPU, and each aux input's
#                    provider alone (dis_flow, tile_cycle, tile_view) p50
#   fp16.json        a float16 copy of the default bundle: label agreement, step p50 on CUDA
#   pytest.log       the CUDA tests (tests/engine/test_backends.py -k cuda), when pytest, torch
#                    and onnx are there to build their tiny bundles
#   eval_*.json      with CAMVID=DIR (val/ and valannot/ inside) set: vidseg-eval --device cuda
#                    of the default (or of CANDIDATE=BUNDLE), state carried and reset every
#                    frame, and of TWIN=BUNDLE (its per-frame twin) and OLD=BUNDLE (the previous
#                    ConvGRU default) when set, beside the same on the CPU;
#                    bench_candidate.json: vidseg-bench --device cuda --compare of the default
#                    with the candidate, the twin and the old default, when any is set
#                    (carry them, e.g. as gpu-in/: CamVid val is 29 MB, a 320x448 bundle 12 MB)
#   summary.json     the numbers above in one place, with the GPU and the date
# NVDEC decode is not implemented in vidseg-run yet: no "with NVDEC" row.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
out=${OUT:-$root/gpu-out}; mkdir -p "$out"
# vidseg without installing it: vidseg is a namespace package, the package-dir mapping as links
site=/tmp/vsroot; rm -rf "$site"; mkdir -p "$site/vidseg"
for d in engine export models samples benchmarks; do ln -s "$root/$d" "$site/vidseg/$d"; done
# onnxruntime-gpu 1.31 finds the image's CUDA 13 / cuDNN 9 through preload_dlls(), in every
# process: sitecustomize runs at interpreter start
cat > "$site/sitecustomize.py" <<'PY'
try:
    import onnxruntime
    onnxruntime.preload_dlls()
except Exception as exc:  # reported by the checks below
    print("preload_dlls:", exc)
PY
export PYTHONPATH=$site:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
py=python3
t0=$SECONDS
step() { echo "== $1 ($((SECONDS - t0)) s)"; }

step providers
$py -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())" | tee "$out/providers.txt"

step parity
timeout 120 $py - "$out/parity.json" <<'PY' 2>&1 | tail -5
import json, sys
import numpy as np
from vidseg.engine import Segmenter, default_bundle_path
from vidseg.engine.video import read_frames
clip = default_bundle_path().parent / "dashcam.mp4"
frames = [f.image for f in read_frames(clip, max_frames=24)]
graph = Segmenter(device="cuda")
plain = Segmenter(device="cuda", cuda_graph=False)
cpu = Segmenter()
rows = []
for i, frame in enumerate(frames):
    if i == 12:
        for s in (graph, plain, cpu):
            s.reset()
    g, p, c = (s.step(frame).labels for s in (graph, plain, cpu))
    rows.append({"frame": i, "graph_vs_plain": float((g == p).mean()),
                 "graph_vs_cpu": float((g == c).mean())})
report = {"captured": {r: b.capture for r, b in graph.model.backends.items()},
          "min_graph_vs_plain": min(r["graph_vs_plain"] for r in rows),
          "min_graph_vs_cpu": min(r["graph_vs_cpu"] for r in rows), "frames": rows}
json.dump(report, open(sys.argv[1], "w"), indent=2)
print({k: v for k, v in report.items() if k != "frames"})
PY

if [ -n "${CAMVID:-}" ]; then
  for name in candidate twin old; do
    case $name in
      candidate) bundle=${CANDIDATE:-} ;;  # empty: the shipped default
      twin) bundle=${TWIN:-} ;;
      old) bundle=${OLD:-} ;;
    esac
    [ "$name" = candidate ] || [ -n "$bundle" ] || continue
    model=(); [ -n "$bundle" ] && model=(--model "$bundle")
    for dev in cuda cpu; do
      for mode in carried reset; do
        step "vidseg-eval $name $dev $mode"
        extra=(); [ "$mode" = reset ] && extra=(--reset-every-frame)
        timeout 120 $py -m vidseg.benchmarks.evaluate "${model[@]}" --device "$dev" -q \
          --frames "$CAMVID/val" --labels "$CAMVID/valannot" "${extra[@]}" \
          --json "$out/eval_${name}_${dev}_$mode.json" 2>&1 | tail -2; echo "exit $?"
      done
    done
  done
fi
others=(${CANDIDATE:+"$CANDIDATE"} ${TWIN:+"$TWIN"} ${OLD:+"$OLD"})
if [ ${#others[@]} -gt 0 ]; then
  step "vidseg-bench --device cuda --compare"
  timeout 120 $py -m vidseg.benchmarks.bench --device cuda --frames 200 --warmup 20 --skip-video \
    --compare "${others[@]}" --json "$out/bench_candidate.json" \
    > "$out/bench_candidate.txt" 2>&1; echo "exit $?"; tail -6 "$out/bench_candidate.txt"
fi

step "720p clip"
clip720=/tmp/clip720.mp4
timeout 120 $py - "$clip720" <<'PY' 2>&1 | tail -2
import sys
from fractions import Fraction
import cv2
from vidseg.engine import default_bundle_path
from vidseg.engine.video import VideoWriter, read_frames
frames = [f.image for f in read_frames(default_bundle_path().parent / "dashcam.mp4")]
with VideoWriter(sys.argv[1], width=1280, height=720, fps=Fraction(25), overwrite=True) as w:
    for i in range(400):
        w.write(cv2.resize(frames[i % len(frames)], (1280, 720)), i)
print("wrote", sys.argv[1])
PY

step "cpu work per frame with --device cuda (tile memory)"
timeout 150 $py - "$out/cpu_work.json" "$clip720" <<'PY' 2>&1 | tail -3
import json, sys, time
import numpy as np
from vidseg.engine import Segmenter
from vidseg.engine.video import read_frames
frames = [f.image for f in read_frames(sys.argv[2], max_frames=150)]
report = {"frames": len(frames), "frame_size": list(frames[0].shape[:2])}
p50 = lambda v: float(np.percentile(v[20:], 50))  # noqa: E731
for dev in ("cuda", "cpu"):
    try:
        seg = Segmenter(device=dev)
        t = [seg.step(f).timings for f in frames]
        report[dev] = {"pre_ms_p50": p50([x.pre_ms for x in t]),
                       "infer_ms_p50": p50([x.infer_ms for x in t]),
                       "post_ms_p50": p50([x.post_ms for x in t])}
    except Exception as exc:  # reported, the other device still measured
        report[dev] = {"error": f"{type(exc).__name__}: {exc}"}
seg = Segmenter(warmup=False)  # the providers alone, on the frames at the model's input
report["input_size"] = [seg.manifest.input.height, seg.manifest.input.width]
xs = [seg.prepare(f).image for f in frames]
report["aux_ms_p50"] = {}
for name, provider in seg.model.new_aux():
    ms = []
    for x in xs:
        t0 = time.perf_counter_ns(); provider(x); ms.append((time.perf_counter_ns() - t0) / 1e6)
    report["aux_ms_p50"][f"{name} ({type(provider).__name__})"] = p50(ms)
json.dump(report, open(sys.argv[1], "w"), indent=2)
print(report)
PY

step "vidseg-bench --device cuda"
timeout 240 $py -m vidseg.benchmarks.bench --device cuda --frames 300 --warmup 20 \
  --batch 1 8 32 --batch-ticks 100 --input "$clip720" --video-frames 400 \
  --json "$out/bench_cuda.json" > "$out/bench_cuda.txt" 2>&1; echo "exit $?"; tail -20 "$out/bench_cuda.txt"

step "vidseg-bench cpu (latency)"
timeout 90 $py -m vidseg.benchmarks.bench --frames 100 --skip-video --upsample-sizes 1280x720 \
  --json "$out/bench_cpu.json" > "$out/bench_cpu.txt" 2>&1; echo "exit $?"; tail -8 "$out/bench_cpu.txt"

for mode in overlay mask; do
  step "vidseg-run --device cuda ($mode)"
  extra=(); dst=$out/run_$mode.mp4
  [ "$mode" = mask ] && { extra=(--mask); dst=$out/run_mask.mkv; }
  timeout 60 $py -m vidseg.engine.cli "$clip720" --out "$dst" --device cuda -q --overwrite \
    "${extra[@]}" --json "$out/run_$mode.json" > "$out/run_$mode.txt" 2>&1; echo "exit $?"
  rm -f "$dst"
done

step fp16
timeout 120 $py - "$out/fp16.json" <<'PY' 2>&1 | tail -3
import json, sys, tempfile, time
from pathlib import Path
import numpy as np
report = {}
try:
    from vidseg.engine import Segmenter, default_bundle_path, load_bundle
    from vidseg.engine.video import read_frames
    from vidseg.export.fp16 import convert_bundle
    src = default_bundle_path()
    with tempfile.TemporaryDirectory() as tmp:
        half = Path(tmp) / "half.vidseg"
        report["summary"] = convert_bundle(src, half, src.parent / "dashcam.mp4", 24)
        report["manifest_fp16"] = json.loads((half / "manifest.json").read_text())["train"]["fp16"]
        inp = load_bundle(src).manifest.input
        size = (inp.width, inp.height)  # frames at the model's input, (width, height)
        frames = [f.image for f in read_frames(src.parent / "dashcam.mp4", size=size, max_frames=100)]
        for name, bundle in (("fp32", src), ("fp16", half)):
            seg = Segmenter(bundle, device="cuda")
            ms = []
            for f in frames * 2:
                t = time.perf_counter_ns(); seg.step(f); ms.append((time.perf_counter_ns() - t) / 1e6)
            report[f"{name}_step_ms_p50"] = float(np.percentile(ms[20:], 50))
        a, b = Segmenter(src, device="cuda"), Segmenter(half, device="cuda")
        report["cuda_label_agreement"] = float(np.mean([(a.step(f).labels == b.step(f).labels).mean() for f in frames]))
except Exception as exc:  # onnx missing on the machine, or the conversion failed
    report["error"] = f"{type(exc).__name__}: {exc}"
json.dump(report, open(sys.argv[1], "w"), indent=2)
print(report)
PY

step "CUDA tests"
if $py -c "import pytest, torch, onnx" 2>/dev/null; then
  timeout 150 $py -m pytest -q -p no:cacheprovider tests/engine/test_backends.py -k cuda \
    > "$out/pytest.log" 2>&1; echo "exit $?"; tail -3 "$out/pytest.log"
else
  echo "pytest, torch or onnx missing: CUDA tests not run" | tee "$out/pytest.log"
fi

step summary
$py - "$out" <<'PY'
import json, sys, time
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
b, r1, r2, p, f, c = (load(n) for n in ("bench_cuda.json", "run_overlay.json", "run_mask.json",
                                         "parity.json", "fp16.json", "cpu_work.json"))
step = b.get("step", {})
summary = {
    "date": time.strftime("%Y-%m-%d"), "gpu": b.get("environment", {}).get("gpu"),
    "step_ms_cuda_graph": b.get("step_ms"), "step_ms_no_graph": step.get("no_graph_step_ms"),
    "cuda_graph_captured": p.get("captured"), "first_frame": b.get("first_frame"),
    "first_frame_vs_p50": b.get("first_frame_vs_p50"),
    "transfer_bytes_per_frame": b.get("transfer_bytes_per_frame"),
    "batch_frames_per_s": {r["batch"]: r["frames_per_s"] for r in b.get("batch", [])},
    "stage_fps_720p": b.get("stage_fps"), "pipeline_fps_720p": b.get("pipeline_fps"),
    "vidseg_run_720p": r1, "vidseg_run_720p_mask": r2, "nvdec": "not implemented",
    "parity_min_graph_vs_plain": p.get("min_graph_vs_plain"),
    "parity_min_graph_vs_cpu": p.get("min_graph_vs_cpu"),
    "fp16": {k: v for k, v in f.items() if k != "summary"},
    "cpu_work_per_frame_cuda": c,
    "candidate_eval": {p.stem.removeprefix("eval_"): {k: load(p.name).get(k) for k in (
        "miou", "trimap_iou", "excess_flicker", "fps")} for p in sorted(out.glob("eval_*.json"))},
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2)[:3000])
PY
echo "done in $((SECONDS - t0)) s; results in $out"
