"""Brush-stroke inpainting masks: coverage, determinism, white holes, the H/W swap fix."""
import numpy as np

from adacode_jax.data import masks


def test_coverage_within_the_generators_range():
    cov = np.array([masks.brush_stroke_mask(np.random.default_rng(i), 256, 256).mean()
                    for i in range(300)])
    # Smallest possible mask: one stroke of width 12 (>= one disc of diameter 12 = 113 px,
    # 0.17%); strokes never fill the image. Over 2000 draws the mean is 0.316, median 0.31,
    # 5th/95th percentiles 0.07/0.61.
    assert cov.min() > 113 / 256**2
    assert cov.max() < 0.95
    assert 0.27 < cov.mean() < 0.36
    assert 0.03 < np.percentile(cov, 5) < 0.12 and 0.5 < np.percentile(cov, 95) < 0.72


def test_mask_is_binary_float_hwc_and_seeded():
    a = masks.brush_stroke_mask(np.random.default_rng(5), 96, 128)
    b = masks.brush_stroke_mask(np.random.default_rng(5), 96, 128)
    c = masks.brush_stroke_mask(np.random.default_rng(6), 96, 128)
    assert a.shape == (96, 128, 1) and a.dtype == np.float32
    assert set(np.unique(a)) == {0.0, 1.0}
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


def test_strokes_cover_the_full_height_of_tall_images():
    # The reference swaps H and W: on a 256 x 64 (H x W) image its strokes stay within the top
    # ~104 rows (y clipped to 64, plus half the widest line). Ours reach the bottom half.
    m = np.mean([masks.brush_stroke_mask(np.random.default_rng(i), 256, 64) for i in range(100)],
                axis=0)
    assert m[128:].mean() > 0.1
    assert m.shape == (256, 64, 1)


def test_holes_are_white_and_the_rest_untouched():
    rng = np.random.default_rng(0)
    img = rng.random((64, 64, 3)).astype(np.float32)
    mask = masks.brush_stroke_mask(rng, 64, 64)
    out = masks.apply_mask(img, mask)
    hole = mask[..., 0] == 1
    assert hole.any() and (~hole).any()
    np.testing.assert_array_equal(out[hole], 1.0)
    np.testing.assert_array_equal(out[~hole], img[~hole])
