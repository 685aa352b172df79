"""How a frame is fitted to the model's input, and how labels go back onto the frame.

Three modes (``RESIZE_MODES``):

* ``stretch`` (the default): the whole frame scaled to the input size; a 16:9 frame fed to a
  256x352 model is squeezed. Labels come back by ``upsample`` straight to the frame size.
* ``letterbox``: the whole frame scaled by one factor to fit inside the input, centred, the rest
  padded with ``PAD_VALUE`` grey (the aspect ratio is kept, nothing is cut).
* ``crop``: the frame scaled by one factor to cover the input, the overflow cut off evenly on both
  sides (aspect kept, the frame's edges are not seen: their labels are ``UNSEEN``, score 0).

A ``Placement`` says which rectangle of the frame the model sees (``src``, frame pixels) and
where it lands in the model input (``dst``, input pixels). Labels go back crisply: the graph's
outputs are upsampled (``engine.upsample``: arg-max of bilinear logits where the bundle has
them) to the whole model canvas at the target's scale, then that canvas is cut to the target
(letterbox: the padding falls away) or pasted into it (crop). So no label ever comes from the
padding's pixels only by nearest-neighbour rounding of a smaller map.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vidseg.engine.upsample import GraphOutputs, upsample

RESIZE_MODES = ("stretch", "letterbox", "crop")
PAD_VALUE = 114  # letterbox padding grey (as YOLO's letterbox), on all three channels
UNSEEN = 255  # label of frame pixels the model never saw (crop mode's cut edges)


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle in integer pixels."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Placement:
    """The frame rectangle ``src`` (frame pixels) is resized onto ``dst`` (model-input pixels);
    the rest of the model input is padding. Made by ``place``."""

    mode: str
    frame_size: tuple[int, int]  # (H, W) of the frame
    input_size: tuple[int, int]  # (h, w) of the model input
    src: Rect  # what the model sees, in frame pixels
    dst: Rect  # where it lands, in model-input pixels

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) pixels of padding in the model input."""
        h, w = self.input_size
        d = self.dst
        return d.y, h - d.y - d.height, d.x, w - d.x - d.width


def check_resize(mode: str) -> str:
    """``mode`` if it is one of ``RESIZE_MODES``.

    Raises:
        ValueError: any other.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")
    return mode


@lru_cache(maxsize=32)  # one placement per frame size: computed once, thread-safe
def place(frame_size: tuple[int, int], input_size: tuple[int, int], mode: str) -> Placement:
    """The placement of an (H, W) frame on an (h, w) model input for ``mode``.

    Raises:
        ValueError: unknown ``mode`` or a non-positive size.
    """
    (H, W), (h, w) = frame_size, input_size
    if min(H, W, h, w) <= 0:
        raise ValueError(f"sizes must be positive, got frame {frame_size}, input {input_size}")
    whole_frame, whole_input = Rect(0, 0, W, H), Rect(0, 0, w, h)
    if mode == "stretch":
        return Placement(mode, (H, W), (h, w), whole_frame, whole_input)
    if mode == "letterbox":
        scale = min(h / H, w / W)
        cw, ch = min(w, max(1, round(W * scale))), min(h, max(1, round(H * scale)))
        dst = Rect((w - cw) // 2, (h - ch) // 2, cw, ch)
        return Placement(mode, (H, W), (h, w), whole_frame, dst)
    if mode == "crop":
        scale = max(h / H, w / W)
        cw, ch = min(W, max(1, round(w / scale))), min(H, max(1, round(h / scale)))
        src = Rect((W - cw) // 2, (H - ch) // 2, cw, ch)
        return Placement(mode, (H, W), (h, w), src, whole_input)
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")


def to_input(frame: np.ndarray, placement: Placement) -> np.ndarray:
    """(H, W, 3) uint8 -> the (h, w, 3) uint8 model input, contiguous: ``src`` resized
    (bilinear) onto ``dst``, padding ``PAD_VALUE``."""
    import cv2  # on first use: importing the engine loads no OpenCV

    s, d = placement.src, placement.dst
    h, w = placement.input_size
    region = frame[s.y : s.y + s.height, s.x : s.x + s.width]
    if region.shape[:2] != (d.height, d.width):
        region = cv2.resize(region, (d.width, d.height), interpolation=cv2.INTER_LINEAR)
    if (d.width, d.height) == (w, h):
        return np.ascontiguousarray(region)
    top, bottom, left, right = placement.padding
    return cv2.copyMakeBorder(
        np.ascontiguousarray(region),
        top,
        bottom,
        left,
        right,
        cv2.BORDER_CONSTANT,
        value=(PAD_VALUE,) * 3,
    )


def fit(
    frame: np.ndarray, input_size: tuple[int, int], mode: str
) -> tuple[np.ndarray, Placement | None]:
    """``frame`` ((H, W, 3) uint8) fitted to a model input of ``input_size`` by ``mode``: the
    (h, w, 3) uint8 input, contiguous, and the placement (None for ``stretch``: the whole frame
    on the whole input, what a result maps back without one).

    Raises:
        ValueError: unknown ``mode``.
    """
    placement = place(frame.shape[:2], input_size, mode)
    return to_input(frame, placement), None if mode == "stretch" else placement


def canvas_box(placement: Placement, height: int, width: int) -> tuple[int, int, int, int]:
    """Where the whole model canvas lies on a ``height`` x ``width`` target (the frame, or the
    frame scaled to another size): ``(x, y, canvas_width, canvas_height)`` in target pixels;
    negative x/y and a canvas larger than the target for letterbox."""
    H, W = placement.frame_size
    h, w = placement.input_size
    s, d = placement.src, placement.dst
    kx, ky = width / W, height / H  # frame -> target
    ax, ay = s.width * kx / d.width, s.height * ky / d.height  # model input -> target
    x = round(s.x * kx - d.x * ax)
    y = round(s.y * ky - d.y * ay)
    return x, y, max(1, round(w * ax)), max(1, round(h * ay))


def to_frame(
    outputs: GraphOutputs, placement: Placement | None, height: int, width: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """A graph's outputs (at its label stride over the model input) as (labels, scores) at
    ``height`` x ``width``, the frame's size or the frame scaled: upsampled to the whole canvas
    at that scale, then cut (letterbox) or pasted (crop; unseen pixels ``UNSEEN``, score 0).
    Without a ``placement`` (a stretched frame, or the model input itself): upsampled."""
    if placement is None or placement.mode == "stretch":
        return upsample(outputs, height, width)
    x, y, cw, ch = canvas_box(placement, height, width)
    labels_c, scores_c = upsample(outputs, ch, cw)
    labels = np.full((height, width), UNSEEN, np.uint8)
    scores = None if scores_c is None else np.zeros((height, width), np.uint8)
    # the overlap of the canvas [x, x + cw) x [y, y + ch) with the target [0, W) x [0, H)
    tx0, ty0 = max(x, 0), max(y, 0)
    tx1, ty1 = min(x + cw, width), min(y + ch, height)
    if tx1 > tx0 and ty1 > ty0:
        labels[ty0:ty1, tx0:tx1] = labels_c[ty0 - y : ty1 - y, tx0 - x : tx1 - x]
        if scores is not None:
            scores[ty0:ty1, tx0:tx1] = scores_c[ty0 - y : ty1 - y, tx0 - x : tx1 - x]
    return labels, scores
