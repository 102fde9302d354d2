"""BSRGAN blind degradation (Zhang et al. 2021) as used by AdaCode
(docs/official.md#bsrgan-degradation).

``degrade_bsrgan(gt, sf, rng)`` turns a float32 RGB (H, W, 3) image in [0, 1] into its
low-quality version of size (H/sf, W/sf, 3), following the reference's
``degradation_bsrgan`` step by step and with its probabilities:

1. (sf = 4 only, p = 0.25) halve the image first, half the time with ``cv2.resize``
   (linear / cubic / area), otherwise with MATLAB antialiased bicubic; then continue at sf = 2.
2. Run ops 0..6 in random order, op 2 always before op 3:
   0, 1 blur (anisotropic or isotropic Gaussian); 2 random downsample (p = 0.75 resize by
   1/U(1, 2 sf), else shifted Gaussian blur + nearest ``[::sf]``); 3 resize to the target size
   recorded before op 2; 4 Gaussian noise (colour / grey / channel-correlated); 5 JPEG with
   p = 0.9; 6 camera ISP noise (skipped, as in the reference: ``isp_model=None``).
3. Always a final JPEG.

Differences from the reference, all deliberate:

- Randomness comes from one ``np.random.Generator`` (the reference mixes Python ``random`` and
  the global ``np.random``), so a Grain ``random_map`` can seed each record.
- The random choices are drawn first into a *plan* (a tuple of ops, :func:`sample_bsrgan_plan`)
  and then applied (:func:`apply_plan`); tests build or inspect plans to exercise each branch.
- No ``scipy.finfo`` / ``interp2d`` (see :mod:`adacode_jax.data.kernels`).
- Blurs use ``cv2.filter2D`` with BORDER_REFLECT_101 and the flipped kernel, which equals the
  reference's ``scipy.ndimage.convolve(mode='mirror')`` to float32 rounding and is ~20x faster;
  the Gaussian kernels of the isotropic blur and of op 2 are separable and use
  ``cv2.sepFilter2D`` (another ~10x).
- Noise draws float32 normals directly; the correlated noise applies numpy's own SVD
  construction of ``multivariate_normal`` (same distribution, also for the non-PSD
  ``|cov|`` the reference builds) without its warning.
- The input must already be a multiple of sf (the reference's mod-crop swaps H and W, harmless
  only for square images); callers mod-crop.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import cv2
import numpy as np
import scipy.linalg

from adacode_jax.data import imresize as imresize_lib
from adacode_jax.data import kernels

# cv2 interpolation codes the reference draws from: 1 LINEAR, 2 CUBIC, 3 AREA.
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA)

PREHALVE_PROB = 0.25  # sf = 4: probability of halving first ("scale2_prob")
JPEG_PROB = 0.9  # op 5
RESIZE_DOWNSAMPLE_PROB = 0.75  # op 2: resize branch vs shifted-blur + nearest branch
NOISE_LEVEL_RANGE = (2, 25)  # op 4: noise level in 1/255, both inclusive
JPEG_QUALITY_RANGE = (30, 95)  # both inclusive

Size = tuple[int, int]  # (height, width)


def convolve_mirror(image: np.ndarray, kernel: np.ndarray,
                    factors: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``scipy.ndimage.convolve(image, kernel[..., None], mode='mirror')`` for odd square kernels.

    cv2 correlates, so the kernel is flipped; BORDER_REFLECT_101 is scipy's 'mirror'. With
    ``factors`` = (col, row), ``kernel == outer(col, row)`` and the separable filter is used.
    """
    if factors is not None:
        col, row = factors
        return cv2.sepFilter2D(image, -1, np.ascontiguousarray(row[::-1]),
                               np.ascontiguousarray(col[::-1]), borderType=cv2.BORDER_REFLECT_101)
    k = np.ascontiguousarray(kernel[::-1, ::-1])
    return cv2.filter2D(image, -1, k, borderType=cv2.BORDER_REFLECT_101)


@dataclasses.dataclass(frozen=True)
class Blur:
    """Op 0/1: convolve with a normalised kernel (no clip, as the reference).

    ``factors`` (col, row) with ``outer(col, row) == kernel`` select the fast separable path.
    """
    kernel: np.ndarray
    kind: str  # 'anisotropic' or 'isotropic', for inspection only
    factors: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return convolve_mirror(x, self.kernel, self.factors)

    def output_size(self, size: Size) -> Size:
        return size


@dataclasses.dataclass(frozen=True)
class Resize:
    """cv2.resize to (height, width) with a cv2 interpolation code, then clip to [0, 1]."""
    size: Size
    interpolation: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h, w = self.size
        return np.clip(cv2.resize(x, (w, h), interpolation=self.interpolation), 0.0, 1.0)

    def output_size(self, size: Size) -> Size:
        return self.size


@dataclasses.dataclass(frozen=True)
class MatlabHalve:
    """sf = 4 pre-halving, MATLAB antialiased bicubic branch, then clip."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.clip(imresize_lib.imresize(x, 0.5), 0.0, 1.0)

    def output_size(self, size: Size) -> Size:
        return (math.ceil(size[0] / 2), math.ceil(size[1] / 2))


@dataclasses.dataclass(frozen=True)
class BlurSubsample:
    """Op 2, second branch: blur with a shifted Gaussian, keep every ``stride``-th pixel, clip."""
    kernel: np.ndarray
    stride: int
    factors: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = convolve_mirror(x, self.kernel, self.factors)[:: self.stride, :: self.stride]
        return np.clip(y, 0.0, 1.0)

    def output_size(self, size: Size) -> Size:
        return (math.ceil(size[0] / self.stride), math.ceil(size[1] / self.stride))


@dataclasses.dataclass(frozen=True)
class GaussianNoise:
    """Op 4: additive Gaussian noise, then clip.

    kind: 'colour' (independent per channel, std ``sigma``), 'grey' (one map shared by the
    channels, std ``sigma``) or 'correlated' (3-channel normal with covariance ``cov``).
    ``seed`` drives the noise field so that a plan is a pure value.
    """
    kind: str
    sigma: float
    cov: np.ndarray | None
    seed: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        h, w = x.shape[:2]
        if self.kind == "colour":
            n = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(self.sigma)
        elif self.kind == "grey":
            n = rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(self.sigma)
        elif self.kind == "correlated":
            # numpy's multivariate_normal(method='svd'): z @ (sqrt(s)[:, None] * vh).
            _, s, vh = np.linalg.svd(self.cov)
            factor = (np.sqrt(s)[:, None] * vh).astype(np.float32)
            n = (rng.standard_normal((h * w, 3), dtype=np.float32) @ factor).reshape(h, w, 3)
        else:
            raise ValueError(f"unknown noise kind {self.kind!r}")
        return np.clip(x + n, 0.0, 1.0)

    def output_size(self, size: Size) -> Size:
        return size


def jpeg_roundtrip(x: np.ndarray, quality: int) -> np.ndarray:
    """Encodes a float RGB image as 8-bit JPEG (rounded, BGR as cv2 expects) and decodes it."""
    u8 = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[:, :, ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    y = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(y[:, :, ::-1]).astype(np.float32) / np.float32(255.0)


@dataclasses.dataclass(frozen=True)
class Jpeg:
    """Op 5 and the final step: JPEG compression at ``quality``."""
    quality: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return jpeg_roundtrip(x, self.quality)

    def output_size(self, size: Size) -> Size:
        return size


Op = Blur | Resize | MatlabHalve | BlurSubsample | GaussianNoise | Jpeg


def sample_blur(rng: np.random.Generator, sf: int) -> Blur:
    """``add_blur``: p = 0.5 anisotropic (l1, l2 ~ U(0, 4+sf), theta ~ U(0, pi)), else isotropic
    (sigma ~ U(0, 2 + 0.2 sf)); kernel size 2*randint(2, 11)+3, i.e. odd 7..25."""
    if rng.random() < 0.5:
        l1 = (4.0 + sf) * rng.random()
        l2 = (4.0 + sf) * rng.random()
        size = 2 * int(rng.integers(2, 12)) + 3
        theta = rng.random() * np.pi
        return Blur(kernels.anisotropic_gaussian_kernel(size, theta, l1, l2), "anisotropic")
    size = 2 * int(rng.integers(2, 12)) + 3
    sigma = (2.0 + 0.2 * sf) * rng.random()
    return Blur(kernels.gaussian_kernel(size, sigma), "isotropic",
                kernels.gaussian_factors(size, sigma))


def sample_noise(rng: np.random.Generator) -> GaussianNoise:
    """``add_Gaussian_noise(2, 25)``: p 0.4 colour, 0.4 grey, 0.2 channel-correlated noise."""
    level = int(rng.integers(NOISE_LEVEL_RANGE[0], NOISE_LEVEL_RANGE[1] + 1)) / 255.0
    r = rng.random()
    seed = int(rng.integers(2**63))
    if r > 0.6:
        return GaussianNoise("colour", level, None, seed)
    if r < 0.4:
        return GaussianNoise("grey", level, None, seed)
    # Correlated noise always uses L = noise_level2 / 255, not the drawn level (as the reference).
    big_l = NOISE_LEVEL_RANGE[1] / 255.0
    d = np.diag(rng.random(3))
    u = scipy.linalg.orth(rng.random((3, 3)))
    cov = np.abs(big_l**2 * (u.T @ d @ u))
    return GaussianNoise("correlated", level, cov, seed)


def sample_jpeg(rng: np.random.Generator) -> Jpeg:
    return Jpeg(int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1)))


def constrain_order(order: Sequence[int]) -> list[int]:
    """Swaps ops 2 and 3 if 3 comes first (the reference's rule: op 2 before op 3)."""
    order = list(order)
    i2, i3 = order.index(2), order.index(3)
    if i2 > i3:
        order[i2], order[i3] = order[i3], order[i2]
    return order


def sample_bsrgan_plan(rng: np.random.Generator, size: Size, sf: int,
                       order: Sequence[int] | None = None) -> tuple[Op, ...]:
    """Draws every random choice of ``degradation_bsrgan`` for an image of ``size`` = (H, W).

    Args:
      rng: the generator all choices come from.
      size: (H, W) of the input; both must be multiples of ``sf``.
      sf: 2 or 4.
      order: a permutation of 0..6 to use instead of a random one (the op-2-before-op-3 rule
        is still applied); for tests.

    Returns:
      The ops in application order; :func:`apply_plan` runs them. The output size is
      (H/sf, W/sf) for every order.
    """
    if sf not in (2, 4):
        raise ValueError(f"BSRGAN degradation supports sf 2 and 4, got {sf}")
    h, w = size
    if h % sf or w % sf:
        raise ValueError(f"image size {size} is not a multiple of sf={sf}; mod-crop it first")
    ops: list[Op] = []
    if sf == 4 and rng.random() < PREHALVE_PROB:
        if rng.random() < 0.5:
            ops.append(Resize((h // 2, w // 2), INTERPOLATIONS[rng.integers(3)]))
        else:
            ops.append(MatlabHalve())
        h, w = h // 2, w // 2
        sf = 2
    if order is None:
        order = rng.permutation(7)
    order = constrain_order(order)
    # Only op 2 changes the size before op 3, so op 3's target is fixed here (the reference
    # records it just before op 2).
    target = (h // sf, w // sf)
    for op in order:
        if op in (0, 1):
            ops.append(sample_blur(rng, sf))
        elif op == 2:
            if rng.random() < RESIZE_DOWNSAMPLE_PROB:
                sf1 = rng.uniform(1.0, 2.0 * sf)
                new = (max(1, int(h / sf1)), max(1, int(w / sf1)))
                ops.append(Resize(new, INTERPOLATIONS[rng.integers(3)]))
            else:
                sigma = rng.uniform(0.1, 0.6 * sf)
                k = kernels.shift_kernel(kernels.gaussian_kernel(25, sigma), sf)
                col, row = kernels.shift_factors(*kernels.gaussian_factors(25, sigma), sf)
                ops.append(BlurSubsample(k / k.sum(), sf, (col / col.sum(), row / row.sum())))
        elif op == 3:
            ops.append(Resize(target, INTERPOLATIONS[rng.integers(3)]))
        elif op == 4:
            ops.append(sample_noise(rng))
        elif op == 5:
            if rng.random() < JPEG_PROB:
                ops.append(sample_jpeg(rng))
        # op 6 (camera ISP noise) needs an ISP model the reference never passes: skipped.
    ops.append(sample_jpeg(rng))
    return tuple(ops)


def plan_output_size(plan: Sequence[Op], size: Size) -> Size:
    """The (H, W) a plan produces from an input of ``size``, without running it."""
    for op in plan:
        size = op.output_size(size)
    return size


def apply_plan(image: np.ndarray, plan: Sequence[Op]) -> np.ndarray:
    """Runs a plan on a float32 RGB (H, W, 3) image in [0, 1]; returns float32 in [0, 1]."""
    x = np.ascontiguousarray(image, dtype=np.float32)
    for op in plan:
        x = op(x)
    return x


def degrade_bsrgan(image: np.ndarray, sf: int, rng: np.random.Generator) -> np.ndarray:
    """BSRGAN-degrades a float32 RGB (H, W, 3) image in [0, 1] (H, W multiples of sf).

    Returns:
      float32 (H/sf, W/sf, 3) in [0, 1]; its values are multiples of 1/255 (final JPEG).
    """
    return apply_plan(image, sample_bsrgan_plan(rng, image.shape[:2], sf))
