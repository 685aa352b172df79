"""What a benchmark report carries besides its timings: the environment it ran in (CPU, library
versions, threads, GPU) and its figures (latency histogram and timeline, the key-interval
sweep). ``vidseg-bench`` and the other benchmarks record the same environment."""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

logger = logging.getLogger(__name__)


def environment(threads: int | None) -> dict[str, object]:
    import av

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "av": av.__version__,
        "opencv": cv2.__version__,
        "ort_threads": threads or "default",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **_gpu(),
    }


def _gpu() -> dict[str, str]:
    """The first GPU's name and driver by nvidia-smi, when there is one."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        line = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return {}
    name, _, driver = line.partition(",")
    return {"gpu": name.strip(), "gpu_driver": driver.strip()}


def plot(report: dict, out_dir: Path) -> list[str]:
    """Latency histogram and timeline PNGs, and the key-interval sweep when there is one (needs
    matplotlib: pip install 'vidseg[bench]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed: no plots (pip install 'vidseg[bench]')")
        return []
    series = report["step"]["step_series_ms"]
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.hist(series, bins=40)
    a.set(xlabel="Segmenter.step [ms]", ylabel="frames", title="latency histogram")
    b.plot(series, lw=0.8)
    b.set(xlabel="frame", ylabel="ms", title="latency timeline")
    fig.suptitle(f"{report['model']} ({report['environment']['cpu']})", fontsize=9)
    fig.tight_layout()
    path = out_dir / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths = [str(path)]
    sweeps = [
        (Path(c["bundle"]).name, c["key_intervals"])
        for c in [report, *report["comparisons"]]
        if c.get("key_intervals")
    ]
    if sweeps:  # seed 003 Table 5.1 as a plot: mean ms per frame against the key interval
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, rows in sweeps:
            ax.plot([r["interval"] for r in rows], [r["mean_ms"] for r in rows], "o-", label=name)
        for c in report.get("side_by_side", []):
            if not c["key_frames"]:  # per-frame baselines: one run every frame
                ax.axhline(
                    c["step_ms"]["p50"], ls="--", lw=0.8, label=f"{Path(c['bundle']).name} (p50)"
                )
        ax.set(
            xlabel="key interval [frames]",
            ylabel="mean ms / frame",
            title="key-frame interval sweep",
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "key_intervals.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths
