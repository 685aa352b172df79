"""What a run writes. A caller names its outputs as specs (``Overlay``, ``Masks``, ``Scores``,
``Jsonl``, ``Show``); ``check_outputs`` says before anything opens what is wrong with them, and
``open_outputs`` makes them into ``FrameOutputs``, which the pipeline feeds: every output's image
is rendered in its render thread, at the output size, from one resize of the result, and
written in its encode thread (never the model's).

Every file output follows ``engine.outfile``'s rule: a regular file is written beside its final
name and renamed there when the run ends cleanly (Ctrl-C included), deleted when the run fails;
``-`` (standard output), a FIFO or a device is written through, never replaced. A folder of
masks keeps every file that is not one of its masks.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, ContextManager, Sequence, Union

import numpy as np

from vidseg.engine.audio import AudioTrack
from vidseg.engine.bundle import Manifest
from vidseg.engine.errors import UsageError, VideoIOError
from vidseg.engine.frame import Frame
from vidseg.engine.framelog import FrameLog
from vidseg.engine.masks import MaskSequenceWriter, mask_files
from vidseg.engine.outfile import is_stdout, replaces_a_file, writes_through
from vidseg.engine.overlay import blend, colorize, palette_lut, resize_image
from vidseg.engine.preview import Preview, gui_problem
from vidseg.engine.segmenter import Result
from vidseg.engine.writer import VideoWriter

MASK_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm")  # .mkv: exact ids
LOSSLESS_MASK_SUFFIX = ".mkv"  # FFV1 4:0:0, the exact class ids (read_label_frames)
OVERLAY_CODECS = ("libx264", "libx265", "libvpx-vp9", "mpeg4")
CODEC_BY_SUFFIX = {".webm": "libvpx-vp9"}  # an overlay's encoder when none is named; else x264
X264_PRESETS = tuple(  # x264's and x265's speed presets
    "ultrafast superfast veryfast faster fast medium slow slower veryslow placebo".split()
)


@dataclass(frozen=True)
class Overlay:
    """The frames with their labels blended on top, as a video (``-``: Matroska on standard
    output), with the input's audio unless the run drops it. ``codec``: one of
    ``OVERLAY_CODECS``; None takes VP9 for .webm, else x264."""

    path: str
    codec: str | None = None


@dataclass(frozen=True)
class Masks:
    """The class ids of every frame: a folder of PNGs (a path without a suffix, ending in /, or
    an existing folder), a lossless .mkv (FFV1: exact ids; also ``-``, a FIFO or a device), or
    palette colours in a .mp4/.m4v/.mov/.avi (H.264) or .webm (VP9), for viewing."""

    path: str


@dataclass(frozen=True)
class Scores:
    """Confidence maps (255 x the top class's probability) as PNGs in a folder; needs a bundle
    exported with scores."""

    path: str


@dataclass(frozen=True)
class Jsonl:
    """One JSON line per frame (``engine.framelog``); ``polygons`` adds each class's regions."""

    path: str
    polygons: bool = False


@dataclass(frozen=True)
class Show:
    """A preview window of the overlay (OpenCV with GUI support and a display)."""

    title: str = "vidseg"


Output = Union[Overlay, Masks, Scores, Jsonl, Show]
FILE_OUTPUTS = (Overlay, Masks, Scores, Jsonl)


def mask_form(path: str) -> str:
    """What masks at ``path`` are: ``"folder"`` (PNG class ids), ``"ids"`` (a lossless FFV1
    video) or ``"colour"`` (palette colours); see ``Masks``.

    Raises:
        UsageError: any other suffix (an image's, a text file's): neither a folder nor a video.
    """
    suffix = Path(path).suffix.lower()
    through = writes_through(path)
    if not through and (os.path.isdir(path) or path.endswith(("/", os.sep)) or not suffix):
        return "folder"
    if suffix in MASK_VIDEO_SUFFIXES and suffix != LOSSLESS_MASK_SUFFIX:
        return "colour"
    if suffix == LOSSLESS_MASK_SUFFIX or through:
        return "ids"
    colours = "/".join(s for s in MASK_VIDEO_SUFFIXES if s != LOSSLESS_MASK_SUFFIX)
    raise UsageError(
        f"{path}: masks go to a folder (a path without a suffix, or ending in /), a "
        f"{LOSSLESS_MASK_SUFFIX} (exact ids) or a {colours} video (colours), not a {suffix} file"
    )


def _names_a_folder(path: str) -> bool:
    """Whether ``path`` names a folder of PNGs (``mask_form``), not a video or another file."""
    try:
        return mask_form(path) == "folder"
    except UsageError:
        return False


def _is_folder(output: Output) -> bool:
    return isinstance(output, Scores) or (
        isinstance(output, Masks) and _names_a_folder(output.path)
    )


def output_problem(output: Output) -> str | None:
    """What is wrong with ``output``'s path as given, or None (nothing is opened)."""
    if isinstance(output, Show):
        return gui_problem()
    path = output.path
    if isinstance(output, (Masks, Scores)) and Path(os.path.normpath(path)).name in ("", ".."):
        return f"{path}: give the output a folder of its own"
    if isinstance(output, Masks):
        try:
            mask_form(path)
        except UsageError as error:
            return str(error)
    elif isinstance(output, Scores):
        if not _names_a_folder(path):
            return (
                f"{path}: confidence maps are a folder of PNGs: give a folder "
                "(a path without a suffix, or ending in /)"
            )
    elif not is_stdout(path) and os.path.isdir(path):
        return f"{path} is a folder: give a file name"
    if isinstance(output, Overlay) and output.codec not in (None, *OVERLAY_CODECS):
        return f"{path}: unknown encoder {output.codec!r}, expected one of {OVERLAY_CODECS}"
    return None


def existing_output(output: Output) -> str | None:
    """Why writing ``output`` would replace something (an existing file, a folder holding
    masks): a run needs ``overwrite`` for it. None otherwise; ``-``, FIFOs and devices are
    written through and never count."""
    if isinstance(output, Show):
        return None
    if _is_folder(output):
        if old := mask_files(output.path):
            name = old[0].name
            return f"{output.path} holds masks ({name}, ...); pass --overwrite to replace them"
    elif replaces_a_file(output.path):
        return f"{output.path} exists; pass --overwrite to replace it"
    return None


def check_outputs(outputs: Sequence[Output], *, overwrite: bool) -> None:
    """Raise what is wrong with ``outputs`` before anything opens: a bad path, two outputs on
    one path, an existing output without ``overwrite``, a folder that is not there.

    Raises:
        UsageError: the first problem with the outputs as given, in one line.
        VideoIOError: an output's directory does not exist.
    """
    if not outputs:
        raise UsageError("no output: name at least one (an overlay, masks, scores, JSON lines)")
    paths = [Path(o.path).absolute() for o in outputs if isinstance(o, FILE_OUTPUTS)]
    if len(set(paths)) < len(paths):
        raise UsageError("two outputs share a path: give each its own")
    for output in outputs:
        if problem := output_problem(output) or (None if overwrite else existing_output(output)):
            raise UsageError(problem)
    for path in paths:
        if not path.parent.is_dir():
            raise VideoIOError(f"output directory does not exist: {path.parent}")


def output_size(requested: tuple[int, int] | None, width: int, height: int) -> tuple[int, int]:
    """The (W, H) to write: the input's, or ``requested`` with a 0 side from the aspect ratio."""
    if requested is None:
        return width, height
    out_w, out_h = requested
    if out_w == 0:
        out_w = max(1, round(width * out_h / height))
    if out_h == 0:
        out_h = max(1, round(height * out_w / width))
    return out_w, out_h


def written_size(outputs: Sequence[Output], width: int, height: int) -> tuple[int, int]:
    """The size of the first video output as written: an overlay and colour masks are yuv420p,
    which pads an odd side by one pixel; lossless masks (.mkv, PNG) keep it."""
    for output in outputs:
        if isinstance(output, Overlay) or (
            isinstance(output, Masks) and mask_form(output.path) == "colour"
        ):
            return width + width % 2, height + height % 2
        if isinstance(output, Masks):
            return width, height
    return width, height


@dataclass(frozen=True)
class Encoding:
    """How a run's videos are encoded: size, rate and clock, x264's quality and speed, the
    threads of each encoder (None: the codec's own choice)."""

    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    crf: int = 23
    preset: str = "veryfast"
    threads: int | None = None
    overwrite: bool = False
    zero_start: bool = True  # the first frame at 0 (False: the source's timestamps kept)

    def writer(self, path: str, codec: str, **extra: Any) -> VideoWriter:
        return VideoWriter(
            path,
            width=self.width,
            height=self.height,
            fps=self.fps,
            time_base=self.time_base,
            codec=codec,
            crf=self.crf,
            preset=self.preset,
            threads=self.threads,
            overwrite=self.overwrite,
            zero_start=self.zero_start,
            **extra,
        )


@dataclass(frozen=True)
class Target:
    """One image output: ``sink.write(render(image, result), frame.pts)``, where ``image`` is
    the frame and ``result`` its segmentation, both at the output size."""

    sink: Any  # a VideoWriter or MaskSequenceWriter (entered by FrameOutputs)
    render: Callable[[np.ndarray, Result], np.ndarray]


@dataclass(frozen=True)
class Rendered:
    """One frame's images, one per ``FrameOutputs`` target (and the preview's), rendered ahead
    of writing."""

    frame: Frame
    result: Result  # at the frame's size
    images: list[np.ndarray]
    shown: np.ndarray | None = None


class FrameOutputs:
    """Fans each ``(frame, result)`` out to image targets, a ``FrameLog`` and a ``Preview``.

    A pipeline sink: ``segment_video(..., sink=outputs, render=outputs.render)`` renders every
    target's image in the render thread, from the frame and its result taken to ``size`` once,
    and hands them to ``write`` in the encode thread. The log records the result at the frame's
    own size. Entering it enters every output; a failure leaves none behind.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        size: tuple[int, int],
        log: FrameLog | None = None,
        preview: Preview | None = None,
        preview_render: Callable[[np.ndarray, Result], np.ndarray] | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._width, self._height = size
        self._log = log
        self._preview = preview
        self._preview_render = preview_render
        self._stack = ExitStack()

    def render(self, frame: Frame, result: Result) -> Rendered:
        """Every target's image of the frame (the ``render`` that goes with this sink)."""
        width, height = self._width, self._height
        image, sized = resize_image(frame.image, width, height), result.at_size(height, width)
        images = [t.render(image, sized) for t in self._targets]
        shown = None
        if self._preview is not None and self._preview_render is not None:
            same = [im for t, im in zip(self._targets, images) if t.render is self._preview_render]
            shown = same[0] if same else self._preview_render(image, sized)
        return Rendered(frame, result, images, shown)

    def __enter__(self) -> "FrameOutputs":
        with ExitStack() as stack:
            contexts: list[ContextManager[Any]] = [t.sink for t in self._targets]
            contexts += [c for c in (self._log, self._preview) if c is not None]
            for context in contexts:
                stack.enter_context(context)
            self._stack = stack.pop_all()
        return self

    def write(self, item: Rendered, pts: int | None = None) -> None:
        for target, image in zip(self._targets, item.images):
            target.sink.write(image, pts)
        if self._log is not None:
            self._log.write(item.frame, item.result)
        if self._preview is not None and item.shown is not None:
            self._preview.show(item.shown)

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return self._stack.__exit__(exc_type, exc, tb)


def open_outputs(
    outputs: Sequence[Output],
    manifest: Manifest,
    encoding: Encoding,
    *,
    alpha: float = 0.5,
    audio: AudioTrack | None = None,
) -> FrameOutputs:
    """``outputs`` as a ``FrameOutputs`` (not yet entered: entering it opens the files), every
    image at ``encoding``'s size; ``audio``: the input's, copied into an overlay."""
    lut = palette_lut(manifest.palette)

    def overlay(image: np.ndarray, result: Result) -> np.ndarray:
        return blend(image, result.labels, lut, alpha)

    def labels(image: np.ndarray, result: Result) -> np.ndarray:
        return result.labels

    def colours(image: np.ndarray, result: Result) -> np.ndarray:
        return colorize(result.labels, lut)

    def scores(image: np.ndarray, result: Result) -> np.ndarray:
        return result.scores

    targets, log, preview = [], None, None
    for output in outputs:
        if isinstance(output, Overlay):
            suffix = Path(output.path).suffix.lower()
            codec = output.codec or CODEC_BY_SUFFIX.get(suffix, "libx264")
            targets.append(Target(encoding.writer(output.path, codec, audio=audio), overlay))
        elif isinstance(output, Masks):
            form = mask_form(output.path)
            if form == "ids":
                targets.append(Target(encoding.writer(output.path, "ffv1", lossless=True), labels))
            elif form == "colour":
                codec = CODEC_BY_SUFFIX.get(Path(output.path).suffix.lower(), "libx264")
                targets.append(Target(encoding.writer(output.path, codec), colours))
            else:
                sink = MaskSequenceWriter(output.path, overwrite=encoding.overwrite)
                targets.append(Target(sink, labels))
        elif isinstance(output, Scores):
            if manifest.output_name("scores") is None:
                raise UsageError(
                    f"{output.path}: confidence maps need a bundle exported with confidence "
                    "(vidseg-export --scores); this one has none"
                )
            sink = MaskSequenceWriter(output.path, overwrite=encoding.overwrite)
            targets.append(Target(sink, scores))
        elif isinstance(output, Jsonl):
            log = FrameLog(output.path, manifest.classes, polygons=output.polygons)
        elif isinstance(output, Show):
            preview = Preview(output.title)
    size = (encoding.width, encoding.height)
    return FrameOutputs(targets, size, log, preview, overlay if preview else None)
