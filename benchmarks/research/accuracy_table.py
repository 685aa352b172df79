"""``python benchmarks/research/accuracy_table.py``: train, export and score a set of models with
one budget, and write the table of ``benchmarks/research/NOTES.md``.

Each row is a ``vidseg-train`` run (the same ``--steps`` and training flags for all), exported
the way the default ships (labels at stride 4 with logits, split where the family allows), then
scored through the engine on the CamVid val drive (``evaluate_bundle``, state carried and reset
every frame) and timed (``Segmenter.step`` p50 on the CPU). Every stage is resumable: a run
whose checkpoint reached ``--steps`` is not trained again, a bundle newer than its checkpoint is
not exported again, so an interrupted table continues where it stopped (and a 2-core machine can
build it in chunks). The rows are written to ``RUNS/table.json`` and, with ``--write``, into the
markdown file between ``<!-- accuracy-table:start -->`` and ``<!-- accuracy-table:end -->``.

Example (the GPU run; on 2 CPU cores drop the last three flags and lower ``--steps``)::

    python benchmarks/research/accuracy_table.py --data CAMVID --runs runs/table \\
        --steps 4000 --write benchmarks/research/NOTES.md -- --input-size 256 352 --batch 4 \\
        --seq-len 8 --device cuda --amp --workers 7
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidseg.benchmarks.accuracy import evaluate_bundle
from vidseg.engine.bundle import default_bundle_path
from vidseg.engine.errors import VidsegError, run_for_cli
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.video import read_frames
from vidseg.models.data import load_split

logger = logging.getLogger(__name__)
START, END = "<!-- accuracy-table:start -->", "<!-- accuracy-table:end -->"
TIMED_FRAMES = 40  # Segmenter.step calls timed per bundle (after 5 untimed)


@dataclass(frozen=True)
class Row:
    """One table row: a registry model trained with extra ``vidseg-train`` flags."""

    key: str  # run directory name
    model: str  # registry name
    flags: tuple[str, ...] = ()
    note: str = ""  # what the row measures
    # not trained: another row's checkpoint (its key), exported with ``export_flags``
    weights_of: str = ""
    export_flags: tuple[str, ...] = ()


ROWS: tuple[Row, ...] = (
    Row("recurrent", "recurrent-lite0-gru", note="the ConvGRU family (the previous default)"),
    Row("perframe", "perframe-lite0", note="its per-frame twin"),
    Row(
        "recurrent-relax",
        "recurrent-lite0-gru",
        ("--label-relaxation",),
        "seed 002: boundary label relaxation on",
    ),
    Row(
        "recurrent-noprop",
        "recurrent-lite0-gru",
        ("--propagation-length", "0"),
        "seed 002: label propagation off (labelled frame only)",
    ),
    Row(
        "perframe-relax",
        "perframe-lite0",
        ("--label-relaxation",),
        "twin with boundary label relaxation",
    ),
    Row("keyframe", "keyframe-lite0-c2", note="seed 003, key interval from the manifest"),
    Row("netwarp", "netwarp-lite0", note="seed 004 (trains on the CPU: DIS flow)"),
    Row(
        "tiles",
        "perframe-lite0",
        note="the per-frame row's weights in a tile memory",
        weights_of="perframe",
        export_flags=("--tiles", "2x2"),
    ),
    Row("unet001", "recurrent-unet-resnet-shallow-cgru", ("--scratch",), "seed 001"),
    Row("unet001-twin", "perframe-unet-resnet-shallow", ("--scratch",), "its per-frame twin"),
)

ROWS_BY_KEY = {r.key: r for r in ROWS}


def _checkpoint_steps(run: Path) -> int:
    """Steps the run's ``metrics.json`` reports (0 when the run has not finished)."""
    metrics = run / "metrics.json"
    return int(json.loads(metrics.read_text()).get("steps", 0)) if metrics.is_file() else 0


def train_row(row: Row, data: str, run: Path, steps: int, train_flags: list[str]) -> None:
    from vidseg.models.train import main as train_main

    if _checkpoint_steps(run) >= steps:
        logger.info("%s: trained (%d steps)", row.key, steps)
        return
    args = [
        "--model",
        row.model,
        "--data",
        data,
        "--out",
        str(run),
        "--max-steps",
        str(steps),
        "--eval-every",
        str(steps),
        *row.flags,
        *train_flags,
    ]
    if (run / "last.pt").is_file():
        args.append("--resume")
    if train_main(args) != 0:
        raise VidsegError(f"{row.key}: vidseg-train failed (see above); rerun to resume")


def export_row(row: Row, run: Path, ckpt: Path) -> Path:
    """``ckpt`` exported into ``run/bundle.vidseg`` (kept when newer than ``ckpt``)."""
    from vidseg.export.cli import main as export_main
    from vidseg.models.registry import create_model

    bundle = run / "bundle.vidseg"
    if bundle.is_dir() and bundle.stat().st_mtime >= ckpt.stat().st_mtime:
        return bundle
    run.mkdir(parents=True, exist_ok=True)
    splittable = create_model(row.model, pretrained=False).split() is not None
    split = splittable and not row.export_flags
    args = [
        str(ckpt),
        "--out",
        str(bundle),
        "--label-stride",
        "4",
        "--scores",
        "--logits",
        *row.export_flags,
    ]
    if export_main(args + ["--split"] * split) != 0:
        raise VidsegError(f"{row.key}: vidseg-export failed (see above)")
    return bundle


def score_row(row: Row, bundle: Path, data: str, threads: int | None) -> dict[str, object]:
    """Val metrics (carried and reset) and CPU ms per frame of ``bundle``."""
    val = load_split(data, "val")
    seg = Segmenter(bundle, threads=threads)
    carried = evaluate_bundle(seg, val, carry_state=True)
    reset = evaluate_bundle(seg, val, carry_state=False)
    size = (seg.manifest.input.width, seg.manifest.input.height)
    clip = default_bundle_path().parent / "dashcam.mp4"
    frames = [f.image for f in read_frames(clip, size=size, max_frames=TIMED_FRAMES)]
    seg.reset()
    times = []
    for i in range(5 + TIMED_FRAMES):
        t0 = time.perf_counter_ns()
        seg.step(frames[i % len(frames)])
        if i >= 5:
            times.append((time.perf_counter_ns() - t0) / 1e6)
    return {
        "row": row.key,
        "model": row.model,
        "flags": " ".join(row.flags + (("export",) + row.export_flags if row.export_flags else ())),
        "note": row.note,
        "miou": round(carried.metrics.miou, 2),
        "miou_reset": round(reset.metrics.miou, 2),
        "trimap_iou": round(carried.trimap.miou, 2),
        "flicker": round(carried.flicker.pred, 2),
        "excess_flicker": round(carried.flicker.excess, 2),
        "cpu_ms_p50": round(float(np.median(times)), 2),
        "input_size": [seg.manifest.input.height, seg.manifest.input.width],
    }


def _params(run: Path) -> float:
    import torch

    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]
    return round(
        sum(v.numel() for k, v in state.items() if "running_" not in k and "num_batches" not in k)
        / 1e6,
        2,
    )


def markdown(rows: list[dict[str, object]], steps: int, train_flags: list[str]) -> str:
    head = (
        "| row | model | flags | val mIoU carried | reset | trimap IoU | flicker | "
        "excess flicker | params (M) | CPU ms/frame |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['row']} | {r['model']} | {r['flags'] or '-'} | {r['miou']:.2f} | "
        f"{r['miou_reset']:.2f} | {r['trimap_iou']:.2f} | {r['flicker']:.2f} | "
        f"{r['excess_flicker']:.2f} | {r['params_m']} | {r['cpu_ms_p50']:.1f} |"
        for r in rows
    ]
    flags = " ".join(train_flags) or "(defaults)"
    return (
        f"Every row: {steps} steps of `vidseg-train {flags}`, exported with "
        "`--label-stride 4 --scores --logits` (`--split` for the Lite0 recurrent/per-frame "
        "models), scored through the engine on the CamVid val drive; CPU ms: "
        f"`Segmenter.step` p50 over {TIMED_FRAMES} frames of the sample clip.\n\n"
        + head
        + "\n"
        + "\n".join(lines)
        + "\n"
    )


def write_table(path: Path, text: str) -> None:
    """Replace the text between the markers in ``path`` (appended with the markers if absent)."""
    doc = path.read_text() if path.is_file() else ""
    block = f"{START}\n{text}{END}"
    if START in doc and END in doc:
        doc = doc[: doc.index(START)] + block + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    rows = [r for r in ROWS if not args.only or r.key in args.only]
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    table_path = runs / "table.json"
    done = json.loads(table_path.read_text()) if table_path.is_file() else {}
    for row in rows:
        run_dir = runs / row.key
        source = ROWS_BY_KEY[row.weights_of] if row.weights_of else row  # the run it exports
        trained = runs / source.key
        train_row(source, args.data, trained, args.steps, args.train_flags)  # once: resumable
        bundle = export_row(row, run_dir, trained / "last.pt")
        result = score_row(row, bundle, args.data, args.threads)
        result["params_m"] = _params(trained)
        result["steps"] = args.steps
        done[row.key] = result
        table_path.write_text(json.dumps(done, indent=2) + "\n")
        logger.info("%s: val mIoU %.2f (reset %.2f)", row.key, result["miou"], result["miou_reset"])
    ordered = [done[r.key] for r in ROWS if r.key in done and done[r.key]["steps"] == args.steps]
    if args.write:
        write_table(Path(args.write), markdown(ordered, args.steps, args.train_flags))
    return ordered


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(
        prog="python benchmarks/research/accuracy_table.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--data", required=True, help="CamVid root (train/, val/, ...)")
    p.add_argument("--runs", required=True, help="directory of the runs (resumable)")
    p.add_argument("--steps", type=int, required=True, help="vidseg-train --max-steps per row")
    p.add_argument("--only", nargs="+", choices=[r.key for r in ROWS], help="rows to run")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads for scoring and timing")
    p.add_argument("--write", help="markdown file to write the table into")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    args.train_flags = train_flags
    if args.steps < 1:
        p.error("--steps must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    code, rows = run_for_cli(p.prog, lambda: run(args), debug=args.debug)
    if rows is None:
        return code
    for r in rows:
        print(
            f"{r['row']:18s} mIoU {r['miou']:6.2f} reset {r['miou_reset']:6.2f} "
            f"excess flicker {r['excess_flicker']:5.2f} {r['cpu_ms_p50']:6.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
