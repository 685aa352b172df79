"""Crisp label upsampling (engine/upsample.py) against the dense arg-max of bilinear logits."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vidseg.engine.upsample import GraphOutputs, upsample


def dense_reference(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Every class upsampled bilinearly (cv2, pixel centres aligned, clamped), then arg-max."""
    planes = [cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in logits]
    return np.stack(planes).argmax(0).astype(np.uint8)


def smooth_logits(rng: np.random.Generator, classes: int, h: int, w: int) -> np.ndarray:
    """Logits with regions and edges like a segmentation net's: noise blurred, then scaled."""
    noise = rng.standard_normal((classes, h, w)).astype(np.float32)
    return np.stack([cv2.GaussianBlur(c, (0, 0), 2.0) * 8 for c in noise])


def outputs(logits: np.ndarray, with_logits: bool = True) -> GraphOutputs:
    labels = logits.argmax(0).astype(np.uint8)
    return GraphOutputs(labels, None, logits if with_logits else None)


@pytest.mark.parametrize("size", [(720, 1280), (1080, 1920), (257, 353), (64, 88), (65, 90)])
def test_two_class_logits_match_the_dense_arg_max_exactly(size: tuple[int, int]) -> None:
    """With two classes every cell has at most two labels, so nothing is approximated: the
    result equals the dense computation pixel for pixel, borders included."""
    logits = smooth_logits(np.random.default_rng(0), 2, 64, 88)
    height, width = size
    labels, _ = upsample(outputs(logits), height, width)
    assert labels.shape == size and labels.dtype == np.uint8
    assert np.array_equal(labels, dense_reference(logits, height, width))


@pytest.mark.parametrize("seed", range(3))
def test_many_classes_agree_with_the_dense_arg_max(seed: int) -> None:
    """Eleven classes: cells with three or four labels take the arg-max over their corner
    labels; the rare pixel where an absent class would win inside a cell may differ."""
    logits = smooth_logits(np.random.default_rng(seed), 11, 64, 88)
    labels, _ = upsample(outputs(logits), 720, 1280)
    ref = dense_reference(logits, 720, 1280)
    assert (labels == ref).mean() > 0.99  # 99.87 % on real logits of a 720p clip
    nearest, _ = upsample(outputs(logits, with_logits=False), 720, 1280)
    assert (nearest == ref).mean() < (labels == ref).mean() - 0.01  # crisp is much closer


def test_edges_are_smooth_not_blocks() -> None:
    """A diagonal edge at stride 16: nearest neighbour draws a staircase of 16-pixel steps, the
    crisp path a line whose position moves by about one pixel per row."""
    h, w, scale = 8, 8, 16
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    d = (x - y * 0.5) - 2.3  # signed distance to a slanted line
    logits = np.stack([-d, d])
    labels, _ = upsample(outputs(logits), h * scale, w * scale)
    edge = (labels == 0).sum(1)[scale:-scale]  # per row: how many pixels left of the edge
    steps = np.abs(np.diff(edge))
    assert steps.max() <= 2
    nearest, _ = upsample(outputs(logits, with_logits=False), h * scale, w * scale)
    assert np.abs(np.diff((nearest == 0).sum(1))).max() >= scale


def test_uniform_labels_and_fallbacks() -> None:
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 16, 24)).astype(np.float32)
    logits[3] += 100  # class 3 everywhere: no mixed cell, the answer is exact
    labels, _ = upsample(outputs(logits), 100, 150)
    assert (labels == 3).all()
    # downscaling, or no logits: nearest neighbour, as before
    logits = smooth_logits(rng, 4, 16, 24)
    for size, with_logits in [((8, 12), True), ((64, 96), False)]:
        got, _ = upsample(outputs(logits, with_logits), *size)
        expected = cv2.resize(
            logits.argmax(0).astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST
        )
        assert np.array_equal(got, expected)


def test_scores_are_bilinear_and_same_size_is_untouched() -> None:
    rng = np.random.default_rng(2)
    logits = smooth_logits(rng, 3, 16, 24)
    scores = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    out = GraphOutputs(logits.argmax(0).astype(np.uint8), scores, logits)
    _, up = upsample(out, 64, 96)
    assert np.array_equal(up, cv2.resize(scores, (96, 64), interpolation=cv2.INTER_LINEAR))
    labels, same = upsample(out, 16, 24)
    assert labels is out.labels and same is scores
