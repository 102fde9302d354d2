"""Blur kernels of the BSRGAN degradation model, for current NumPy/SciPy.

The reference (BSRGAN ``utils_blindsr``) builds these with ``scipy.finfo`` and
``scipy.interpolate.interp2d``, both gone from current SciPy
(docs/official.md#bsrgan-degradation). Here:

- :func:`gaussian_kernel` is MATLAB ``fspecial('gaussian')`` with ``np.finfo``;
- :func:`anisotropic_gaussian_kernel` evaluates the same 2-D normal density as the
  reference's per-pixel ``scipy.stats.multivariate_normal.pdf`` loop, vectorised (the
  normalising constant cancels when the kernel is normalised to sum 1);
- :func:`shift_kernel` reproduces ``interp2d(kind='linear')`` on the kernel's own grid,
  which is exact bilinear interpolation, as two small interpolation matrices.

All kernels are float64, square, odd-sized and sum to 1. Convolution with them is in
:mod:`adacode_jax.data.degradations`.
"""
from __future__ import annotations

import numpy as np


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Isotropic Gaussian ``fspecial('gaussian', size, sigma)``: (size, size), sums to 1.

    As in MATLAB, values below ``eps * max`` are zeroed; ``sigma = 0`` gives a delta kernel.
    """
    r = (size - 1) / 2.0
    x, y = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    if not np.isfinite(h).all():  # sigma == 0: exp(-0/0) at the centre
        h = ((x == 0) & (y == 0)).astype(np.float64)
    h[h < np.finfo(np.float64).eps * h.max()] = 0.0
    s = h.sum()
    return h / s if s != 0 else h


def gaussian_factors(size: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """1-D factors (column, row) with ``outer(col, row)`` = :func:`gaussian_kernel` (size, sigma).

    Equal up to MATLAB's zeroing of entries below eps * max (relative size < 2.3e-16), which
    the separable form keeps. Convolving with the factors is ~10x faster than with the kernel.
    """
    r = (size - 1) / 2.0
    t = np.arange(-r, r + 1)
    if sigma == 0:
        g = (t == 0).astype(np.float64)
    else:
        g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    g /= g.sum()
    return g, g.copy()


def anisotropic_covariance(theta: float, l1: float, l2: float) -> np.ndarray:
    """The reference's 2x2 covariance ``V diag(l1, l2) V^-1`` with V a reflection by theta."""
    v = np.array([np.cos(theta), np.sin(theta)])
    vm = np.array([[v[0], v[1]], [v[1], -v[0]]])
    return vm @ np.diag([l1, l2]) @ np.linalg.inv(vm)


def anisotropic_gaussian_kernel(size: int, theta: float, l1: float, l2: float) -> np.ndarray:
    """Anisotropic Gaussian kernel (size, size) with principal variances l1, l2 at angle theta.

    Pixel (row y, column x) holds the density at ``(x - c, y - c)`` with ``c = (size - 1) / 2``,
    matching the reference's ``pdf([cx, cy])`` grid. Variances are floored at 1e-6 so a draw
    of exactly 0 gives a (near) delta kernel instead of a singular covariance.
    """
    cov = anisotropic_covariance(theta, max(l1, 1e-6), max(l2, 1e-6))
    prec = np.linalg.inv(cov)
    c = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    cx, cy = np.meshgrid(c, c)  # cx varies along columns, cy along rows
    q = prec[0, 0] * cx * cx + (prec[0, 1] + prec[1, 0]) * cx * cy + prec[1, 1] * cy * cy
    k = np.exp(-0.5 * (q - q.min()))  # shifting q only rescales k, removed by normalisation
    return k / k.sum()


def _linear_shift_matrix(n: int, shift: float) -> np.ndarray:
    """(n, n) matrix sampling a length-n signal linearly at positions clip(i + shift, 0, n-1)."""
    pos = np.clip(np.arange(n, dtype=np.float64) + shift, 0.0, n - 1.0)
    lo = np.minimum(np.floor(pos).astype(np.int64), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    m = np.zeros((n, n), dtype=np.float64)
    rows = np.arange(n)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def _shift(sf: int, upper_left: bool) -> float:
    return (sf - 1) * 0.5 * (1.0 if upper_left else -1.0)


def shift_kernel(kernel: np.ndarray, sf: int, upper_left: bool = True) -> np.ndarray:
    """BSRGAN ``shift_pixel``: resamples a kernel at positions shifted by (sf - 1) / 2.

    Aligns the blur with nearest subsampling ``[::sf]`` (upper-left convention). Positions
    are clipped to the grid, as the reference does before calling ``interp2d``.
    """
    h, w = kernel.shape
    shift = _shift(sf, upper_left)
    return _linear_shift_matrix(h, shift) @ kernel @ _linear_shift_matrix(w, shift).T


def shift_factors(col: np.ndarray, row: np.ndarray, sf: int,
                  upper_left: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shift_kernel` of the separable kernel ``outer(col, row)``, kept separable."""
    shift = _shift(sf, upper_left)
    return _linear_shift_matrix(len(col), shift) @ col, _linear_shift_matrix(len(row), shift) @ row
