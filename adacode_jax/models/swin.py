"""Swin layers of AdaCode: SwinIR's RSTB stacked four times (``SwinLayers``,
docs/official.md#swin-layers).

Tokens are kept as NHWC maps; windows are taken in PyTorch's order (row-major over windows,
row-major inside a window), so the attention, the relative-position bias and the shifted-window
mask are the official ones. The region mask is built for the runtime grid, which must have H
and W divisible by the window size.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from adacode_jax.ops.dense import dot_general
from adacode_jax.models.layers import torch_conv

Dtype = Any
# nn.Dense with the kernel gradient XLA:CPU computes well (see adacode_jax.ops.dense).
Dense = functools.partial(nn.Dense, dot_general=dot_general)


def gelu(x: jnp.ndarray) -> jnp.ndarray:
    """Exact GELU as torch computes it on CPU, ``x/2 · (1 + erf(x/√2))``. ``nn.gelu``'s exact
    form goes through ``erfc``, which XLA:CPU evaluates 6× slower than ``erf`` (7.5 against
    1.2 ms on a (2, 32, 32, 1024) map, AVX2); the values differ by float32 rounding (max abs
    1.1e-6 against float64 on |x| ≤ 12, where torch's own float32 GELU is off by 3.8e-7)."""
    return 0.5 * x * (1.0 + lax.erf(x * float(np.sqrt(0.5))))   # Python floats: x's dtype


def relative_position_index(window: int) -> np.ndarray:
    """The standard Swin (window², window²) index into the ((2w−1)², heads) bias table."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    flat = coords.reshape(2, -1)
    rel = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def window_partition(x: jnp.ndarray, window: int) -> jnp.ndarray:
    """(B, H, W, C) -> (B, nW, window², C), windows row-major as in torch.

    The batch axis stays separate and each reshape splits or merges one axis at a time, so a
    batch-sharded array needs no resharding under explicit mesh axes.
    """
    b, h, w, c = x.shape
    nh, nw = h // window, w // window
    x = x.reshape(b, nh, window, w, c).reshape(b, nh, window, nw, window, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, nh * nw, window, window, c).reshape(b, nh * nw, window * window, c)


def window_reverse(windows: jnp.ndarray, window: int, h: int, w: int) -> jnp.ndarray:
    """Inverse of :func:`window_partition`: (B, nW, window², C) -> (B, H, W, C)."""
    b, _, _, c = windows.shape
    nh, nw = h // window, w // window
    x = windows.reshape(b, nh * nw, window, window, c).reshape(b, nh, nw, window, window, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, nw, window, c).reshape(b, h, w, c)


def shifted_window_mask(h, w, window: int, shift: int) -> jnp.ndarray:
    """(nW, window², window²) additive mask: 0 inside a region, −100 across regions.

    The regions are the official slices (0, −window), (−window, −shift), (−shift, end) along
    each axis. Built with jnp from iotas, so it also works for symbolic H, W (jax.export).
    """
    def region(n):
        i = jnp.arange(n)
        return (i >= n - window).astype(jnp.int32) + (i >= n - shift).astype(jnp.int32)

    ids = region(h)[:, None] * 3 + region(w)[None, :]
    mw = window_partition(ids[None, :, :, None], window)[0, ..., 0]     # (nW, N)
    return jnp.where(mw[:, None, :] != mw[:, :, None], -100.0, 0.0).astype(jnp.float32)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias."""

    dim: int
    heads: int
    window: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None):
        """x: (B, nW, N, C) windows; mask: (nW, N, N) additive, or None."""
        b, nw, n, c = x.shape
        hd = c // self.heads
        table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                           ((2 * self.window - 1) ** 2, self.heads), self.param_dtype)
        qkv = Dense(3 * c, dtype=self.dtype, param_dtype=self.param_dtype, name="qkv")(x)
        # channel layout of qkv is (3, heads, head_dim), as torch's reshape(B_, N, 3, nH, hd)
        qkv = qkv.reshape(b, nw, n, 3, c).reshape(b, nw, n, 3, self.heads, hd)
        q, k, v = qkv[:, :, :, 0] * (hd ** -0.5), qkv[:, :, :, 1], qkv[:, :, :, 2]
        attn = jnp.einsum("bwnhd,bwmhd->bwhnm", q, k)
        bias = table[relative_position_index(self.window).reshape(-1)]
        attn = attn + bias.reshape(n, n, self.heads).transpose(2, 0, 1).astype(attn.dtype)
        if mask is not None:
            attn = attn + mask[:, None].astype(attn.dtype)
        attn = nn.softmax(attn.astype(jnp.float32), axis=-1).astype(self.dtype)
        out = jnp.einsum("bwhnm,bwmhd->bwnhd", attn, v).reshape(b, nw, n, c)
        return Dense(c, dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(out)


class SwinBlock(nn.Module):
    """``x + WMSA(LN(x))`` then ``x + MLP(LN(x))``, with a cyclic shift on odd blocks."""

    dim: int
    heads: int
    window: int
    shift: int
    mlp_ratio: float = 4.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        if h % self.window or w % self.window:
            raise ValueError(f"Swin token grid {h}x{w} is not a multiple of the window "
                             f"{self.window}; pad the input (see restore_padded)")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ln = dict(epsilon=1e-5, use_fast_variance=False, **kw)
        y = nn.LayerNorm(**ln, name="norm1")(x)
        mask = None
        if self.shift:
            y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
            mask = shifted_window_mask(h, w, self.window, self.shift)
        y = WindowAttention(self.dim, self.heads, self.window, **kw, name="attn")(
            window_partition(y, self.window), mask)
        y = window_reverse(y, self.window, h, w)
        if self.shift:
            y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
        x = x + y
        y = nn.LayerNorm(**ln, name="norm2")(x)
        y = Dense(int(c * self.mlp_ratio), **kw, name="mlp.fc1")(y)
        y = Dense(c, **kw, name="mlp.fc2")(gelu(y))
        return x + y


class RSTB(nn.Module):
    """Residual Swin transformer block: ``x + Conv3x3(depth × SwinBlock(x))``."""

    dim: int
    depth: int
    heads: int
    window: int
    mlp_ratio: float = 4.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = nn.remat(SwinBlock) if self.remat else SwinBlock
        y = x
        for i in range(self.depth):
            shift = 0 if i % 2 == 0 else self.window // 2
            y = block(self.dim, self.heads, self.window, shift, self.mlp_ratio, **kw,
                      name=f"residual_group.blocks.{i}")(y)
        return x + torch_conv(self.dim, 3, **kw, name="conv")(y)


class SwinLayers(nn.Module):
    """AdaCode's ``SwinLayers``: ``num_rstb`` RSTBs in sequence (4 × 6 blocks officially)."""

    dim: int = 256
    num_rstb: int = 4
    depth: int = 6
    heads: int = 8
    window: int = 8
    mlp_ratio: float = 4.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for j in range(self.num_rstb):
            x = RSTB(self.dim, self.depth, self.heads, self.window, self.mlp_ratio, self.remat,
                     dtype=self.dtype, param_dtype=self.param_dtype, name=f"swin_blks.{j}")(x)
            # Tap for parity checks (see adacode.taps); free unless "intermediates" is mutable.
            self.sow("intermediates", f"swin_blks.{j}:out", x)
        return x
