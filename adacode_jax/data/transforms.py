"""Geometric transforms of training crops: resizes, random crops and flips
(docs/official.md#data-transforms).

Images are float32 (H, W, C) in [0, 1]. Random functions take an ``np.random.Generator``;
paired variants apply the same geometry to a GT image and its LR (``sf`` times smaller).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from adacode_jax import errors


class SmallImageError(errors.UserError, ValueError):
    """An image is smaller than the crop and the config says to reject such images."""


def resize(image: np.ndarray, size: tuple[int, int],
           interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resizes to (height, width) with cv2 (bicubic by default) and clips to [0, 1].

    The reference does not clip after its bicubic resizes; the pipeline promises [0, 1].
    """
    h, w = size
    if (h, w) == image.shape[:2]:
        return image
    out = cv2.resize(image, (w, h), interpolation=interpolation)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.clip(out, 0.0, 1.0)


def mod_crop(image: np.ndarray, sf: int) -> np.ndarray:
    """Crops the bottom/right so that H and W are multiples of sf."""
    h, w = image.shape[:2]
    return image[: h - h % sf, : w - w % sf]


def fit_min_size(size: tuple[int, int], crop: int, policy: str,
                 name: str = "image") -> tuple[int, int]:
    """The (H, W) an image of ``size`` must be resized to so that both sides reach ``crop``.

    Args:
      size: (H, W).
      crop: the crop size.
      policy: 'upscale' (scale up, keeping the aspect ratio) or 'reject'.
      name: the image's name for the error message.
    Returns:
      ``size`` itself when it is large enough, else the upscaled size.
    Raises:
      SmallImageError: the image is too small and ``policy == 'reject'``.
    """
    h, w = size
    if h >= crop and w >= crop:
        return size
    if policy == "reject":
        raise SmallImageError(
            f"{name}: {h}x{w} is smaller than the {crop}x{crop} crop; remove it, or set "
            f"config.data.small_image_policy='upscale' to upscale such images")
    if policy != "upscale":
        raise ValueError(f"small_image_policy must be 'upscale' or 'reject', got {policy!r}")
    f = crop / min(h, w)
    return (max(crop, round(h * f)), max(crop, round(w * f)))


def sample_resize_height(rng: np.random.Generator, size: tuple[int, int], crop: int) -> int:
    """The reference's random resize: a new height ~ randint(crop, H), factor = new / H.

    The factor comes from the height only, as in the reference; the lower bound is raised for
    portrait images so that the width also stays >= crop (the reference would fail there).
    """
    h, w = size
    lo = crop if w >= h else math.ceil(crop * h / w)
    return int(rng.integers(min(lo, h), h + 1))


def scaled_size(size: tuple[int, int], new_h: int, crop: int, multiple: int = 1) -> tuple[int, int]:
    """(H, W) scaled to height ``new_h``, both sides rounded down to ``multiple`` and >= crop."""
    h, w = size
    f = new_h / h
    out_h = max(crop, (new_h // multiple) * multiple)
    out_w = max(crop, (round(w * f) // multiple) * multiple)
    return out_h, out_w


def crop_at(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return image[top: top + size, left: left + size]


def sample_crop(rng: np.random.Generator, size: tuple[int, int], crop: int) -> tuple[int, int]:
    """A uniform random (top, left) for a crop x crop window inside (H, W)."""
    h, w = size
    return int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))


class Flips(NamedTuple):
    """Augmentation flags: horizontal flip, vertical flip, transpose (rot90 + flip)."""
    hflip: bool
    vflip: bool
    transpose: bool


def sample_flips(rng: np.random.Generator, use_flip: bool, use_rot: bool) -> Flips:
    """BasicSR ``augment``: hflip if use_flip, vflip and transpose if use_rot, each p = 0.5."""
    hflip = bool(rng.random() < 0.5) and use_flip
    vflip = bool(rng.random() < 0.5) and use_rot
    transpose = bool(rng.random() < 0.5) and use_rot
    return Flips(hflip, vflip, transpose)


def apply_flips(image: np.ndarray, flips: Flips) -> np.ndarray:
    """Applies hflip, vflip, transpose in that order to an (H, W, C) image."""
    if flips.hflip:
        image = image[:, ::-1]
    if flips.vflip:
        image = image[::-1, :]
    if flips.transpose:
        image = image.transpose(1, 0, 2)
    return np.ascontiguousarray(image)
