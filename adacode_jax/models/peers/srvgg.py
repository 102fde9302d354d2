"""Real-ESRGAN's SRVGGNetCompact (realesr-animevideov3): a small pretrained peer, not AdaCode.

Layout of the released ncnn graph ``REALESRGAN_ANIMAVIDEOV3_UP4X.param``: a 3×3 conv 3→64 and
``num_conv`` (16) more 3×3 convs 64→64, each followed by a per-channel PReLU; a last 3×3 conv
to ``3·upscale²`` channels; pixel shuffle (depth-to-space, PyTorch channel order); plus the
nearest-neighbour ×``upscale`` input (the network predicts a residual).

NHWC float in [0, 1]. Module names are BasicSR's ``body.{i}`` indices (convs at even, PReLUs at
odd positions), so ``".".join(path)`` is the PyTorch key.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adacode_jax.models.layers import upsample_nearest

Dtype = Any


class PReLU(nn.Module):
    """PReLU with one slope per channel (``torch.nn.PReLU(num_parameters=C)``), init 0.25."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        slope = self.param("weight", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
        return jnp.where(x >= 0, x, x * slope.astype(self.dtype))


def pixel_shuffle(x: jnp.ndarray, factor: int) -> jnp.ndarray:
    """``torch.nn.PixelShuffle`` for NHWC: channel ``c·r² + i·r + j`` goes to pixel (i, j)."""
    b, h, w, c = x.shape
    oc = c // (factor * factor)
    x = x.reshape(b, h, w, oc, factor, factor)
    return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * factor, w * factor, oc)


class SRVGGNetCompact(nn.Module):
    """``(B, H, W, 3)`` in [0, 1] → ``(B, s·H, s·W, 3)``; defaults are realesr-animevideov3 ×4."""

    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_conv: int = 16
    upscale: int = 4
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        x = x.astype(self.dtype)
        h = x
        for i in range(self.num_conv + 1):
            h = nn.Conv(self.num_feat, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                        precision=self.precision, name=f"body.{2 * i}")(h)
            h = PReLU(self.dtype, name=f"body.{2 * i + 1}")(h)
        h = nn.Conv(self.num_out_ch * self.upscale ** 2, (3, 3), padding=((1, 1), (1, 1)),
                    dtype=self.dtype, precision=self.precision,
                    name=f"body.{2 * self.num_conv + 2}")(h)
        out = pixel_shuffle(h, self.upscale) + upsample_nearest(x, self.upscale)
        return out.astype(jnp.float32)
