"""Torch eager timing of a registry model (random weights: speed only), on the CPU or a GPU.

This is the "ORT vs torch eager" baseline of ``vidseg-bench --torch``, and the only GPU number
the project can take where neither onnxruntime-gpu nor TensorRT is installed. Each frame goes
the engine's way: the uint8 frame is copied to the device, the model's ``stream_logits`` runs
(normalisation included) and then the exported graphs' labels head (upsampling, ArgMax), and
the labels come back to the host, which on CUDA also synchronises. Recurrent state and
key-frame caches stay on the device between frames. For NetWarp the DIS flow the engine would feed
is computed before the timed loop (it is CPU work: ``Segmenter.step``'s pre stage) and only its
copy to the device is timed.

Needs the ``[export]`` extras (torch). ``half`` runs under ``torch.autocast`` (float16 on CUDA,
bfloat16 on the CPU).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from vidseg.engine.errors import VidsegError


def _stepper(
    model: Any, frames: list[np.ndarray], device: Any, interval: int
) -> Callable[[int, Any], Any]:
    """``one(i, x) -> labels``: the model's ``stream_logits`` (state or key-frame cache carried
    on ``device``, a key frame every ``interval`` frames) and the graphs' labels head."""
    import torch

    from vidseg.export.onnx import to_labels
    from vidseg.export.parity import stream_aux

    specs = [a for graph in model.export_graphs().values() for a in graph.aux]
    aux = stream_aux(specs, frames) if specs else []  # engine-computed, outside the timed loop
    memory = None

    def one(i: int, x: Any) -> Any:
        nonlocal memory
        extra = None
        if aux:
            extra = {
                name: torch.from_numpy(a).to(device, non_blocking=True)
                for name, a in aux[i % len(aux)].items()
            }
        logits, memory = model.stream_logits(x, memory, aux=extra, key_interval=interval)
        return to_labels(logits, model.cfg)[0]

    return one


def time_model(
    name: str,
    frames: list[np.ndarray],
    warmup: int,
    n: int,
    device: str = "cpu",
    half: bool = False,
    interval: int = 5,
    threads: int | None = None,
) -> dict[str, Any]:
    """Milliseconds per frame of model ``name`` over ``n`` frames after ``warmup``.

    ``frames`` are (H, W, 3) uint8 at the model's input size; ``interval`` is the key interval
    of a keyframe model. Returns ``{"model", "family", "device", "dtype", "ms": [...],
    "gpu_peak_mb"}`` (``gpu_peak_mb`` only on CUDA: the allocator's peak during the timed loop).

    Raises:
        VidsegError: torch is missing, or ``device`` is not available.
    """
    try:
        import torch

        from vidseg.models.registry import create_model
    except ImportError as exc:
        raise VidsegError(
            "torch timing needs the [export] extras: pip install 'vidseg[export]'"
        ) from exc
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VidsegError(f"--torch-device {device}: this torch ({torch.__version__}) sees no GPU")
    if threads:
        torch.set_num_threads(threads)
    size = frames[0].shape[:2]
    model = create_model(name, pretrained=False, input_size=size).eval().to(dev)
    hosts = [torch.from_numpy(np.ascontiguousarray(f[None])) for f in frames]
    if dev.type == "cuda":
        hosts = [h.pin_memory() for h in hosts]
    dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=half):
        one = _stepper(model, frames, dev, interval)
        for i in range(warmup):
            one(i, hosts[i % len(hosts)].to(dev, non_blocking=True)).cpu()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            one(i, hosts[i % len(hosts)].to(dev, non_blocking=True)).cpu()
            times.append((time.perf_counter_ns() - t0) / 1e6)
    out: dict[str, Any] = {
        "model": name,
        "family": model.cfg.family,
        "device": str(dev),
        "dtype": str(dtype).removeprefix("torch.") if half else "float32",
        "ms": times,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if model.schedule() is not None:  # a model with key frames
        out["key_interval"] = interval
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return out
