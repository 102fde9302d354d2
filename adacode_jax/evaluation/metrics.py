"""Full-reference image metrics for evaluation: PSNR and SSIM on the Y channel
(docs/official.md#metrics).

Pure numpy in float64. Images are ``(H, W, 3)`` RGB (or ``(H, W)`` grey), either float in
[0, 1] or uint8 (divided by 255). The official ``evaluate.py`` calls pyiqa's
``psnr``/``ssim`` with ``crop_border=4, test_y_channel=True``; pyiqa is not pinned, and its Y is
YIQ luma by default while the stage I yaml asks for YCbCr, so the luma is a parameter here
(``y_space``) and :func:`describe_protocol` states the choice next to the numbers.

Defaults follow the usual SR-benchmark definition (BasicSR ``calculate_psnr/ssim``):
* Y of BT.601 YCbCr with the 16–235 offset, in 0–255 units, not rounded;
* ``crop_border`` pixels removed from every side *before* anything else;
* PSNR: ``10·log10(255² / MSE)``, ``inf`` for identical images;
* SSIM: Gaussian window 11×11, σ = 1.5 (normalised), K1 = 0.01, K2 = 0.03, L = 255, filtering
  restricted to the valid region (no padding), SSIM map averaged over that region.

Two switches reproduce the current pyiqa SSIM exactly: ``round_y=True`` (pyiqa rounds Y to
integers before SSIM, as MATLAB does on uint8) and ``clip_cs=True`` (pyiqa clamps the
contrast-structure term at 0). Neither is applied to PSNR by pyiqa.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 255.0

# BT.601 luma in 0–255 units from RGB in [0, 1] (MATLAB rgb2ycbcr, BasicSR, skimage).
_YCBCR_Y = (65.481, 128.553, 24.966)
_YCBCR_OFFSET = 16.0
# YIQ luma (NTSC): the same weights as BT.601 without the 219/255 range compression and offset.
_YIQ_Y = (0.299, 0.587, 0.114)


def _as_float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"images must be float in [0, 1] or uint8, got {img.dtype}")
    return img.astype(np.float64)


def to_y(img: np.ndarray, space: str = "ycbcr") -> np.ndarray:
    """Luma of an RGB image, in 0–255 units (float64, not rounded).

    Args:
      img: ``(..., 3)`` RGB, float in [0, 1] or uint8.
      space: ``"ycbcr"``: ``16 + 65.481·R + 128.553·G + 24.966·B`` (range 16–235);
        ``"yiq"``: ``255·(0.299·R + 0.587·G + 0.114·B)`` (range 0–255).

    Returns:
      ``img.shape[:-1]`` array.
    """
    img = _as_float(img)
    if img.shape[-1] != 3:
        raise ValueError(f"to_y expects (..., 3) RGB, got shape {img.shape}")
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    if space == "ycbcr":
        return _YCBCR_OFFSET + _YCBCR_Y[0] * r + _YCBCR_Y[1] * g + _YCBCR_Y[2] * b
    if space == "yiq":
        return 255.0 * (_YIQ_Y[0] * r + _YIQ_Y[1] * g + _YIQ_Y[2] * b)
    raise ValueError(f"space must be 'ycbcr' or 'yiq', got {space!r}")


def _prepare(pred, gt, crop_border: int, y_space: str | None, round_y: bool) -> tuple[np.ndarray, np.ndarray]:
    """Crop, then take Y (or keep all channels), in 0–255 units: ``(H', W')`` or ``(H', W', C)``."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have one shape, got {pred.shape} and {gt.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C) images, got shape {pred.shape}")
    if crop_border:
        if 2 * crop_border >= min(pred.shape[:2]):
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {pred.shape[:2]} image")
        pred = pred[crop_border:-crop_border, crop_border:-crop_border]
        gt = gt[crop_border:-crop_border, crop_border:-crop_border]
    if y_space is not None and pred.ndim == 3 and pred.shape[-1] == 3:
        pred, gt = to_y(pred, y_space), to_y(gt, y_space)
    else:
        pred, gt = _as_float(pred) * 255.0, _as_float(gt) * 255.0
    if round_y:
        pred, gt = np.round(pred), np.round(gt)
    return pred, gt


def psnr(*, pred: np.ndarray, gt: np.ndarray, crop_border: int = 4, y_space: str | None = "ycbcr",
         round_y: bool = False) -> float:
    """Peak signal-to-noise ratio in dB on 0–255 data.

    Args:
      pred, gt: ``(H, W, 3)`` RGB or ``(H, W)`` grey, float in [0, 1] or uint8.
      crop_border: pixels removed from each side first.
      y_space: ``"ycbcr"``, ``"yiq"`` (see :func:`to_y`), or None for all channels.
      round_y: round the 0–255 values to integers first (off in BasicSR and pyiqa PSNR).

    Returns:
      ``10·log10(255² / MSE)``; ``inf`` if the (cropped) images are identical.
    """
    p, g = _prepare(pred, gt, crop_border, y_space, round_y)
    mse = float(np.mean((p - g) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(DATA_RANGE ** 2 / mse)


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with the outer product ``g gᵀ``, valid region only (no padding)."""
    k = g.shape[0]
    h, w = img.shape
    rows = sum(g[i] * img[i:h - k + 1 + i, :] for i in range(k))
    return sum(g[j] * rows[:, j:w - k + 1 + j] for j in range(k))


def _ssim_2d(x: np.ndarray, y: np.ndarray, clip_cs: bool) -> float:
    g = _gaussian_1d()
    if min(x.shape) < g.shape[0]:
        raise ValueError(f"SSIM needs at least {g.shape[0]}×{g.shape[0]} pixels after cropping, got {x.shape}")
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x ** 2
    var_y = _filter_valid(y * y, g) - mu_y ** 2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    contrast_structure = (2.0 * cov + c2) / (var_x + var_y + c2)
    if clip_cs:
        contrast_structure = np.maximum(contrast_structure, 0.0)
    return float(np.mean(luminance * contrast_structure))


def ssim(*, pred: np.ndarray, gt: np.ndarray, crop_border: int = 4, y_space: str | None = "ycbcr",
         round_y: bool = False, clip_cs: bool = False) -> float:
    """Structural similarity (Wang et al. 2004) with an 11×11 Gaussian window, σ 1.5, on 0–255.

    Args:
      pred, gt: ``(H, W, 3)`` RGB or ``(H, W)`` grey, float in [0, 1] or uint8.
      crop_border: pixels removed from each side first (before filtering).
      y_space: ``"ycbcr"``, ``"yiq"``, or None (SSIM per channel, then averaged, as BasicSR).
      round_y: round the 0–255 values to integers first (pyiqa does, BasicSR does not).
      clip_cs: clamp the contrast-structure term at 0 (pyiqa does, BasicSR does not).

    Returns:
      mean of the SSIM map over the valid region (``H' − 10`` × ``W' − 10``).
    """
    p, g = _prepare(pred, gt, crop_border, y_space, round_y)
    if p.ndim == 2:
        return _ssim_2d(p, g, clip_cs)
    return float(np.mean([_ssim_2d(p[..., c], g[..., c], clip_cs) for c in range(p.shape[-1])]))


def describe_protocol(*, crop_border: int = 4, y_space: str | None = "ycbcr", round_y: bool = False,
                      clip_cs: bool = False, lpips_net: str = "alex") -> dict[str, Any]:
    """A plain-data description of the evaluation protocol, to print and store with results."""
    luma = {
        "ycbcr": "BT.601 YCbCr Y = 16 + 65.481R + 128.553G + 24.966B (16-235)",
        "yiq": "YIQ Y = 255(0.299R + 0.587G + 0.114B) (0-255; pyiqa's default)",
        None: "all RGB channels, x255",
    }
    if y_space not in luma:
        raise ValueError(f"y_space must be 'ycbcr', 'yiq' or None, got {y_space!r}")
    return {
        "channel": luma[y_space],
        "y_space": y_space,
        "crop_border": crop_border,
        "data_range": DATA_RANGE,
        "round_y": round_y,
        "psnr": "10*log10(255^2/MSE) on the cropped channel(s), float64; inf if identical",
        "ssim": (f"Gaussian window {SSIM_WINDOW}x{SSIM_WINDOW}, sigma {SSIM_SIGMA}, K1 {SSIM_K1}, "
                 f"K2 {SSIM_K2}, valid-region filtering, map mean"
                 + (", contrast-structure clamped at 0" if clip_cs else "")
                 + ("" if y_space else ", averaged over channels")),
        "lpips": f"LPIPS v0.1, {'AlexNet' if lpips_net == 'alex' else 'VGG16'} trunk, inputs in [0, 1]",
        "reference": "official evaluate.py: pyiqa psnr/ssim(crop_border=4, test_y_channel=True), lpips (alex)",
    }
