"""One training example from one record: load -> resize/crop/flip -> degrade or mask.

:class:`MakeExample` is the Grain ``RandomMap`` of the pipeline. Grain seeds its generator
from (seed, record position), so an example depends only on the seed and where it sits in
the stream, whatever the number of worker processes.

Output (numpy, float32 in [0, 1]):

- recon (stages I/II): ``{'gt': (S, S, 3)}``; no degradation is computed (the reference
  computes BSRGAN here and throws it away).
- sr: ``{'gt': (S, S, 3), 'lq': (S/sf, S/sf, 3)}``, LR from BSRGAN on the fly, or from the
  source's own LR images (paired folders, TFDS ``lq_key``).
- inpaint: ``{'gt', 'lq': masked image with white holes (S, S, 3), 'mask': (S, S, 1), 1 = hole}``.

A record that cannot be used (unreadable file, too small under the 'reject' policy, LR size
mismatch, or any other error it raises) becomes ``{'bad': message naming it}``; the pipeline
logs it, drops it and counts it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from adacode_jax import errors
from adacode_jax.data import degradations
from adacode_jax import images as io
from adacode_jax.data import masks
from adacode_jax.data import sources as sources_lib
from adacode_jax.data import transforms

TASKS = ("recon", "sr", "inpaint")


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    """What :func:`make_example` does; built from ``config.data`` by the pipeline."""
    task: str = "recon"
    scale: int = 1
    crop_size: int = 256
    use_resize_crop: bool = True
    use_flip: bool = True
    use_rot: bool = True
    small_image_policy: str = "upscale"

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "sr" and self.scale not in (2, 4):
            raise ValueError(f"task 'sr' needs scale 2 or 4, got {self.scale}")
        if self.crop_size % max(self.scale, 1):
            raise ValueError(f"crop_size {self.crop_size} must be a multiple of scale {self.scale}")
        if self.small_image_policy not in ("upscale", "reject"):
            raise ValueError(f"small_image_policy must be 'upscale' or 'reject', got "
                             f"{self.small_image_policy!r}")


class BadRecordError(errors.UserError, ValueError):
    """A record that cannot become an example (the message names it)."""


def _resize_pair(gt: np.ndarray, lq: np.ndarray | None, size: tuple[int, int],
                 sf: int) -> tuple[np.ndarray, np.ndarray | None]:
    gt = transforms.resize(gt, size)
    if lq is not None:
        lq = transforms.resize(lq, (size[0] // sf, size[1] // sf))
    return gt, lq


def prepare_pair(gt: np.ndarray, lq: np.ndarray | None, cfg: ExampleConfig,
                 name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Keeps a source's LR image only for SR, mod-crops the GT to it and checks the sizes."""
    if lq is None or cfg.task != "sr":
        return gt, None
    gt = transforms.mod_crop(gt, cfg.scale)
    if lq.shape[:2] != (gt.shape[0] // cfg.scale, gt.shape[1] // cfg.scale):
        raise BadRecordError(f"{name}: LR size {lq.shape[:2]} is not GT size {gt.shape[:2]} "
                             f"/ {cfg.scale}")
    return gt, lq


def make_example(gt: np.ndarray, lq: np.ndarray | None, rng: np.random.Generator,
                 cfg: ExampleConfig, name: str = "image") -> dict[str, np.ndarray]:
    """Builds one training example from a full image (and optionally its LR counterpart).

    Args:
      gt: (H, W, 3) float32 in [0, 1].
      lq: None, or for paired SR the (H/sf, W/sf, 3) LR image.
      rng: the record's generator.
      cfg: task, crop and augmentation settings.
      name: the record's name for error messages.
    Returns:
      The example dict described in the module docstring.
    Raises:
      transforms.SmallImageError: too small and the policy is 'reject'.
      BadRecordError: a paired LR image is not the GT size / scale.
    """
    crop = cfg.crop_size
    gt, lq = prepare_pair(gt, lq, cfg, name)
    sf = cfg.scale if lq is not None else 1
    # 1. Small images: upscale (GT and LR alike) or reject.
    size = transforms.fit_min_size(gt.shape[:2], crop, cfg.small_image_policy, name)
    if size != gt.shape[:2]:
        size = transforms.scaled_size(gt.shape[:2], size[0], crop, sf)
        gt, lq = _resize_pair(gt, lq, size, sf)
    # 2. The reference's random resize (factor from the height) and random crop.
    if cfg.use_resize_crop:
        new_h = transforms.sample_resize_height(rng, gt.shape[:2], crop)
        size = transforms.scaled_size(gt.shape[:2], new_h, crop, sf)
        gt, lq = _resize_pair(gt, lq, size, sf)
    top, left = transforms.sample_crop(rng, (gt.shape[0] // sf, gt.shape[1] // sf), crop // sf)
    if lq is not None:
        lq = transforms.crop_at(lq, top, left, crop // sf)
    gt = transforms.crop_at(gt, top * sf, left * sf, crop)
    # 3. Flips and transpose, the same for GT and LR.
    flips = transforms.sample_flips(rng, cfg.use_flip, cfg.use_rot)
    out = {"gt": transforms.apply_flips(gt, flips)}
    if lq is not None:
        out["lq"] = transforms.apply_flips(lq, flips)
    # 4. Task-specific input.
    if cfg.task == "sr" and lq is None:
        out["lq"] = degradations.degrade_bsrgan(out["gt"], cfg.scale, rng)
    elif cfg.task == "inpaint":
        mask = masks.brush_stroke_mask(rng, crop, crop)
        out["lq"] = masks.apply_mask(out["gt"], mask)
        out["mask"] = mask
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def random_rescale(gt: np.ndarray, lq: np.ndarray | None, rng: np.random.Generator,
                   resize_range: tuple[float, float],
                   sf: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Rescales a whole image (and its LR) by U(lo, hi), bicubic (the paper's FFHQ recipe)."""
    f = rng.uniform(*resize_range)
    h, w = gt.shape[:2]
    size = (max(sf, round(h * f) // sf * sf), max(sf, round(w * f) // sf * sf))
    return _resize_pair(gt, lq, size, sf)


class MakeExample(grain.transforms.RandomMap):
    """Grain RandomMap: record ``(source_index, key)`` -> example dict, or ``{'bad': message}``."""

    def __init__(self, sources: Sequence[sources_lib.Source], cfg: ExampleConfig):
        self.sources = tuple(sources)
        self.cfg = cfg

    def random_map(self, record: tuple[int, Any], rng: np.random.Generator) -> dict[str, Any]:
        source_index, key = record
        source = self.sources[source_index]
        name = source.describe(key)
        try:
            gt, lq = prepare_pair(*source.load(key), self.cfg, name)
            if source.resize_range is not None:
                sf = self.cfg.scale if lq is not None else 1
                gt, lq = random_rescale(gt, lq, rng, source.resize_range, sf)
            return make_example(gt, lq, rng, self.cfg, name)
        except (io.ImageReadError, transforms.SmallImageError, BadRecordError) as e:
            return {"bad": str(e)}
        except Exception as e:  # pylint: disable=broad-except
            # Anything else a single odd file can trigger (e.g. an OpenCV error on a degenerate
            # image) must not stop a long run either; it is logged and counted the same way, and
            # the pipeline stops if such failures come in long runs (a bug, not a bad file).
            return {"bad": f"{name}: {type(e).__name__}: {e}"}
