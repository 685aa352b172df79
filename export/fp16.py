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
agreement is written into the manifest's ``train.fp16`` (``export.convert``, as for int8
bundles). Meant for GPUs (tensor cores); on the
CPU the float16 kernels are few and slow, which is how the tests check it.

Needs ``onnx`` (``pip install 'vidseg[export]'``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from vidseg.engine.bundle import Bundle
from vidseg.engine.errors import BundleError
from vidseg.export.convert import convert_bundle

CONVERTER = "onnxruntime.transformers.float16, keep_io_types"


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


def _convert_graphs(bundle: Bundle, work: Path) -> dict[str, str]:
    for name in bundle.manifest.graphs.values():
        convert_graph(bundle.root / name, work / name)
    return {"converter": CONVERTER}


def fp16_bundle(src: Path, out: Path, clip: Path, frames: int = 24) -> str:
    """Write ``out``: ``src`` with every graph in float16 (I/O types kept) and the label
    agreement with ``src`` over ``frames`` frames of ``clip`` recorded in ``train.fp16``
    (``export.convert``).

    Raises:
        BundleError: ``src`` is not a bundle, ``out`` exists, or the conversion failed.
    """
    agreement = convert_bundle(src, out, "fp16", _convert_graphs, clip, frames)
    return f"wrote {out}: float16 inside, {agreement}"
