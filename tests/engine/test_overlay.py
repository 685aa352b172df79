"""Palette colouring and blending."""

from __future__ import annotations

import numpy as np

from vidseg.engine.overlay import blend, colorize, palette_lut


def test_colorize_matches_palette_and_blacks_out_unknown_ids() -> None:
    palette = [(255, 0, 0), (0, 255, 0), (1, 2, 3)]
    labels = np.array([[0, 1], [2, 11]], np.uint8)  # 11 = void, beyond the palette
    rgb = colorize(labels, palette_lut(palette))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(rgb[0, 1], (0, 255, 0))
    np.testing.assert_array_equal(rgb[1, 0], (1, 2, 3))
    np.testing.assert_array_equal(rgb[1, 1], (0, 0, 0))


def test_blend_weights() -> None:
    image = np.full((3, 4, 3), 100, np.uint8)
    labels = np.zeros((3, 4), np.uint8)
    lut = palette_lut([(200, 0, 50)])
    out = blend(image, labels, lut, 0.25)
    np.testing.assert_array_equal(out[0, 0], (125, 75, 88))  # 0.75*100 + 0.25*c, rounded
    np.testing.assert_array_equal(blend(image, labels, lut, 0.0), image)
