"""Accuracy and temporal consistency of an exported bundle, measured through the engine (ONNX
Runtime, no torch).

:func:`evaluate_bundle` scores any labelled frames in file-name order (``vidseg-eval`` on a
folder, ``vidseg-bench --accuracy`` on the CamVid val split, one drive of 101 labelled frames at
15 Hz): each frame goes through ``Segmenter.step`` exactly as a video frame would (resize to the
model input in the engine, labels back at the frame's size), with the recurrent state or
key-frame schedule carried from frame to frame and reset where the drive changes
(:func:`sequence_of`), and is scored against its label. ``carry_state=False`` resets the
segmenter before every frame: the gap between the two says what the model's memory is worth on
real video. Besides mIoU over every non-void pixel, the trimap IoU scores only the pixels near a
true class boundary (:func:`boundary_band`), where blocky or smeared labels lose.

The same pass measures flicker (:class:`FlickerMeter`), over each pair of consecutive frames and
the pixels that are non-void in both labels, pooled over the frames, in percent:

* ``flicker`` -- pixels whose predicted label changes from one frame to the next;
* ``truth_flicker`` -- pixels whose true label changes: the floor that real motion sets;
* ``excess_flicker`` -- pixels whose prediction changes while the truth does not;
* ``excess_flicker_at_edges`` -- the part of ``excess_flicker`` within ``EDGE_PX`` of a true class
  boundary in either frame (:func:`boundary_band`): boundaries that move differently from the
  true ones as the camera moves, rather than labels flipping inside a region;
* ``error_persistence`` -- of the pixels wrong in one frame whose truth stays the same in the next,
  the share wrong again there: errors that stay, which no averaging over frames removes;
* ``excess_flicker_reverting`` -- of the excess changes (a pixel's prediction changes while its
  truth stays, and the truth stays one frame more), the share that changes back in the next
  frame: one-frame blips, what a memory that averages frames removes best; the rest are steps,
  a predicted label that changes and stays changed.

On unlabelled video the meter measures ``flicker`` alone, over every pixel.

This scores what ships -- the graph, its label stride, the engine's resizing -- rather than the
torch checkpoint it came from (:func:`vidseg.models.evaluate.evaluate_sequence`); the two agree
within the export's parity tolerance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from vidseg.engine.errors import VidsegError
from vidseg.engine.segmenter import Segmenter
from vidseg.models.data import CAMVID_CLASSES, LabelledFrame, LabelledFrames, load_split
from vidseg.models.metrics import SegMetrics, confusion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Flicker:
    """Frame-to-frame label changes, percent of the pixels counted (nan: no pair counted)."""

    pred: float  # predicted label changes
    truth: float  # true label changes (nan without truth)
    excess: float  # predicted changes where the truth stays the same (nan without truth)
    excess_at_edges: float  # the part of ``excess`` within EDGE_PX of a true edge (nan: no truth)
    persistence: float = float("nan")  # wrong pixels (truth unchanged) wrong again next frame
    reverting: float = float("nan")  # excess changes undone in the next frame (truth steady)


class FlickerMeter:
    """Accumulates :class:`Flicker` over sequences, one frame at a time (numpy only).

    With truth, a pixel of a pair counts when its truth is a class id (``< num_classes``, so not
    void) in both frames; without truth every pixel counts. Give truth for all frames or none.
    :meth:`cut` starts a new sequence (no pair across it; the frame size may change there).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        # the previous frame: predicted labels, true labels and their EDGE_PX boundary band
        self._prev: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None
        self._labelled: bool | None = None  # whether the frames come with truth
        self._counted = self._pred = self._truth = self._excess = self._at_edges = 0
        self._wrong = self._wrong_again = 0  # wrong pixels where the truth stays; wrong next too
        # excess changes with the truth steady a frame more; of those, undone in the next frame
        self._steps = self._reverted = 0
        # the last pair's excess changes and the prediction before them, to see them undone
        self._last_excess: tuple[np.ndarray, np.ndarray] | None = None

    def add(
        self, pred: np.ndarray, truth: np.ndarray | None = None, edges: np.ndarray | None = None
    ) -> None:
        """The next frame's (H, W) predicted labels and, if labelled, its (H, W) true labels;
        ``edges``: ``boundary_band(truth, num_classes, EDGE_PX)`` when the caller already has it
        (it costs ~10 ms at 480x360)."""
        if truth is not None and truth.shape != pred.shape:
            raise ValueError(f"labels {pred.shape} and truth {truth.shape} differ in shape")
        if self._labelled is not None and self._labelled != (truth is not None):
            raise ValueError("give truth for all frames or none")
        self._labelled = truth is not None
        if truth is not None and edges is None:
            edges = boundary_band(truth, self.num_classes, EDGE_PX)
        if self._prev is not None:
            prev_pred, prev_truth, prev_edges = self._prev
            if prev_pred.shape != pred.shape:
                raise ValueError("every frame of a sequence needs the same shape")
            changed = prev_pred != pred
            if truth is None:
                self._counted += changed.size
                self._pred += int(changed.sum())
            else:
                keep = (prev_truth < self.num_classes) & (truth < self.num_classes)
                truth_changed = (prev_truth != truth) & keep
                changed &= keep
                excess = changed & ~truth_changed
                self._counted += int(keep.sum())
                self._pred += int(changed.sum())
                self._truth += int(truth_changed.sum())
                self._excess += int(excess.sum())
                self._at_edges += int((excess & (edges | prev_edges)).sum())
                wrong = (prev_pred != prev_truth) & keep & ~truth_changed
                self._wrong += int(wrong.sum())
                self._wrong_again += int((wrong & (pred != truth)).sum())
                if self._last_excess is not None:
                    last, before = self._last_excess
                    steady = last & keep & ~truth_changed
                    self._steps += int(steady.sum())
                    self._reverted += int((steady & (pred == before)).sum())
                self._last_excess = (excess, prev_pred)
        self._prev = (pred.copy(), None if truth is None else truth.copy(), edges)

    def cut(self) -> None:
        """A new sequence starts: the next frame forms no pair with the last one."""
        self._prev = self._last_excess = None

    def result(self) -> Flicker:
        if not self._counted:
            return Flicker(float("nan"), float("nan"), float("nan"), float("nan"))
        pred = 100 * self._pred / self._counted
        if not self._labelled:
            return Flicker(pred, float("nan"), float("nan"), float("nan"))
        persistence = 100 * self._wrong_again / self._wrong if self._wrong else float("nan")
        reverting = 100 * self._reverted / self._steps if self._steps else float("nan")
        return Flicker(
            pred,
            100 * self._truth / self._counted,
            100 * self._excess / self._counted,
            100 * self._at_edges / self._counted,
            persistence,
            reverting,
        )


BAND_PX = 2  # half-width of the trimap band around ground-truth class boundaries
EDGE_PX = 6  # excess flicker this near a true boundary counts as boundary jitter


def sequence_of(name: str) -> str:
    """The sequence (drive) a frame belongs to: its file name's stem up to the last ``_``
    (``0016E5_07959.png`` -> ``0016E5``; a stem without ``_`` -> ``""``, one shared sequence)."""
    return Path(name).stem.rpartition("_")[0]


def _disk(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) uint8 structuring element: the pixels at Euclidean distance <= ``radius``."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy**2 + xx**2 <= radius**2).astype(np.uint8)


def boundary_band(truth: np.ndarray, num_classes: int, radius: int = BAND_PX) -> np.ndarray:
    """(H, W) bool: the trimap band of a ground-truth label map.

    A pixel p is in the band when its truth is a class (``< num_classes``; void never is) and
    some pixel q with another class (also ``< num_classes``) lies within Euclidean distance
    ``radius`` of it, ``(py - qy)**2 + (px - qx)**2 <= radius**2``, inside the image. For the
    default 2 px that is the 13-pixel disk: the 5 pixels of p's row and column at offsets up to
    2, and the 4 diagonal neighbours. Void pixels neither join the band nor put a pixel in it.

    Computed with two grey-level morphology passes over the disk (max and min of the class ids
    around each pixel, void left out of both): another class is near exactly when either differs
    from the pixel's own.

    Args:
        truth: (H, W) integer class ids; ids ``>= num_classes`` are void.
        num_classes: the number of classes K (at most 255).
        radius: the band's half-width in pixels.
    """
    if num_classes > 255:
        raise ValueError(f"boundary_band handles up to 255 classes, got {num_classes}")
    valid = truth < num_classes
    ids = np.where(valid, truth, 0).astype(np.uint8)
    disk = _disk(radius)
    # void as 0 in the max pass and 255 in the min pass, classes as 1..K: void never wins
    high = cv2.dilate(
        np.where(valid, ids + 1, 0).astype(np.uint8),
        disk,
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    low = cv2.erode(
        np.where(valid, ids + 1, 255).astype(np.uint8),
        disk,
        borderType=cv2.BORDER_CONSTANT,
        borderValue=255,
    )
    return valid & ((high != ids + 1) | (low != ids + 1))


class FrameScorer:
    """Scores of predicted label maps against their truth, accumulated frame by frame: one
    confusion matrix over every non-void pixel, one over the boundary band (:func:`boundary_band`)
    and the flicker between consecutive frames (``cut()`` where a sequence starts).

    ``truth``: class ids with every id ``>= num_classes`` void (:func:`truth_ids`).
    ``ignore_index``: the bundle's void class, never a class of the mean even where it is one
    of the ``num_classes`` (``SegMetrics.from_confusion``).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.cm = np.zeros((num_classes, num_classes), np.int64)
        self.cm_band = np.zeros_like(self.cm)
        self.flicker = FlickerMeter(num_classes)

    def cut(self) -> None:
        self.flicker.cut()

    def add(
        self,
        pred: np.ndarray,
        truth: np.ndarray,
        band: np.ndarray | None = None,
        edges: np.ndarray | None = None,
    ) -> None:
        """One frame; ``band`` and ``edges``: its ``boundary_band(truth)`` and the flicker's
        ``boundary_band(truth, K, EDGE_PX)`` when the caller already has them (several scorers
        of one truth)."""
        k = self.num_classes
        band = boundary_band(truth, k) if band is None else band
        self.cm += confusion(pred, truth, k)
        self.cm_band += confusion(pred[band], truth[band], k)
        self.flicker.add(pred, truth, edges)

    def result(self) -> tuple[SegMetrics, SegMetrics, Flicker]:
        """(every non-void pixel, the boundary band, flicker)."""
        void = self.ignore_index
        metrics = SegMetrics.from_confusion(self.cm, void)
        return metrics, SegMetrics.from_confusion(self.cm_band, void), self.flicker.result()

    def scores(self) -> dict[str, float]:
        """``result()`` as the numbers the comparison tools print (:func:`score_table`): miou,
        trimap_iou, flicker, excess_flicker, excess_flicker_reverting, error_persistence (percent,
        unrounded)."""
        metrics, trimap, flicker = self.result()
        return {
            "miou": metrics.miou,
            "trimap_iou": trimap.miou,
            "flicker": flicker.pred,
            "excess_flicker": flicker.excess,
            "excess_flicker_reverting": flicker.reverting,
            "error_persistence": flicker.persistence,
        }


def score_table(first: str, rows: Iterable[tuple[str, Mapping[str, float]]]) -> str:
    """A markdown table of :meth:`FrameScorer.scores` rows, each named in column ``first``."""
    lines = [
        f"| {first} | mIoU | trimap IoU | flicker | excess flicker | of it undone a frame "
        "later | errors persisting |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['miou']:.2f} | {r['trimap_iou']:.2f} | {r['flicker']:.2f} | "
        f"{r['excess_flicker']:.2f} | {r['excess_flicker_reverting']:.1f} | "
        f"{r['error_persistence']:.1f} |"
        for name, r in rows
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class BundleScore:
    """A bundle scored over labelled sequences through the engine."""

    metrics: SegMetrics  # every non-void pixel
    trimap: SegMetrics  # the pixels of the boundary band (boundary_band, BAND_PX)
    flicker: Flicker  # between consecutive frames of the same sequence
    frames: int  # frames scored
    sequences: int  # sequences (drives) found: runs of frames with the same sequence_of
    fps: float  # frames / seconds in Segmenter.step and its labels (reading, scoring left out)


def truth_ids(label: np.ndarray, ignore_index: int | None, num_classes: int) -> np.ndarray:
    """``label`` with the bundle's ignore index moved out of the class range (to K), so that
    every id ``>= K`` is void from here on."""
    if ignore_index is None or ignore_index >= num_classes:
        return label
    return np.where(label == ignore_index, num_classes, label).astype(np.int64)


def evaluate_bundle(
    segmenter: Segmenter,
    frames: LabelledFrames | Iterable[LabelledFrame],
    carry_state: bool = True,
    timestamps: Iterable[float | None] | None = None,
) -> BundleScore:
    """Score ``segmenter`` over labelled frames in order, through ``Segmenter.step`` on each
    full frame (labels come back at the frame's size and are scored there).

    The state (and a keyframe bundle's schedule) is carried from frame to frame and reset before
    the first frame, wherever :func:`sequence_of` changes (a new drive), and, unless
    ``carry_state``, before every frame. Void is the bundle's ``ignore_index`` and any id ``>=``
    its number of classes. Flicker pairs never straddle a sequence change. ``frames`` may be a
    lazy iterable: one frame is held at a time. ``timestamps``, one per frame (seconds, or None),
    go to ``Segmenter.step`` with their frames, so the segmenter sees the gaps between them.

    Raises:
        VidsegError: no frame was given, every labelled pixel is void, or a frame's label
            differs from it in size.
        FrameError: an image is not (H, W, 3) uint8.
    """
    if isinstance(frames, LabelledFrames):
        frames = (
            LabelledFrame(n, i, lb) for n, i, lb in zip(frames.names, frames.images, frames.labels)
        )
    manifest = segmenter.manifest
    num_classes = len(manifest.classes)
    scorer = FrameScorer(num_classes, manifest.ignore_index)
    count = sequences = unknown = 0
    step_ns = 0
    sequence: str | None = None
    times = iter(timestamps) if timestamps is not None else None
    for frame in frames:
        timestamp = next(times, None) if times is not None else None
        if frame.label.shape != frame.image.shape[:2]:
            raise VidsegError(
                f"label of {frame.name} is {frame.label.shape}, its frame {frame.image.shape[:2]}"
            )
        if sequence_of(frame.name) != sequence or count == 0:
            sequence, sequences = sequence_of(frame.name), sequences + 1
            segmenter.reset()
            scorer.cut()
        elif not carry_state:
            segmenter.reset()
        t0 = time.perf_counter_ns()
        if timestamp is None:
            pred = segmenter.step(frame.image).labels
        else:
            pred = segmenter.step(frame.image, timestamp).labels
        step_ns += time.perf_counter_ns() - t0
        truth = truth_ids(frame.label, manifest.ignore_index, num_classes)
        unknown += int((frame.label >= num_classes).sum())
        if manifest.ignore_index is not None and manifest.ignore_index >= num_classes:
            unknown -= int((frame.label == manifest.ignore_index).sum())
        scorer.add(pred, truth)
        count += 1
    segmenter.reset()
    if not count:
        raise VidsegError("no labelled frames to score")
    if not scorer.cm.any():
        raise VidsegError(
            f"every labelled pixel of the {count} frames is void (the bundle's "
            f"ignore index {manifest.ignore_index} or an id >= its "
            f"{num_classes} classes): nothing to score"
        )
    if unknown:
        logger.warning(
            "%d labelled pixels hold ids >= the bundle's %d classes (and not its "
            "ignore index %s): scored as void",
            unknown,
            num_classes,
            manifest.ignore_index,
        )
    return BundleScore(*scorer.result(), count, sequences, count / max(step_ns * 1e-9, 1e-12))


def accuracy_report(segmenter: Segmenter, data_root: str | Path) -> dict[str, object]:
    """CamVid val metrics of ``segmenter`` with state carried and with a reset every frame, and
    the flicker of the carried run.

    Raises:
        VidsegError: the bundle's classes are not CamVid's, or the split is missing.
    """
    classes = tuple(segmenter.manifest.classes)
    if classes != CAMVID_CLASSES:
        raise VidsegError(f"accuracy is measured on CamVid; the bundle's classes are {classes}")
    data = load_split(data_root, "val")
    carried = evaluate_bundle(segmenter, data, carry_state=True)
    reset = evaluate_bundle(segmenter, data, carry_state=False)
    return {
        "split": f"CamVid val ({len(data.images)} frames in order)",
        "miou": round(carried.metrics.miou, 2),
        "miou_reset_every_frame": round(reset.metrics.miou, 2),
        "pixel_acc": round(carried.metrics.pixel_acc, 2),
        "trimap_iou": round(carried.trimap.miou, 2),
        "flicker": round(carried.flicker.pred, 2),
        "excess_flicker": round(carried.flicker.excess, 2),
        "truth_flicker": round(carried.flicker.truth, 2),
        "flicker_reset_every_frame": round(reset.flicker.pred, 2),
        "iou": {c: round(v, 2) for c, v in zip(CAMVID_CLASSES, asdict(carried.metrics)["iou"])},
    }
