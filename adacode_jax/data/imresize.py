"""MATLAB-style bicubic ``imresize`` (with antialiasing), as BSRGAN's ``imresize_np``.

MATLAB's resize maps output pixel ``i`` (1-based) to input position ``u = i/s + (1 - 1/s)/2``
and sums the cubic kernel (a = -0.5) over the neighbouring input pixels; when shrinking
(s < 1) with antialiasing the kernel is stretched by 1/s and scaled by s. Borders are
handled by symmetric reflection (edge pixel repeated). Each axis is a small (out, in)
weight matrix, so an image resize is two matrix products.
"""
from __future__ import annotations

import functools
import math

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@functools.lru_cache(maxsize=64)
def resize_taps(in_len: int, out_len: int, scale: float,
                antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """1-D MATLAB bicubic resize by ``scale`` as taps: output i = sum_t w[i, t] * x[j[i, t]].

    Returns:
      (j, w): (out_len, taps) int64 input indices (0-based, reflected into range) and float64
      weights (each row sums to 1).
    """
    kernel_width = 4.0
    shrink_aa = scale < 1 and antialias
    if shrink_aa:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input positions
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if shrink_aa else _cubic(dist)
    w /= w.sum(axis=1, keepdims=True)
    keep = np.abs(w).max(axis=0) > 0  # drop tap columns that are zero for every output
    # Symmetric reflection of out-of-range positions into [1, in_len] (period 2 * in_len).
    j = (idx - 1).astype(np.int64) % (2 * in_len)
    j = np.where(j >= in_len, 2 * in_len - 1 - j, j)
    return j[:, keep], w[:, keep]


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The same 1-D resize as a dense (out_len, in_len) float64 matrix."""
    j, w = resize_taps(in_len, out_len, scale, antialias)
    m = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(m, (np.repeat(np.arange(out_len), j.shape[1]), j.ravel()), w.ravel())
    return m


def _resize_axis0(x: np.ndarray, j: np.ndarray, w: np.ndarray) -> np.ndarray:
    w = w.astype(np.float32)
    extra = (slice(None),) + (None,) * (x.ndim - 1)
    out = x[j[:, 0]] * w[:, 0][extra]
    for t in range(1, j.shape[1]):
        out += x[j[:, t]] * w[:, t][extra]
    return out


def imresize(image: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """Resizes an (H, W, C) float image by ``scale`` like MATLAB ``imresize(img, scale)``.

    The output size is ``ceil(H * scale), ceil(W * scale)`` (MATLAB's rule). Values are not
    clipped (bicubic can overshoot [0, 1]). Computed as gathers of the few non-zero taps (no
    BLAS, so it stays on one core).
    """
    h, w = image.shape[:2]
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    x = np.asarray(image, dtype=np.float32)
    y = _resize_axis0(x, *resize_taps(h, out_h, float(scale), antialias))
    y = _resize_axis0(y.swapaxes(0, 1), *resize_taps(w, out_w, float(scale), antialias))
    return np.ascontiguousarray(y.swapaxes(0, 1))
