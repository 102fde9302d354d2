"""TensorBoard pictures: the CLI's weight-map figure, one colour scale, labelled panels."""
from __future__ import annotations

import cv2
import numpy as np

from adacode_jax.evaluation import visualize


def test_training_weight_maps_share_one_scale_and_fill_the_image_size():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
    maps = rng.normal(size=(3, 16, 16, 3)).astype(np.float32)
    maps[1] *= 5.0                      # the second example spans a wider range
    pics = visualize.training_weight_maps(images, maps, n=2)
    assert pics.dtype == np.uint8 and pics.shape[0] == 2
    lo, hi = visualize.shared_scale(maps[:2])
    # the first example's w0 panel is drawn on the scale of both examples, at 96 px (nearest)
    single = visualize.weight_map_figure(images[0], maps[0], panel=96, columns=5, scale=(lo, hi))
    np.testing.assert_array_equal(pics[0], single)
    own = visualize.weight_map_figure(images[0], maps[0], panel=96, columns=5)
    assert not np.array_equal(pics[0], own)   # its own scale would differ
    expected = cv2.resize(visualize.colorize(maps[0, ..., 0], lo, hi), (96, 96),
                          interpolation=cv2.INTER_NEAREST)
    # panel 2 of the top row: x = gap + (96 + gap), y = label + gap
    y, x = 18 + 4, 4 + 96 + 4
    np.testing.assert_array_equal(pics[0][y:y + 96, x:x + 96], expected)


def test_training_panels_are_labelled_rows_at_gt_size():
    gt = np.full((2, 16, 16, 3), 0.5, np.float32)
    out = np.zeros((2, 16, 16, 3), np.float32)
    lq = np.ones((2, 4, 4, 3), np.float32)
    rows = visualize.training_panels(gt, out, lq)
    assert rows.shape == (2, 18 + 16 + 8, 3 * (16 + 4) + 4, 3)
    body = rows[0, 18 + 4:18 + 4 + 16]
    np.testing.assert_array_equal(body[:, 4:20], 255)          # LQ (white) upsampled
    np.testing.assert_array_equal(body[:, 24:40], 0)           # output (black)
    np.testing.assert_array_equal(body[:, 44:60], 128)         # GT
    assert (rows[0, :18] < 255).any()                          # a label is drawn
