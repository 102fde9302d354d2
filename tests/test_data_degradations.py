"""BSRGAN degradation: kernels against SciPy oracles, sizes for every op order, branch
probabilities, and statistics of each branch on a real photograph."""
import collections
import itertools
import os

import numpy as np
from PIL import Image
import pytest
import scipy.interpolate
import scipy.ndimage
import scipy.stats
import skimage

from adacode_jax.data import degradations as deg
from adacode_jax.data import imresize
from adacode_jax import images as io
from adacode_jax.data import kernels

SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")


@pytest.fixture(scope="module")
def photo():
    """A 256x256 crop of the astronaut photograph, float32 RGB in [0, 1]."""
    return io.read_image(os.path.join(SKIMAGE_DATA, "astronaut.png"))[64:320, 128:384].copy()


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("shape,ksize", [((64, 48), 3), ((64, 48), 7), ((40, 40), 25),
                                         ((8, 8), 25), ((5, 9), 7)])
def test_convolve_mirror_equals_scipy_convolve_mirror(shape, ksize):
    rng = np.random.default_rng(ksize)
    img = rng.random((*shape, 3)).astype(np.float32)
    k = rng.random((ksize, ksize))  # asymmetric: checks the kernel-flip convention
    k /= k.sum()
    want = scipy.ndimage.convolve(img, k[:, :, None], mode="mirror")
    np.testing.assert_allclose(deg.convolve_mirror(img, k), want, atol=2e-6)


def test_flip_convention_with_a_shift_kernel():
    img = np.zeros((9, 9, 3), np.float32)
    img[4, 4] = 1.0
    k = np.zeros((3, 3))
    k[1, 2] = 1.0  # convolution with this kernel moves content one pixel right
    out = deg.convolve_mirror(img, k)
    assert out[4, 5, 0] == 1.0 and out.sum() == 3.0


def _fspecial_gaussian_oracle(size, sigma):
    """MATLAB fspecial('gaussian') written as the reference does (with np.finfo)."""
    siz = (size - 1) / 2.0
    x, y = np.meshgrid(np.arange(-siz, siz + 1), np.arange(-siz, siz + 1))
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


@pytest.mark.parametrize("size,sigma", [(7, 0.5), (15, 2.4), (25, 0.1), (25, 2.4)])
def test_gaussian_kernel_and_factors(size, sigma):
    k = kernels.gaussian_kernel(size, sigma)
    np.testing.assert_allclose(k, _fspecial_gaussian_oracle(size, sigma), rtol=1e-12, atol=1e-15)
    col, row = kernels.gaussian_factors(size, sigma)
    np.testing.assert_allclose(np.outer(col, row), k, atol=1e-15)
    assert k.shape == (size, size) and abs(k.sum() - 1) < 1e-12


def test_gaussian_sigma_zero_is_a_delta():
    k = kernels.gaussian_kernel(7, 0.0)
    assert k[3, 3] == 1.0 and k.sum() == 1.0
    np.testing.assert_array_equal(np.outer(*kernels.gaussian_factors(7, 0.0)), k)


@pytest.mark.parametrize("size,theta,l1,l2", [(7, 0.3, 2.0, 5.0), (15, 2.0, 0.5, 8.0),
                                              (25, 1.1, 7.9, 0.2), (11, 0.0, 3.0, 3.0)])
def test_anisotropic_kernel_matches_reference_pdf_loop(size, theta, l1, l2):
    # The reference's gm_blur_kernel: pdf at [cx, cy] per pixel, then normalised.
    cov = kernels.anisotropic_covariance(theta, l1, l2)
    center = size / 2.0 + 0.5
    want = np.zeros((size, size))
    for y in range(size):
        for x in range(size):
            want[y, x] = scipy.stats.multivariate_normal.pdf([x - center + 1, y - center + 1],
                                                             mean=[0, 0], cov=cov)
    want /= want.sum()
    np.testing.assert_allclose(kernels.anisotropic_gaussian_kernel(size, theta, l1, l2), want,
                               rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("sf", [2, 3, 4])
def test_shift_kernel_is_bilinear_interpolation_on_clipped_grid(sf):
    # interp2d(kind='linear') on a regular grid is bilinear interpolation; RegularGridInterpolator
    # is an independent implementation of it.
    k = kernels.gaussian_kernel(25, 1.7) * (1 + np.random.default_rng(sf).random((25, 25)))
    shift = (sf - 1) * 0.5
    grid = np.arange(25.0)
    pos = np.clip(grid + shift, 0, 24)
    yy, xx = np.meshgrid(pos, pos, indexing="ij")
    interp = scipy.interpolate.RegularGridInterpolator((grid, grid), k, method="linear")
    want = interp(np.stack([yy, xx], -1))
    np.testing.assert_allclose(kernels.shift_kernel(k, sf), want, atol=1e-15)
    sep = kernels.shift_factors(*kernels.gaussian_factors(25, 1.7), sf)
    np.testing.assert_allclose(np.outer(*sep), kernels.shift_kernel(kernels.gaussian_kernel(25, 1.7), sf),
                               atol=1e-15)


def test_imresize_half_matches_matlab_taps_and_pil_interior():
    j, w = imresize.resize_taps(64, 32, 0.5)
    # MATLAB's bicubic antialiased x0.5 filter.
    np.testing.assert_allclose(w[10], [-0.01171875, -0.03515625, 0.11328125, 0.43359375,
                                       0.43359375, 0.11328125, -0.03515625, -0.01171875])
    # Output 0 reads input positions -3..4, reflected with the edge repeated (MATLAB "symmetric").
    np.testing.assert_array_equal(j[0], [2, 1, 0, 0, 1, 2, 3, 4])
    x = np.random.default_rng(0).random((64, 48)).astype(np.float32)
    ours = imresize.imresize(x[:, :, None], 0.5)[:, :, 0]
    # PIL's antialiased bicubic uses the same kernel; only its border rule differs.
    pil = np.asarray(Image.fromarray(x, mode="F").resize((24, 32), Image.BICUBIC))
    assert ours.shape == (32, 24)
    np.testing.assert_allclose(ours[3:-3, 3:-3], pil[3:-3, 3:-3], atol=1e-6)
    np.testing.assert_allclose(imresize.imresize(np.full((10, 6, 3), 0.3, np.float32), 0.5), 0.3,
                               atol=1e-6)


# ----------------------------------------------------------------------------- sizes and order


def test_op2_always_before_op3():
    for order in itertools.permutations(range(7)):
        fixed = deg.constrain_order(order)
        assert sorted(fixed) == list(range(7)) and fixed.index(2) < fixed.index(3)
        if order.index(2) < order.index(3):
            assert fixed == list(order)


@pytest.mark.parametrize("sf", [2, 4])
def test_lr_size_is_gt_over_sf_for_every_op_order(sf):
    h, w = 64, 96
    img = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
    for n, order in enumerate(itertools.permutations(range(7))):
        plan = deg.sample_bsrgan_plan(np.random.default_rng(n), (h, w), sf, order=order)
        assert deg.plan_output_size(plan, (h, w)) == (h // sf, w // sf), order
        if n % 97 == 0:  # run a spread of them for real
            lq = deg.apply_plan(img, plan)
            assert lq.shape == (h // sf, w // sf, 3) and lq.dtype == np.float32


def test_forty_seeds_sf4_all_run(photo):
    # The reference fails 34 of 40 such calls on SciPy 1.17 (docs/official.md#bsrgan-degradation).
    for seed in range(40):
        lq = deg.degrade_bsrgan(photo, 4, np.random.default_rng(seed))
        assert lq.shape == (64, 64, 3) and lq.dtype == np.float32
        assert lq.min() >= 0 and lq.max() <= 1
        # The final JPEG leaves 8-bit values.
        np.testing.assert_allclose(lq * 255, np.round(lq * 255), atol=1e-4)


def test_same_seed_same_bytes_other_seed_differs(photo):
    a = deg.degrade_bsrgan(photo, 4, np.random.default_rng(7))
    b = deg.degrade_bsrgan(photo, 4, np.random.default_rng(7))
    c = deg.degrade_bsrgan(photo, 4, np.random.default_rng(8))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_non_multiple_of_sf_is_rejected():
    with pytest.raises(ValueError, match="mod-crop"):
        deg.sample_bsrgan_plan(np.random.default_rng(0), (63, 64), 2)


# ----------------------------------------------------------------------------- probabilities


def test_branch_frequencies_match_the_reference():
    n = 2500
    c = collections.Counter()
    qualities, levels, ksizes = set(), [], set()
    for i in range(n):
        plan = deg.sample_bsrgan_plan(np.random.default_rng(i), (64, 64), 4)
        kinds = [type(op).__name__ for op in plan]
        first = plan[0]
        prehalved = isinstance(first, deg.MatlabHalve) or (
            isinstance(first, deg.Resize) and first.size == (32, 32))
        c["prehalve"] += prehalved
        c["prehalve_matlab"] += isinstance(first, deg.MatlabHalve)
        c["blursub"] += "BlurSubsample" in kinds
        c["jpeg"] += kinds.count("Jpeg")
        assert isinstance(plan[-1], deg.Jpeg)  # the final JPEG is always there
        for op in plan:
            if isinstance(op, deg.Blur):
                c["blur"] += 1
                c["aniso"] += op.kind == "anisotropic"
                ksizes.add(op.kernel.shape[0])
            elif isinstance(op, deg.GaussianNoise):
                c[op.kind] += 1
                levels.append(op.sigma * 255)
            elif isinstance(op, deg.Jpeg):
                qualities.add(op.quality)
        assert kinds.count("GaussianNoise") == 1 and kinds.count("Blur") == 2
    assert abs(c["prehalve"] / n - 0.25) < 0.035
    assert abs(c["prehalve_matlab"] / max(c["prehalve"], 1) - 0.5) < 0.07
    assert abs(c["blursub"] / n - 0.25) < 0.035  # op 2's second branch
    assert abs(c["jpeg"] / n - 1.9) < 0.03  # op 5 with p 0.9 plus the final one
    assert abs(c["aniso"] / c["blur"] - 0.5) < 0.03
    assert abs(c["colour"] / n - 0.4) < 0.04 and abs(c["grey"] / n - 0.4) < 0.04
    assert abs(c["correlated"] / n - 0.2) < 0.03
    assert ksizes == set(range(7, 26, 2))
    assert min(qualities) == 30 and max(qualities) == 95
    assert round(min(levels)) == 2 and round(max(levels)) == 25


# ----------------------------------------------------------------------------- branch statistics


def _high_freq_energy(x):
    """Mean squared Laplacian: energy of the finest detail."""
    lap = x[1:-1, 1:-1] * 4 - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return float((lap**2).mean())


@pytest.mark.parametrize("blur", [
    deg.Blur(kernels.anisotropic_gaussian_kernel(15, 0.7, 6.0, 1.0), "anisotropic"),
    deg.Blur(kernels.gaussian_kernel(15, 2.0), "isotropic", kernels.gaussian_factors(15, 2.0)),
])
def test_blur_lowers_high_frequencies(photo, blur):
    out = blur(photo)
    assert out.shape == photo.shape
    assert _high_freq_energy(out) < 0.1 * _high_freq_energy(photo)
    assert abs(out.mean() - photo.mean()) < 2e-3  # a normalised kernel keeps the brightness


def test_anisotropic_blur_is_directional():
    img = np.random.default_rng(0).random((128, 128, 3)).astype(np.float32)
    # l1 along theta = 0 (x axis) large, l2 small: smooths along rows, not along columns.
    out = deg.Blur(kernels.anisotropic_gaussian_kernel(21, 0.0, 8.0, 0.05), "anisotropic")(img)
    dx = np.abs(np.diff(out, axis=1)).mean()
    dy = np.abs(np.diff(out, axis=0)).mean()
    assert dy > 3 * dx


@pytest.mark.parametrize("kind", ["colour", "grey", "correlated"])
def test_noise_raises_variance_with_the_right_structure(kind):
    flat = np.full((256, 256, 3), 0.5, np.float32)
    level = 12 / 255
    cov = None
    if kind == "correlated":
        u = np.linalg.qr(np.random.default_rng(1).random((3, 3)))[0]
        cov = np.abs((25 / 255) ** 2 * (u.T @ np.diag([0.9, 0.5, 0.1]) @ u))
    out = deg.GaussianNoise(kind, level, cov, seed=3)(flat)
    d = (out - 0.5).reshape(-1, 3)
    emp = np.cov(d.T)
    if kind == "colour":
        np.testing.assert_allclose(np.sqrt(np.diag(emp)), level, rtol=0.03)
        assert np.abs(np.corrcoef(d.T)[np.triu_indices(3, 1)]).max() < 0.02
    elif kind == "grey":
        np.testing.assert_allclose(np.sqrt(np.diag(emp)), level, rtol=0.03)
        np.testing.assert_allclose(np.corrcoef(d.T), 1.0, atol=1e-6)
    else:
        _, s, vh = np.linalg.svd(cov)  # numpy's multivariate_normal construction
        np.testing.assert_allclose(emp, vh.T @ np.diag(s) @ vh, atol=0.04 * np.abs(cov).max())
    assert out.min() >= 0 and out.max() <= 1


def _blockiness(x):
    """Mean jump across 8x8 block borders divided by the mean jump elsewhere (1 = no blocks)."""
    g = np.abs(np.diff(x.mean(axis=2), axis=1))
    cols = np.arange(g.shape[1])
    border = (cols % 8) == 7
    return float(g[:, border].mean() / g[:, ~border].mean())


def test_jpeg_leaves_8x8_blocking(photo):
    smooth = scipy.ndimage.gaussian_filter(photo, (3, 3, 0)).astype(np.float32)
    out = deg.Jpeg(30)(smooth)
    assert _blockiness(smooth) < 1.1
    assert _blockiness(out) > 1.5
    assert out.dtype == np.float32 and out.shape == smooth.shape


def test_downsample_branches(photo):
    k = kernels.shift_kernel(kernels.gaussian_kernel(25, 1.0), 2)
    sub = deg.BlurSubsample(k / k.sum(), 2)(photo)
    assert sub.shape == (128, 128, 3)
    # A constant image stays constant through blur + nearest subsampling.
    np.testing.assert_allclose(deg.BlurSubsample(k / k.sum(), 2)(np.full((32, 32, 3), 0.25, np.float32)),
                               0.25, atol=1e-6)
    res = deg.Resize((50, 70), 3)(photo)
    assert res.shape == (50, 70, 3) and res.min() >= 0 and res.max() <= 1
    half = deg.MatlabHalve()(photo)
    assert half.shape == (128, 128, 3) and half.min() >= 0 and half.max() <= 1
