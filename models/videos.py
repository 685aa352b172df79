"""Unlabelled real video clips for the temporal-consistency loss (``vidseg-train
--consistency-videos DIR``).

Every video of a folder is decoded once (PyAV) and kept in memory, each frame resized to the
model's input size exactly as the engine resizes a frame (``cv2.resize``, bilinear). For each
pair of consecutive frames the DIS optical flow of :mod:`vidseg.engine.aux_inputs.dis_flow` (the
function the engine and NetWarp use) is computed at 1/4 of that size in both directions; the
backward flow (frame t to frame t - 1) is what warps the prediction of t - 1 onto t, and the
forward-backward check (Sundaram et al. 2010:
``|b + f(x + b)|^2 <= 0.01 (|b|^2 + |f(x + b)|^2) + 0.5``) marks the pixels of t that are
occluded in t - 1 or whose flow leaves the frame.

Unlabelled videos only: no labels are read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import cv2
import numpy as np

from vidseg.engine.aux_inputs.dis_flow import DIS_PRESET, dis_flow
from vidseg.engine.errors import VidsegError

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
FLOW_STRIDE = 4  # flow and consistency grid: 1/4 of the frames (the models' logit stride)
FB_ALPHA = 0.01  # forward-backward check, relative term
FB_BETA = 0.5  # forward-backward check, absolute term in (1/4-grid pixels)^2


def decode_resized(path: Path, size: tuple[int, int]) -> np.ndarray:
    """All frames of ``path`` as (N, h, w, 3) uint8 RGB at ``size`` = (h, w).

    Raises:
        VidsegError: the file cannot be opened or decoded, or holds no video frame.
    """
    h, w = size
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                frames.append(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR))
    except (av.error.FFmpegError, IndexError) as exc:
        raise VidsegError(f"cannot decode {path}: {exc}") from exc
    if not frames:
        raise VidsegError(f"no video frames in {path}")
    return np.stack(frames)


def consistent_pixels(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Forward-backward check: (h, w) bool, True where the backward flow (2, h, w) of a pixel
    lands inside the frame and the forward flow there brings it back (not occluded)."""
    h, w = backward.shape[1:]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    qx, qy = gx + backward[0], gy + backward[1]
    back = np.stack(
        [
            cv2.remap(forward[c], qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for c in (0, 1)
        ]
    )
    error = ((backward + back) ** 2).sum(0)
    scale = (backward**2).sum(0) + (back**2).sum(0)
    inside = (qx >= 0) & (qx <= w - 1) & (qy >= 0) & (qy <= h - 1)
    return inside & (error <= FB_ALPHA * scale + FB_BETA)


@dataclass(frozen=True)
class VideoClips:
    """Unlabelled videos in memory with the flow between consecutive frames.

    Per video ``i`` (all frames at one size (H, W), multiples of ``FLOW_STRIDE``):
    ``frames[i]`` (N, H, W, 3) uint8 RGB; ``flows[i]`` (N - 1, 2, H/4, W/4) float32, entry
    ``t - 1`` the backward flow of frame t to frame t - 1 (``flow[:, y, x] = (dx, dy)`` in 1/4
    grid pixels: frame t at (x, y) shows what frame t - 1 shows at (x + dx, y + dy));
    ``valid[i]`` (N - 1, H/4, W/4) bool, the forward-backward check of that flow.
    """

    names: tuple[str, ...]
    frames: tuple[np.ndarray, ...]
    flows: tuple[np.ndarray, ...]
    valid: tuple[np.ndarray, ...]

    @classmethod
    def load(cls, folder: str | Path, size: tuple[int, int]) -> VideoClips:
        """Decode every video of ``folder`` (``VIDEO_SUFFIXES``, name order) at ``size`` = (H, W)
        and compute its flows.

        Raises:
            VidsegError: no such folder, no video in it, ``size`` not a multiple of
                ``FLOW_STRIDE``, or a video that cannot be decoded.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise VidsegError(f"--consistency-videos: no folder {folder}")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not paths:
            raise VidsegError(
                f"--consistency-videos: no video ({', '.join(VIDEO_SUFFIXES)}) in {folder}"
            )
        if size[0] % FLOW_STRIDE or size[1] % FLOW_STRIDE:
            raise VidsegError(f"video size {size} must be a multiple of {FLOW_STRIDE}")
        grid = (size[0] // FLOW_STRIDE, size[1] // FLOW_STRIDE)
        dis = cv2.DISOpticalFlow_create(DIS_PRESET)
        frames, flows, valid = [], [], []
        for path in paths:
            video = decode_resized(path, size)
            backward = [dis_flow(a, b, grid, dis) for a, b in zip(video[:-1], video[1:])]
            forward = [dis_flow(b, a, grid, dis) for a, b in zip(video[:-1], video[1:])]
            frames.append(video)
            flows.append(np.stack(backward) if backward else np.zeros((0, 2, *grid), np.float32))
            valid.append(
                np.stack([consistent_pixels(b, f) for b, f in zip(backward, forward)])
                if backward
                else np.zeros((0, *grid), bool)
            )
            logger.info(
                "%s: %d frames at %dx%d, %.0f%% of pixels pass the flow check",
                path.name,
                len(video),
                size[1],
                size[0],
                100 * valid[-1].mean() if backward else 0,
            )
        return cls(tuple(p.name for p in paths), tuple(frames), tuple(flows), tuple(valid))

    def sample(
        self, batch: int, length: int, crop: tuple[int, int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``batch`` random runs of ``length`` consecutive frames, each in one random ``crop``
        window (offsets on the flow grid): frames (B, T, h, w, 3) uint8, flows
        (B, T - 1, 2, h/4, w/4) float32 and valid (B, T - 1, h/4, w/4) bool, where a pixel is
        also invalid when its flow leaves the crop.

        Raises:
            VidsegError: no video has ``length`` frames, or ``crop`` is larger than the frames
                or not a multiple of ``FLOW_STRIDE``.
        """
        height, width = self.frames[0].shape[1:3]
        h, w = crop
        if h > height or w > width or h % FLOW_STRIDE or w % FLOW_STRIDE:
            raise VidsegError(
                f"video crop {crop} must fit {height}x{width} and be a multiple of {FLOW_STRIDE}"
            )
        starts = np.array([max(len(f) - length + 1, 0) for f in self.frames])
        if not starts.sum():
            raise VidsegError(f"no consistency video has {length} frames")
        h4, w4 = h // FLOW_STRIDE, w // FLOW_STRIDE
        gx, gy = np.meshgrid(np.arange(w4), np.arange(h4))
        out_frames, out_flows, out_valid = [], [], []
        for _ in range(batch):
            i = rng.choice(len(self.frames), p=starts / starts.sum())  # every start equally
            s = int(rng.integers(starts[i]))
            y4 = int(rng.integers((height - h) // FLOW_STRIDE + 1))
            x4 = int(rng.integers((width - w) // FLOW_STRIDE + 1))
            y, x = y4 * FLOW_STRIDE, x4 * FLOW_STRIDE
            flow = self.flows[i][s : s + length - 1, :, y4 : y4 + h4, x4 : x4 + w4]
            qx, qy = gx + flow[:, 0], gy + flow[:, 1]
            inside = (qx >= 0) & (qx <= w4 - 1) & (qy >= 0) & (qy <= h4 - 1)
            out_frames.append(self.frames[i][s : s + length, y : y + h, x : x + w])
            out_flows.append(flow)
            out_valid.append(self.valid[i][s : s + length - 1, y4 : y4 + h4, x4 : x4 + w4] & inside)
        return np.stack(out_frames), np.stack(out_flows), np.stack(out_valid)
