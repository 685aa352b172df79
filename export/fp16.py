"""fp16 bundles: a bundle's graphs converted to float16 inside, its I/O types kept.

``vidseg-export BUNDLE.vidseg --fp16 --out BUNDLE-fp16.vidseg`` (or ``vidseg-export CHECKPOINT
--fp16 --out B``: exported, then converted) converts every graph
with ``convert_float_to_float16(keep_io_types=True)`` from ``onnxruntime.transformers.float16``
(onnxconverter-common's converter as ONNX Runtime ships it; onnxconverter-common 1.16's own copy
writes Casts that contradict the graph's type annotations on these graphs): weights and
activations become float16, while the uint8 frame in, the uint8 labels and scores out, and the
float32 state, features and logits at the graph boundary stay as the manifest declares them
(Casts at the edges), so the engine runs the new bundle unchanged. The new bundle's labels are
compared with the source's through the engine (state carried over frames of a clip) and the
agreement is written into the manifest's ``train.fp16``. Meant for GPUs (tensor cores); on the
CPU the float16 kernels are few and slow, which is how the tests check it.

Needs ``onnx`` (``pip install 'vidseg[export]'``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from vidseg.engine.bundle import MANIFEST, load_bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.video import read_frames

logger = logging.getLogger(__name__)


def convert_graph(src: Path, dst: Path) -> None:
    """``src`` ONNX graph -> ``dst`` with float16 inside and the I/O types of ``src``.

    Raises:
        BundleError: onnx is missing or the conversion failed.
    """
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise BundleError(f"fp16 conversion needs onnx ({exc})") from exc
    model = onnx.load(str(src))
    # the exporter's intermediate type annotations would contradict the converted Casts
    del model.graph.value_info[:]
    try:
        with warnings.catch_warnings():  # one line per weight clipped to the float16 range
            warnings.simplefilter("ignore", UserWarning)
            converted = convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # the converter raises untyped errors
        raise BundleError(f"{src}: float16 conversion failed: {exc}") from exc
    onnx.save(converted, str(dst))


def label_agreement(fp32: Path, fp16: Path, frames: list[np.ndarray]) -> float:
    """Share of pixels (0..1) where the two bundles' labels agree over ``frames`` in order,
    each with its state carried, on the ONNX Runtime CPU."""
    a, b = Segmenter(fp32, warmup=False), Segmenter(fp16, warmup=False)
    same = [float((a.step(f).labels == b.step(f).labels).mean()) for f in frames]
    return float(np.mean(same))


def convert_bundle(src: Path, out: Path, clip: Path, frames: int = 24) -> str:
    """Write ``out``: ``src`` with every graph in float16 (I/O types kept) and the label
    agreement with ``src`` over ``frames`` frames of ``clip`` recorded in ``train.fp16``.

    Raises:
        BundleError: ``src`` is not a bundle, ``out`` exists, or the conversion failed.
    """
    bundle = load_bundle(src)
    if out.exists():
        raise BundleError(f"{out} exists; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        work = Path(tmp) / out.name
        shutil.copytree(src, work)
        for name in bundle.manifest.graphs.values():
            convert_graph(src / name, work / name)
        size = (bundle.manifest.input.width, bundle.manifest.input.height)
        images = [f.image for f in read_frames(clip, size=size, max_frames=frames)]
        agreement = label_agreement(src, work, images)
        train = {
            **bundle.manifest.train,
            "fp16": {
                "from": str(src.name),
                "converter": "onnxruntime.transformers.float16, keep_io_types",
                "label_agreement": round(agreement, 5),
                "frames": len(images),
            },
        }
        manifest = dataclasses.replace(bundle.manifest, train=train)
        (work / MANIFEST).write_text(manifest.to_json())
        load_bundle(work)  # still a valid bundle
        work.rename(out)
    return f"wrote {out}: float16 inside, labels agree with {src.name} on {100 * agreement:.2f} %"
