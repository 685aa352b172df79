"""A bundle's graphs converted into a new bundle (``vidseg-export BUNDLE --fp16`` or ``--int8``).

What the conversions share: the source bundle copied beside ``--out``, its graphs rewritten in
the copy by the conversion, the copy's labels compared with the source's through the engine
(``Segmenter``, state carried over consecutive frames of a clip), that agreement and the
conversion's own record written into the manifest's ``train.<kind>``, and the copy renamed to
``--out`` only once it loads as a bundle. A conversion keeps every graph's I/O names, dtypes and
shapes, so the engine runs the new bundle as it runs the source.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vidseg.engine.bundle import MANIFEST, Bundle, load_bundle
from vidseg.engine.errors import BundleError
from vidseg.engine.segmenter import Segmenter
from vidseg.engine.video import read_frames

# (the source bundle, the copy's directory) -> the conversion's record for train.<kind>; it
# rewrites every graph of the copy in place
Convert = Callable[[Bundle, Path], dict[str, Any]]


def label_agreement(reference: Path, candidate: Path, frames: list[np.ndarray]) -> float:
    """Share of pixels (0..1) where the two bundles' labels agree over ``frames`` in order,
    each with its state carried, on the ONNX Runtime CPU."""
    a, b = Segmenter(reference, warmup=False), Segmenter(candidate, warmup=False)
    same = [float((a.step(f).labels == b.step(f).labels).mean()) for f in frames]
    return float(np.mean(same))


def convert_bundle(
    src: Path, out: Path, kind: str, convert: Convert, clip: Path, frames: int
) -> str:
    """Write ``out``: a copy of the bundle ``src`` whose graphs ``convert`` rewrote, with its
    record and the label agreement with ``src`` over the first ``frames`` frames of ``clip``
    (at the model's input size) in ``train.<kind>``.

    Returns:
        How far the labels agree, in a few words for the summary line.

    Raises:
        BundleError: ``src`` is not a bundle, ``out`` exists, or the conversion failed.
        VideoIOError: ``clip`` cannot be read.
    """
    bundle = load_bundle(src)
    if out.exists():
        raise BundleError(f"{out} exists; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        work = Path(tmp) / out.name
        shutil.copytree(src, work)
        record = convert(bundle, work)
        size = (bundle.manifest.input.width, bundle.manifest.input.height)
        images = [f.image for f in read_frames(clip, size=size, max_frames=frames)]
        agreement = label_agreement(src, work, images)
        record = {
            "from": str(src.name),
            **record,
            "label_agreement": round(agreement, 5),
            "frames": len(images),
        }
        train = {**bundle.manifest.train, kind: record}
        manifest = dataclasses.replace(bundle.manifest, train=train)
        (work / MANIFEST).write_text(manifest.to_json())
        load_bundle(work)  # still a valid bundle
        work.rename(out)
    return f"labels agree with {src.name} on {100 * agreement:.2f} %"
