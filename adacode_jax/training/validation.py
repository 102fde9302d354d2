"""Validation during training: the frozen validation pairs of ``eval.path``
(:func:`validation_set`) and their mean PSNR / SSIM / LPIPS-alex under the current generator
(:func:`validate`)."""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from adacode_jax import images as data_io
from adacode_jax.data import sources
from adacode_jax.evaluation import metrics as metrics_lib
from adacode_jax.models import perceptual
from adacode_jax.tools import make_testset


def validation_set(config) -> list[dict]:
    """Frozen validation pairs: centre crops of ``eval.path`` images, degraded with fixed seeds
    (the test-set tool's generator), so every evaluation sees the same inputs."""
    files = sources.list_images(config.eval.path)[: int(config.eval.num_images)]
    if not files:
        raise ValueError(f"eval.path {config.eval.path!r} has no images")
    s = int(config.data.crop_size)
    task = {"sr": f"sr_x{config.data.scale}", "inpaint": "inpaint"}.get(config.data.task)
    pairs = []
    for f in files:
        gt = _centre_crop(data_io.read_image(f), s)
        rel = os.path.relpath(f, config.eval.path)
        if task is None:
            pairs.append({"name": rel, "gt": gt, "lq": gt})
        else:
            p = make_testset.make_pair(gt, task, make_testset.image_rng(config.eval.seed, rel))
            pairs.append({"name": rel, "gt": p["gt"], "lq": p["lq"]})
    return pairs


def _centre_crop(img: np.ndarray, s: int) -> np.ndarray:
    """The centre ``s x s`` of ``img`` (HWC), after a bicubic upscale if a side is shorter."""
    h, w = img.shape[:2]
    if min(h, w) < s:
        scale = s / min(h, w)
        import cv2
        img = cv2.resize(img, (max(s, round(w * scale)), max(s, round(h * scale))),
                         interpolation=cv2.INTER_CUBIC).clip(0, 1)
        h, w = img.shape[:2]
    return img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def validate(apply_fn, g_params, pairs, lpips_alex, config) -> dict:
    """Mean PSNR / SSIM (Y, border crop) and LPIPS-alex over the validation pairs."""
    scores = {"psnr": [], "ssim": [], "lpips_alex": []}
    for p in pairs:
        out = np.asarray(apply_fn(g_params, p["lq"][None]))[0].clip(0, 1)
        kw = dict(crop_border=int(config.eval.crop_border), y_space=config.eval.y_space)
        scores["psnr"].append(metrics_lib.psnr(pred=out, gt=p["gt"], **kw))
        scores["ssim"].append(metrics_lib.ssim(pred=out, gt=p["gt"], **kw))
        module, variables = lpips_alex
        scores["lpips_alex"].append(float(perceptual.lpips_distance(
            module, variables, jnp.asarray(out[None]), jnp.asarray(p["gt"][None]))[0]))
    return {f"val/{k}": float(np.mean(v)) for k, v in scores.items()}
